package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/edgedhq/edged/bench"
	"github.com/edgedhq/edged/bench/benchtest"
	"github.com/edgedhq/edged/internal/testenv"
)

// children lists the processes whose parent is this test process.
func children(t *testing.T) map[int]string {
	t.Helper()
	out := map[int]string{}
	me := strconv.Itoa(os.Getpid())
	ents, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, e := range ents {
		b, err := os.ReadFile(e)
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == me {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(e)))
			out[pid] = string(b[:i+1])
		}
	}
	return out
}

// Test15kConnections holds 15,000 connections through the command line
// (two or more worker processes, eight source addresses) to mosquitto and to
// edged, checks every one connected and carried a message, that bytes per
// connection were reported, and that no worker process is left behind.
func Test15kConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("15,000 connections: skipped with -short")
	}
	for _, tc := range []struct {
		name    string
		profile string
		start   func(t *testing.T) (string, int)
	}{
		{"mosquitto", "generic", func(t *testing.T) (string, int) { return benchtest.StartMosquitto(t) }},
		{"edged", "inbox", func(t *testing.T) (string, int) {
			a, p, _ := benchtest.StartEdged(t)
			return a, p
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, pid := tc.start(t)
			before := children(t)
			dir := t.TempDir()
			var out, errb bytes.Buffer
			rc := run([]string{"connect", "--target", addr, "--server-pid", strconv.Itoa(pid), "--profile", tc.profile,
				"--conns", "15000", "--ramp", "6000", "--hold", "1s", "--src", "127.0.0.2-127.0.0.9",
				"--json", "--quiet", "--out", dir}, &out, &errb)
			if rc != exitOK {
				t.Fatalf("exit %d: %s", rc, errb.String())
			}
			var res bench.Result
			if err := json.Unmarshal(out.Bytes(), &res); err != nil {
				t.Fatalf("decode JSON report: %v\n%s", err, out.String())
			}
			if res.Connected != 15000 || res.PeakConns != 15000 {
				t.Errorf("connected %d, peak %d, want 15000 (errors %v)", res.Connected, res.PeakConns, res.Errors)
			}
			if res.Workers < 2 {
				t.Errorf("%d workers: 15000 sockets must be sharded (max 12000 per process)", res.Workers)
			}
			if res.Touched != 15000 {
				t.Errorf("touched %d, want every connection to carry a message", res.Touched)
			}
			if res.Server == nil || res.Server.BytesPerConn <= 0 || res.Server.RSSAfter <= res.Server.RSSBefore {
				t.Errorf("no bytes per connection reported: %+v", res.Server)
			} else {
				t.Logf("%s: %.0f bytes/connection, connect p50 %dus p99 %dus",
					tc.name, res.Server.BytesPerConn, res.Connect.P50, res.Connect.P99)
			}
			for _, f := range []string{"report.json", "report.txt", "connections.svg", "connect.svg", "connects.svg", "server.svg", "server-cpu.svg"} {
				if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
					t.Errorf("report file: %v", err)
				}
			}
			for p, name := range children(t) {
				if _, ok := before[p]; !ok {
					t.Errorf("process %d %s left behind", p, name)
				}
			}
		})
	}
}

// TestTLSWorkloads runs connect and QoS 1 pairs over TLS against edged's
// TLS listener: every connection handshakes, carries its messages, and
// nothing is lost.
func TestTLSWorkloads(t *testing.T) {
	files := testenv.MakeTLSFiles(t)
	addr, pid, _ := benchtest.StartEdgedTLS(t, files)
	relayWorkloads(t, addr, pid, []string{"--tls", "--cafile", files.CA}, [][]string{
		{"connect", "--conns", "300", "--hold", "500ms"},
		{"pairs", "--pairs", "20", "--qos", "1", "--duration", "1s"},
		{"churn", "--conns", "50", "--hold", "200ms", "--duration", "2s", "--tls-resume"},
	})
}

// TestWSWorkloads: the same over edged's ws:// and wss:// listeners.
func TestWSWorkloads(t *testing.T) {
	cases := [][]string{
		{"connect", "--conns", "300", "--hold", "500ms"},
		{"pairs", "--pairs", "20", "--qos", "1", "--duration", "1s"},
	}
	t.Run("ws", func(t *testing.T) {
		addr, pid, _ := benchtest.StartEdgedWith(t, "ws://")
		relayWorkloads(t, addr, pid, []string{"--ws", "/mqtt"}, cases)
	})
	t.Run("wss", func(t *testing.T) {
		files := testenv.MakeTLSFiles(t)
		addr, pid, _ := benchtest.StartEdgedWith(t, "wss://", "--tls-cert", files.ECDSACert, "--tls-key", files.ECDSAKey)
		relayWorkloads(t, addr, pid, []string{"--ws", "/mqtt", "--tls", "--cafile", files.CA}, cases)
	})
}

// relayWorkloads runs each workload of cases (its name, then its flags)
// with the transport flags extra against addr.
func relayWorkloads(t *testing.T, addr string, pid int, extra []string, cases [][]string) {
	for _, args := range cases {
		t.Run(args[0], func(t *testing.T) {
			var out, errb bytes.Buffer
			args := append(append(args, extra...), "--target", addr, "--server-pid", strconv.Itoa(pid), "--json", "--quiet")
			if rc := run(args, &out, &errb); rc != exitOK {
				t.Fatalf("exit %d: %s", rc, errb.String())
			}
			var res bench.Result
			if err := json.Unmarshal(out.Bytes(), &res); err != nil {
				t.Fatalf("decode JSON report: %v\n%s", err, out.String())
			}
			if len(res.Errors) > 0 || res.Connected == 0 || res.Lost > 0 {
				t.Fatalf("connected %d, lost %d, errors %v", res.Connected, res.Lost, res.Errors)
			}
			if args[0] == "pairs" && res.Received == 0 {
				t.Fatalf("no message delivered: %+v", res)
			}
		})
	}
}
