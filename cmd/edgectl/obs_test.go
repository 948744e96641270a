package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge"
	"github.com/edgedhq/edged/internal/echo"
	"github.com/edgedhq/edged/internal/obs"
	"github.com/edgedhq/edged/netpoll"
)

// liveAdmin runs a real netpoll echo engine with some traffic behind a
// reporter and serves the admin routes on 127.0.0.1; it returns the URL.
func liveAdmin(t *testing.T) string {
	t.Helper()
	return liveAdminWith(t, obs.Options{})
}

// liveAdminWith is liveAdmin with more sources in the reporter's options.
func liveAdminWith(t *testing.T, opt obs.Options) string {
	t.Helper()
	e, err := netpoll.New(netpoll.Config{Addr: "127.0.0.1:0", Loops: 2, Handler: echo.Handler{}, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		e.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	opt.LoopStats, opt.Interval = e.Stats, 50*time.Millisecond
	opt.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	r, err := obs.New(opt)
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	t.Cleanup(func() { r.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: r.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c, err := net.DialTimeout("tcp", e.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1000)
	for range 10 {
		c.Write(buf)
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
	}
	// The loop subtracts written bytes just after write(2) returns, so the
	// client can see its echo a moment before the counter drops.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var q int64
		for _, l := range e.Stats() {
			q += l.QueuedBytes
		}
		if q == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes still queued 10 s after the echo came back", q)
		}
	}
	r.Sample()
	return "http://" + ln.Addr().String()
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

func TestObsHelpGolden(t *testing.T) {
	helpGolden(t, []helpCase{
		{"top-help.golden", []string{"top", "--help"}},
		{"stats-help.golden", []string{"stats", "--help"}},
		{"knob-help.golden", []string{"knob", "--help"}},
		{"knob-get-help.golden", []string{"knob", "get", "--help"}},
		{"knob-set-help.golden", []string{"knob", "set", "-h"}},
		{"profile-help.golden", []string{"profile", "--help"}},
		{"profile-cpu-help.golden", []string{"profile", "cpu", "--help"}},
		{"profile-goroutine-help.golden", []string{"profile", "goroutine", "--help"}},
	})
}

func TestObsUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string // in stderr
	}{
		{[]string{"top", "--bogus"}, "flag provided but not defined"},
		{[]string{"top", "--interval", "0s"}, "--interval"},
		{[]string{"top", "--count", "-1"}, "--count"},
		{[]string{"top", "extra"}, "unexpected argument"},
		{[]string{"stats", "--admin", "ftp://x"}, "--admin"},
		{[]string{"stats", "--timeout", "0s"}, "--timeout"},
		{[]string{"stats", "--history", "-2"}, "--history"},
		{[]string{"knob"}, "missing verb"},
		{[]string{"knob", "twiddle"}, "unknown verb"},
		{[]string{"knob", "set", "gc_percent"}, "NAME VALUE"},
		{[]string{"knob", "set", "a", "b", "c"}, "unexpected argument"},
		{[]string{"knob", "get", "a", "b"}, "unexpected argument"},
		{[]string{"knob", "get", "--nope"}, "flag provided but not defined"},
		{[]string{"profile"}, "missing kind"},
		{[]string{"profile", "wallclock"}, "unknown kind"},
		{[]string{"profile", "cpu", "--seconds", "0"}, "needs --seconds"},
		{[]string{"profile", "goroutine", "--seconds", "3"}, "takes no --seconds"},
		{[]string{"profile", "heap", "--seconds", "-3"}, ">= 0"},
		{[]string{"profile", "heap", "-o", ""}, "-o"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, "_"), func(t *testing.T) {
			_, errOut, code := edgectl(tt.args...)
			if code != exitUsage || !strings.Contains(errOut, tt.want) {
				t.Fatalf("edgectl %v: exit %d, stderr %q; want exit 2 mentioning %q", tt.args, code, errOut, tt.want)
			}
		})
	}
}

// TestObsUnreachable: every command fails with exit 1 naming the address.
func TestObsUnreachable(t *testing.T) {
	addr := closedAddr(t)
	for _, args := range [][]string{
		{"top", "--once"}, {"stats"}, {"knob", "get"}, {"knob", "set", "gc_percent", "100"}, {"profile", "heap"},
	} {
		t.Run(args[0], func(t *testing.T) {
			args := append(args, "--admin", addr, "-o", filepath.Join(t.TempDir(), "p"))
			if args[0] != "profile" {
				args = args[:len(args)-2]
			}
			_, errOut, code := edgectl(args...)
			if code != exitFailed || !strings.Contains(errOut, "http://"+addr) || !strings.Contains(errOut, "refused") {
				t.Fatalf("edgectl %v: exit %d, stderr %q; want exit 1 naming %s", args, code, errOut, addr)
			}
		})
	}
}

func TestObsLive(t *testing.T) {
	gc := debug.SetGCPercent(100)
	debug.SetGCPercent(gc)
	mf := runtime.SetMutexProfileFraction(-1)
	t.Cleanup(func() { debug.SetGCPercent(gc); runtime.SetMutexProfileFraction(mf) })
	admin := liveAdmin(t)
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		code int
		out  []string // substrings of stdout
		err  string   // substring of stderr
		file string   // a file the command must write, non-empty
	}{
		{"stats", []string{"stats"}, 0, []string{"FIGURE", "bytes_in", "LOOP", "CONNS"}, "", ""},
		{"stats-json", []string{"stats", "--json", "--history", "3"}, 0, []string{`"figures"`, `"history"`}, "", ""},
		{"top-once", []string{"top", "--once"}, 0, []string{"bytes_out", "LOOP", "QUEUE"}, "", ""},
		{"top-frames", []string{"top", "--count", "2", "--interval", "10ms"}, 0, []string{"sample"}, "", ""},
		{"knob-get-all", []string{"knob", "get"}, 0, []string{"KNOB", "gc_percent", "alarm_inbox"}, "", ""},
		{"knob-set", []string{"knob", "set", "gc_percent", "150"}, 0, []string{"gc_percent: "}, "", ""},
		{"knob-get-one", []string{"knob", "get", "gc_percent"}, 0, []string{"150\n"}, "", ""},
		{"knob-set-negative", []string{"knob", "set", "gc_percent", "-1"}, 0, []string{"-> off"}, "", ""},
		{"knob-set-bad", []string{"knob", "set", "gc_percent", "many"}, 1, nil, "400 Bad Request", ""},
		{"knob-unknown", []string{"knob", "get", "warp"}, 1, nil, "unknown knob", ""},
		{"knob-set-mutex", []string{"knob", "set", "mutex_profile_fraction", "0"}, 0, []string{"-> 0"}, "", ""},
		{"profile-mutex-hint", []string{"profile", "mutex", "-o", filepath.Join(dir, "m.pprof")}, 0, nil, "is 0 on the server", filepath.Join(dir, "m.pprof")},
		{"profile-goroutine", []string{"profile", "goroutine", "-o", filepath.Join(dir, "g.pprof")}, 0, nil, "wrote", filepath.Join(dir, "g.pprof")},
		{"profile-heap", []string{"profile", "heap", "-o", filepath.Join(dir, "h.pprof")}, 0, nil, "", filepath.Join(dir, "h.pprof")},
		{"profile-cpu", []string{"profile", "cpu", "--seconds", "1", "-o", filepath.Join(dir, "c.pprof")}, 0, nil, "", filepath.Join(dir, "c.pprof")},
		{"profile-stdout", []string{"profile", "goroutine", "-o", "-"}, 0, []string{"\x1f\x8b"}, "", ""},
		{"profile-bad-dir", []string{"profile", "heap", "-o", filepath.Join(dir, "no", "such", "h")}, 1, nil, "create profile file", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append(tt.args, "--admin", admin)
			out, errOut, code := edgectl(args...)
			if code != tt.code || !strings.Contains(errOut, tt.err) {
				t.Fatalf("edgectl %v: exit %d, stderr %q; want %d with %q", args, code, errOut, tt.code, tt.err)
			}
			for _, w := range tt.out {
				if !strings.Contains(out, w) {
					t.Fatalf("edgectl %v: stdout lacks %q:\n%s", args, w, out)
				}
			}
			if tt.file != "" {
				if fi, err := os.Stat(tt.file); err != nil || fi.Size() == 0 {
					t.Fatalf("%s: %v", tt.file, err)
				}
			}
		})
	}
	// The JSON from stats --json is a Snapshot.
	out, _, _ := edgectl("stats", "--json", "--admin", admin)
	var s obs.Snapshot
	if err := json.Unmarshal([]byte(out), &s); err != nil || s.Samples == 0 || len(s.Loops) != 2 {
		t.Fatalf("stats --json: %v, %d samples, %d loops", err, s.Samples, len(s.Loops))
	}
}

// TestRenderStatsGolden pins the stats/top view of a fixed snapshot.
func TestRenderStatsGolden(t *testing.T) {
	at := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	s := obs.Snapshot{
		Time: at, IntervalS: 1, Samples: 42, SampleCostUs: 87, AlarmsFired: 3,
		Figures: []obs.Figure{
			{Name: "cpu_user", Unit: "cores", Counter: true, Value: 0.25, Total: 12.5, Avg1: 0.2, Avg10: 0.15, Avg100: 0.1},
			{Name: "rss", Unit: "B", Value: 48 << 20, Avg1: 48 << 20, Avg10: 47 << 20, Avg100: 40 << 20},
			{Name: "gc_pause", Unit: "s/s", Value: 0.0012, Avg1: 0.001, Avg10: 0.0008, Avg100: 0.0005},
			{Name: "gc_pause_max", Unit: "s", Value: 0.000128, Avg1: 0.0001, Avg10: 0.00009, Avg100: 0.00005},
			{Name: "conns", Value: 10000, Avg1: 10000, Avg10: 9500, Avg100: 5000},
			{Name: "bytes_in", Unit: "B/s", Counter: true, Value: 1.5 * (1 << 20), Total: 3 << 30, Avg1: 1 << 20, Avg10: 512 << 10, Avg100: 1000},
			{Name: "messages_in", Unit: "/s", Counter: true, Value: 2500.5, Total: 123456, Avg1: 2400, Avg10: 2000, Avg100: 100},
			{Name: "loop0_util", Unit: "ratio", Value: 0.42, Avg1: 0.4, Avg10: 0.3, Avg100: 0.2},
			{Name: "closes_disconnect", Unit: "/s", Counter: true, Value: 2, Total: 40, Avg1: 2, Avg10: 1, Avg100: 0.5},
			{Name: "closes_keepalive", Unit: "/s", Counter: true},
			{Name: "tcp_curr_estab", Value: 10230, Avg1: 10230, Avg10: 10000, Avg100: 9000},
			{Name: "tcp_retrans_segs", Unit: "/s", Counter: true, Value: 3, Total: 77, Avg1: 3, Avg10: 2, Avg100: 1},
		},
		Loops: []obs.LoopView{
			{Loop: 0, Conns: 5001, AcceptsPerS: 12, Util: 0.42, QueuedBytes: 3 << 20, QueueLen: 7},
			{Loop: 1, Conns: 4999, AcceptsPerS: 11, Util: 0.38},
		},
		TopQueues: []obs.QueueView{
			{Kind: "loop_out_bytes", Name: "loop0", Len: 3 << 20, DrainPerS: -1024, ETAS: -1},
			{Kind: "inbox", Name: "alice", Len: 1500, DrainPerS: 100, ETAS: 15, Alarm: true},
		},
		Alarms: []obs.Alarm{{Kind: "inbox", Name: "alice", Len: 1500, Threshold: 1000, Since: at.Add(-time.Minute)}},
	}
	var b strings.Builder
	renderStats(&b, &s, "http://127.0.0.1:9090", false)
	golden(t, "stats-render.golden", []byte(b.String()))
	var e strings.Builder
	renderStats(&e, &obs.Snapshot{Time: at, IntervalS: 1}, "http://127.0.0.1:9090", false)
	golden(t, "stats-render-empty.golden", []byte(e.String()))
	var top strings.Builder
	renderStats(&top, &s, "http://127.0.0.1:9090", true)
	golden(t, "top-render.golden", []byte(top.String()))
}

// TestTopFitsATerminal: a top frame from a live server with traffic and
// every figure edged reports (the edge server's counters, every close
// reason among them, and the host's TCP) fits 40 rows, with room for the
// shell prompt.
func TestTopFitsATerminal(t *testing.T) {
	srv, err := edge.New(edge.Config{Addr: "127.0.0.1:0", Loops: 1, Auth: edge.AuthLoopbackAnonymous, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if len(srv.Stats().Counters()) < 10 {
		t.Fatalf("the edge server reports %d counters; the test wants its full set", len(srv.Stats().Counters()))
	}
	admin := liveAdminWith(t, obs.Options{Counters: func() map[string]int64 { return srv.Stats().Counters() },
		Gauges: func() map[string]int64 { return srv.Stats().Gauges() }})
	out, errOut, code := edgectl("top", "--once", "--admin", admin)
	if code != 0 {
		t.Fatalf("top --once: exit %d: %s", code, errOut)
	}
	if n := strings.Count(out, "\n"); n > 38 {
		t.Fatalf("a top frame is %d lines, over 38:\n%s", n, out)
	}
	full, _, _ := edgectl("stats", "--admin", admin)
	if !strings.Contains(full, "HOST-WIDE TCP") && strings.Contains(full, "tcp_") {
		t.Fatalf("stats mixes host-wide TCP with edged's figures:\n%s", full)
	}
}

// TestObsNotAReporter: a server whose /stats is something else is an
// error, not an empty view.
func TestObsNotAReporter(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(`{"connections": 3}`)) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	for _, args := range [][]string{{"stats"}, {"top", "--once"}} {
		_, errOut, code := edgectl(append(args, "--admin", ln.Addr().String())...)
		if code != exitFailed || !strings.Contains(errOut, "no activity figures") {
			t.Fatalf("edgectl %v: exit %d, %q", args, code, errOut)
		}
	}
}

// TestBadFlagIsShort: a bad flag says what is wrong and where help is, not
// the whole flag list.
func TestBadFlagIsShort(t *testing.T) {
	for _, args := range [][]string{{"top", "--bogus"}, {"stats", "--bogus"}, {"tune", "plan", "--bogus"}} {
		_, errOut, code := edgectl(args...)
		if code != exitUsage || strings.Count(errOut, "\n") > 2 || !strings.Contains(errOut, "--help' for usage") ||
			!strings.Contains(errOut, "flag provided but not defined: -bogus") {
			t.Fatalf("edgectl %v: exit %d, stderr:\n%s", args, code, errOut)
		}
	}
}
