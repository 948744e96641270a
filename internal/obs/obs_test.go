package obs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgedhq/edged/netpoll"
)

func TestSeries(t *testing.T) {
	tests := []struct {
		name    string
		counter bool
		in      []float64
		dt      time.Duration
		value   float64
		avg1    float64 // checked to 1e-9
		hist    []float64
	}{
		{"level-constant", false, []float64{5, 5, 5}, time.Second, 5, 5, []float64{5, 5, 5}},
		{"level-step", false, []float64{0, 10}, time.Second, 10, 10 * (1 - math.Exp(-1)), []float64{0, 10}},
		{"counter-rate", true, []float64{100, 150, 250}, time.Second, 100, 50 + (1-math.Exp(-1))*50, []float64{50, 100}},
		{"counter-halfsecond", true, []float64{0, 10}, 500 * time.Millisecond, 20, 20, []float64{20}},
		{"counter-reset", true, []float64{100, 10}, time.Second, 0, 0, []float64{0}},
		{"history-wraps", false, []float64{1, 2, 3, 4, 5}, time.Second, 5, 0, []float64{3, 4, 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSeries("x", "", tt.counter, 3)
			for i, v := range tt.in {
				dt := tt.dt
				if i == 0 {
					dt = 0
				}
				if tt.counter {
					s.observeTotal(v, dt)
				} else {
					s.observeLevel(v, dt)
				}
			}
			if s.value != tt.value {
				t.Errorf("value %v, want %v", s.value, tt.value)
			}
			if tt.name != "history-wraps" && math.Abs(s.avg[0]-tt.avg1) > 1e-9 {
				t.Errorf("avg1 %v, want %v", s.avg[0], tt.avg1)
			}
			if got := s.history(10); !equalFloats(got, tt.hist) {
				t.Errorf("history %v, want %v", got, tt.hist)
			}
		})
	}
}

func equalFloats(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestNewRejectsBadOptions(t *testing.T) {
	get := func() string { return "1" }
	tests := []struct {
		name string
		opt  Options
	}{
		{"negative-interval", Options{Interval: -time.Second}},
		{"negative-threshold", Options{Thresholds: map[string]int64{"inbox": -1}}},
		{"knob-without-get", Options{Knobs: []Knob{{Name: "x"}}}},
		{"knob-without-name", Options{Knobs: []Knob{{Get: get}}}},
		{"knob-twice", Options{Knobs: []Knob{{Name: "gc_percent", Get: get}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.opt); !errors.Is(err, ErrBadValue) {
				t.Fatalf("New: %v, want ErrBadValue", err)
			}
		})
	}
}

// restoreRuntime puts the runtime settings the knob tests change back.
func restoreRuntime(t *testing.T) {
	gc := debug.SetGCPercent(100)
	debug.SetGCPercent(gc)
	lim := debug.SetMemoryLimit(-1)
	mf := runtime.SetMutexProfileFraction(-1)
	t.Cleanup(func() {
		debug.SetGCPercent(gc)
		debug.SetMemoryLimit(lim)
		runtime.SetMutexProfileFraction(mf)
		runtime.SetBlockProfileRate(0)
		blockRate.Store(0)
	})
}

func TestKnobsHTTP(t *testing.T) {
	restoreRuntime(t)
	var logs logBuffer
	level := new(slog.LevelVar)
	var paused, qcap = newBool(), newInt(4096)
	r, err := New(Options{
		Logger:   slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: level})),
		LogLevel: level,
		Knobs: []Knob{
			BoolKnob("accept_pause", "stop accepting", paused, nil),
			IntKnob("queue_cap", "per-connection queue cap", qcap, 1024, 1<<30, nil),
			{Name: "version", Help: "read-only", Get: func() string { return "dev" }},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	base := startAdmin(t, r)
	tests := []struct {
		name, method, knob, body string
		code                     int
		want                     string // substring of the response
		check                    func() bool
	}{
		{"mutex", "PUT", "mutex_profile_fraction", "5", 200, `"new": "5"`, func() bool { return runtime.SetMutexProfileFraction(-1) == 5 }},
		{"mutex-negative", "PUT", "mutex_profile_fraction", "-1", 400, "outside", nil},
		{"block", "PUT", "block_profile_rate", "1000", 200, `"new": "1000"`, nil},
		{"gc", "PUT", "gc_percent", "250", 200, `"new": "250"`, func() bool { return debug.SetGCPercent(250) == 250 }},
		{"gc-off", "PUT", "gc_percent", "off", 200, `"new": "off"`, nil},
		{"gc-garbage", "PUT", "gc_percent", "lots", 400, "integer", nil},
		{"memlimit", "PUT", "memory_limit", "3GiB", 200, `"new": "3221225472"`, func() bool { return debug.SetMemoryLimit(-1) == 3<<30 }},
		{"memlimit-off", "PUT", "memory_limit", "off", 200, `"new": "off"`, nil},
		{"memlimit-bad", "PUT", "memory_limit", "3 parsecs", 400, "bytes", nil},
		{"loglevel", "PUT", "log_level", "debug", 200, `"new": "debug"`, func() bool { return level.Level() == slog.LevelDebug }},
		{"loglevel-bad", "PUT", "log_level", "loud", 400, "level", nil},
		{"pause", "PUT", "accept_pause", "on", 200, `"new": "true"`, func() bool { return paused.Load() }},
		{"pause-bad", "PUT", "accept_pause", "maybe", 400, "bool", nil},
		{"qcap-low", "PUT", "queue_cap", "10", 400, "outside", nil},
		{"qcap", "PUT", "queue_cap", "65536\n", 200, `"new": "65536"`, func() bool { return qcap.Load() == 65536 }},
		{"threshold", "PUT", "alarm_inbox", "50", 200, `"new": "50"`, nil},
		{"readonly", "PUT", "version", "2", 405, "read-only", nil},
		{"unknown-put", "PUT", "warp_drive", "9", 404, "unknown knob", nil},
		{"unknown-get", "GET", "warp_drive", "", 404, "unknown knob", nil},
		{"get-one", "GET", "queue_cap", "", 200, `"value": "65536"`, nil},
		{"get-all", "GET", "", "", 200, `"name": "mutex_profile_fraction"`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := base + "/knobs"
			if tt.knob != "" {
				url += "/" + tt.knob
			}
			code, body := httpDo(t, tt.method, url, tt.body)
			if code != tt.code || !strings.Contains(body, tt.want) {
				t.Fatalf("%s %s %q: %d %s; want %d with %q", tt.method, url, tt.body, code, body, tt.code, tt.want)
			}
			if tt.check != nil && !tt.check() {
				t.Fatalf("the runtime did not take the change")
			}
		})
	}
	for _, want := range []string{
		`knob=mutex_profile_fraction old=0 new=5`, `knob=gc_percent old=250 new=off`,
		`knob=memory_limit old=3221225472 new=off`, `knob=queue_cap old=4096 new=65536`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

// TestMutexAndBlockProfiles sets the fractions through /knobs, makes
// contention, and checks that the profiles hold samples.
func TestMutexAndBlockProfiles(t *testing.T) {
	restoreRuntime(t)
	r, err := New(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	base := startAdmin(t, r)
	for _, k := range []string{"mutex_profile_fraction", "block_profile_rate"} {
		if code, body := httpDo(t, "PUT", base+"/knobs/"+k, "1"); code != 200 {
			t.Fatalf("set %s: %d %s", k, code, body)
		}
	}
	for _, prof := range []string{"mutex", "block"} {
		t.Run(prof, func(t *testing.T) {
			for round := 0; ; round++ {
				contend(8, 2000)
				_, body := httpDo(t, "GET", base+"/debug/pprof/"+prof+"?debug=1", "")
				if strings.Contains(body, "@ 0x") && strings.Contains(body, "obs.contend") {
					return
				}
				if round == 20 {
					t.Fatalf("no %s samples in contend after %d rounds:\n%.2000s", prof, round, body)
				}
			}
		})
	}
	code, body := httpDo(t, "GET", base+"/debug/pprof/", "")
	if code != 200 || !strings.Contains(body, "mutex") || !strings.Contains(body, "block") {
		t.Fatalf("pprof index: %d %.500s", code, body)
	}
}

// contend has g goroutines take one mutex n times each.
func contend(g, n int) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	x := 0
	for range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				mu.Lock()
				for range 200 {
					x++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// TestMetricsMoveWithLoad puts echo traffic through a real engine and
// checks that /metrics and /stats follow it.
func TestMetricsMoveWithLoad(t *testing.T) {
	e := startEngine(t, netpoll.Config{Loops: 2})
	served := int64(0)
	r, err := New(Options{
		LoopStats: e.Stats,
		Counters:  func() map[string]int64 { return map[string]int64{"messages_in": served} },
		Info:      func() any { return map[string]int{"answer": 42} },
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	base := startAdmin(t, r)
	const nconn, msgs, size = 20, 50, 1000
	conns := make([]net.Conn, nconn)
	for i := range conns {
		c, err := net.DialTimeout("tcp", e.Addr().String(), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
	}
	waitFor(t, "the engine to count the connections", 10*time.Second, func() bool {
		var n int64
		for _, l := range e.Stats() {
			n += l.Conns
		}
		return n == nconn
	})
	r.Sample()
	_, before := httpDo(t, "GET", base+"/metrics", "")
	buf := make([]byte, size)
	for _, c := range conns {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		for range msgs {
			if _, err := c.Write(buf); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				t.Fatal(err)
			}
		}
	}
	served = nconn * msgs
	time.Sleep(20 * time.Millisecond) // so the rate has a non-zero interval
	r.Sample()
	_, after := httpDo(t, "GET", base+"/metrics", "")
	const want = nconn * msgs * size
	tests := []struct {
		series       string
		before, want float64 // after must be >= want
	}{
		{"edged_received_bytes_total", 0, want},
		{"edged_sent_bytes_total", 0, want},
		{"edged_messages_in_total", 0, nconn * msgs},
		{`edged_loop_connections{loop="0"}`, 0, 0},
		{`edged_cpu_seconds_total{mode="user"}`, 0, 0},
		{"go_goroutines", 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.series, func(t *testing.T) {
			b, ok1 := metricValue(before, tt.series)
			a, ok2 := metricValue(after, tt.series)
			if !ok1 || !ok2 {
				t.Fatalf("%s missing from /metrics (before %v, after %v)", tt.series, ok1, ok2)
			}
			if b < tt.before || a < tt.want {
				t.Fatalf("%s: before %v (want >= %v), after %v (want >= %v)", tt.series, b, tt.before, a, tt.want)
			}
		})
	}
	var live float64
	for i := range 2 {
		v, _ := metricValue(after, fmt.Sprintf(`edged_loop_connections{loop="%d"}`, i))
		live += v
	}
	if live != nconn {
		t.Fatalf("edged_loop_connections sum to %v, want %d", live, nconn)
	}
	lintMetrics(t, after)
	code, body := httpDo(t, "GET", base+"/stats?history=5", "")
	var s Snapshot
	if err := json.Unmarshal([]byte(body), &s); code != 200 || err != nil {
		t.Fatalf("/stats: %d %v", code, err)
	}
	f, ok := s.Figure("bytes_in")
	if !ok || f.Total < want || len(f.History) != 1 || len(s.Loops) != 2 || s.Samples != 2 {
		t.Fatalf("/stats: bytes_in %+v, %d loops, %d samples", f, len(s.Loops), s.Samples)
	}
	if !strings.Contains(body, `"answer": 42`) {
		t.Fatalf("/stats lacks Options.Info's answer:\n%.300s", body)
	}
	if code, _ := httpDo(t, "GET", base+"/stats?history=lots", ""); code != 400 {
		t.Fatalf("/stats?history=lots: %d, want 400", code)
	}
}

func newBool() *atomic.Bool { return new(atomic.Bool) }

func newInt(v int64) *atomic.Int64 {
	i := new(atomic.Int64)
	i.Store(v)
	return i
}
