package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgedhq/edged/edge"
	"github.com/edgedhq/edged/internal/testenv"
)

// startRun runs edged in-process with args and returns the server, its log
// and a stop function that checks the exit code.
func startRun(t *testing.T, args ...string) (*edge.Server, *syncBuffer, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	ready := make(chan *edge.Server, 1)
	errb := &syncBuffer{}
	args = append([]string{"--data-dir", t.TempDir()}, args...) // not the package directory's edged-data
	go func() { done <- run(ctx, args, &bytes.Buffer{}, errb, func(s *edge.Server) { ready <- s }) }()
	select {
	case s := <-ready:
		return s, errb, func() {
			cancel()
			if code := <-done; code != 0 {
				t.Errorf("exit %d after shutdown: %s", code, errb.String())
			}
		}
	case code := <-done:
		cancel()
		t.Fatalf("exited %d: %s", code, errb.String())
	}
	return nil, nil, nil
}

func httpDo(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestOpsWiring checks what edged mounts on its admin address and that the
// server's knobs turn the live server.
func TestOpsWiring(t *testing.T) {
	s, _, stop := startRun(t, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--steering", "off")
	defer stop()
	base := "http://" + s.AdminAddr().String()
	for _, path := range []string{"/metrics", "/stats", "/server/stats", "/knobs", "/debug/pprof/", "/groups", "/healthz"} {
		if code, body := httpDo(t, "GET", base+path, ""); code != 200 {
			t.Errorf("GET %s: %d %s", path, code, body)
		}
	}
	_, st := httpDo(t, "GET", base+"/stats", "")
	var snap map[string]json.RawMessage
	if err := json.Unmarshal([]byte(st), &snap); err != nil || snap["server"] == nil {
		t.Fatalf("/stats is not the reporter's snapshot with the server's counters: %v %.200s", err, st)
	}
	for knob, val := range map[string]string{"inflight": "8", "queue_cap": "65536", "accept_pause": "true"} {
		if code, body := httpDo(t, "PUT", base+"/knobs/"+knob, val); code != 200 {
			t.Fatalf("PUT /knobs/%s: %d %s", knob, code, body)
		}
	}
	if s.Inflight() != 8 || s.MaxQueued() != 65536 || !s.AcceptsPaused() {
		t.Fatalf("knobs did not reach the server: inflight %d, queue cap %d, paused %v",
			s.Inflight(), s.MaxQueued(), s.AcceptsPaused())
	}
	if code, _ := httpDo(t, "PUT", base+"/knobs/inflight", "0"); code != 400 {
		t.Fatalf("out-of-range inflight accepted: %d", code)
	}
}

// TestAdminTokenWiring runs edged with --admin-token-file on every
// interface: the reporter's routes (metrics, knobs, pprof) sit behind the
// token like the server's own.
func TestAdminTokenWiring(t *testing.T) {
	const token = "s3cret-admin-token-0123"
	file := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, log, stop := startRun(t, "--listen", "127.0.0.1:0", "--admin", "0.0.0.0:0", "--admin-token-file", file, "--steering", "off")
	defer stop()
	if !strings.Contains(log.String(), "bearer token travels in clear text") {
		t.Errorf("no warning about the clear-text token off loopback:\n%s", log.String())
	}
	_, port, _ := net.SplitHostPort(s.AdminAddr().String())
	base := "http://127.0.0.1:" + port
	do := func(method, path, body, tok string) int {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, path := range []string{"/metrics", "/stats", "/server/stats", "/knobs", "/debug/pprof/", "/debug/pprof/heap", "/groups"} {
		if code := do("GET", path, "", ""); code != 401 {
			t.Errorf("GET %s without the token: %d, want 401", path, code)
		}
		if code := do("GET", path, "", token); code != 200 {
			t.Errorf("GET %s with the token: %d, want 200", path, code)
		}
	}
	if code := do("GET", "/healthz", "", ""); code != 200 {
		t.Errorf("GET /healthz without the token: %d, want 200", code)
	}
	if code := do("PUT", "/knobs/inflight", "9", "wrong-token-0123456789"); code != 401 || s.Inflight() == 9 {
		t.Fatalf("PUT /knobs/inflight with a wrong token: %d, inflight %d", code, s.Inflight())
	}
	if code := do("PUT", "/knobs/inflight", "9", token); code != 200 || s.Inflight() != 9 {
		t.Fatalf("PUT /knobs/inflight with the token: %d, inflight %d", code, s.Inflight())
	}
}

// TestSteeringAttached runs edged with the eBPF least-loaded policy, as root,
// and checks that connections spread by it over the loops.
func TestSteeringAttached(t *testing.T) {
	testenv.RequirePriv(t, "attaching an SK_REUSEPORT program")
	s, log, stop := startRun(t, "--listen", "127.0.0.1:0", "--admin", "off", "--loops", "2", "--steering", "least", "--steer-pin", "off")
	defer stop()
	if !strings.Contains(log.String(), "mode=bpf") {
		t.Fatalf("steering not attached in BPF mode:\n%s", log.String())
	}
	accepted := func() (per []int64, sum int64) {
		for _, ls := range s.LoopStats() {
			per = append(per, ls.Accepts)
			sum += ls.Accepts
		}
		return per, sum
	}
	// One connection at a time, each accepted (and so counted in the live
	// map the program reads) before the next SYN: least-loaded steering
	// then has exactly one right answer per connection. Dialled back to
	// back, a SYN can reach the program before the previous connection's
	// accept updated the map, and the split drifts by chance.
	var per []int64
	for i := 0; i < 40; i++ {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for k := 0; ; k++ {
			var sum int64
			if per, sum = accepted(); sum == int64(i+1) {
				break
			}
			if k == 500 {
				t.Fatalf("connection %d not accepted: accepts per loop %v", i+1, per)
			}
			testSleep()
		}
	}
	if per[0] != 20 || per[1] != 20 {
		t.Fatalf("least-loaded steering put %v connections on the two loops, want 20 and 20", per)
	}
	if code := run(context.Background(), []string{"--steering", "most"}, io.Discard, io.Discard, nil); code != exitUsage {
		t.Fatalf("unknown steering policy: exit %d, want 2", code)
	}
}
