package obs

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgedhq/edged/internal/echo"
	"github.com/edgedhq/edged/netpoll"
)

// backlogEcho is echo.Handler with Backlogs plugged in, the way a server
// builds its Options.Queues source.
type backlogEcho struct {
	echo.Handler
	*Backlogs
}

func newBacklogEcho(loops int) *backlogEcho {
	return &backlogEcho{Backlogs: NewBacklogs(loops, 64<<10, nil)}
}

func (h *backlogEcho) OnData(c *netpoll.Conn, data []byte) (int, error) {
	n, err := h.Handler.OnData(c, data)
	h.Note(c)
	return n, err
}

func (h *backlogEcho) OnLoopMessage(*netpoll.Loop, *netpoll.Message) {}

func (h *backlogEcho) OnTick(l *netpoll.Loop) { h.Tick(l) }

func (h *backlogEcho) queues() []QueueInfo { return h.Queues() }

// TestAlarmFiresAndClears: a client that stops reading grows its loop's and
// its connection's output queue past the thresholds; the alarms show in the
// log, /stats and /metrics, and clear once the client reads again.
func TestAlarmFiresAndClears(t *testing.T) {
	h := newBacklogEcho(1)
	e := startEngine(t, netpoll.Config{Loops: 1, MaxQueued: 64 << 20, SndBuf: 64 << 10, Handler: h})
	var logs logBuffer
	r, err := New(Options{
		LoopStats:  e.Stats,
		Queues:     h.queues,
		Thresholds: map[string]int64{KindLoopOut: 2 << 20, "conn_backlog": 1 << 20},
		Logger:     slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	base := startAdmin(t, r)

	c, err := net.DialTimeout("tcp", e.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(16 << 10)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	const total = 8 << 20
	chunk := make([]byte, 64<<10)
	for sent := 0; sent < total; sent += len(chunk) {
		if _, err := c.Write(chunk); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	waitFor(t, "4 MiB queued on the loop", 20*time.Second, func() bool { return e.Stats()[0].QueuedBytes >= 4<<20 })
	waitFor(t, "the connection's backlog to be published", 10*time.Second, func() bool {
		q := h.queues()
		return len(q) == 1 && q[0].Len >= 1<<20
	})
	r.Sample()
	r.Sample()

	s := stats(t, base)
	if len(s.Alarms) != 2 || s.AlarmsFired != 2 {
		t.Fatalf("alarms after the stall: %+v (fired %d), want loop_out_bytes and conn_backlog", s.Alarms, s.AlarmsFired)
	}
	if s.Alarms[0].Kind != KindConnBacklog || !strings.HasPrefix(s.Alarms[0].Name, "L0/") || s.Alarms[1].Kind != KindLoopOut || s.Alarms[1].Name != "loop0" {
		t.Fatalf("alarms: %+v", s.Alarms)
	}
	if len(s.TopQueues) < 2 || !s.TopQueues[0].Alarm || s.TopQueues[0].Len < 1<<20 {
		t.Fatalf("top queues: %+v", s.TopQueues)
	}
	_, m := httpDo(t, "GET", base+"/metrics", "")
	if v, ok := metricValue(m, `edged_queue_alarm{kind="loop_out_bytes",queue="loop0"}`); !ok || v != 1 {
		t.Fatalf("/metrics lacks the loop alarm (%v, %v)", v, ok)
	}
	if v, _ := metricValue(m, "edged_queue_alarms_fired_total"); v != 2 {
		t.Fatalf("edged_queue_alarms_fired_total %v, want 2", v)
	}
	if n := strings.Count(logs.String(), `msg="queue alarm"`); n != 2 {
		t.Fatalf("%d alarm lines in the log, want 2:\n%s", n, logs.String())
	}

	// The consumer reads again: everything comes back and the queues drain.
	if _, err := io.CopyN(io.Discard, c, total); err != nil {
		t.Fatalf("read the echo back: %v", err)
	}
	waitFor(t, "the loop queue to drain", 10*time.Second, func() bool { return e.Stats()[0].QueuedBytes == 0 })
	waitFor(t, "the backlog to drain", 10*time.Second, func() bool { return len(h.queues()) == 0 })
	r.Sample()
	s = stats(t, base)
	if len(s.Alarms) != 0 {
		t.Fatalf("alarms after the drain: %+v", s.Alarms)
	}
	_, m = httpDo(t, "GET", base+"/metrics", "")
	if _, ok := metricValue(m, `edged_queue_alarm{kind="loop_out_bytes",queue="loop0"}`); ok {
		t.Fatal("/metrics still shows the loop alarm after the drain")
	}
	if n := strings.Count(logs.String(), `msg="queue alarm cleared"`); n != 2 {
		t.Fatalf("%d cleared lines in the log, want 2:\n%s", n, logs.String())
	}
}

func stats(t *testing.T, base string) Snapshot {
	t.Helper()
	code, body := httpDo(t, "GET", base+"/stats", "")
	var s Snapshot
	if err := json.Unmarshal([]byte(body), &s); code != 200 || err != nil {
		t.Fatalf("/stats: %d %v %.300s", code, err, body)
	}
	return s
}

// TestQueueTracking checks drain rates, time to drain, the top list and
// the alarm hysteresis on a scripted source.
func TestQueueTracking(t *testing.T) {
	var cur []QueueInfo
	r, err := New(Options{
		Queues:     func() []QueueInfo { return cur },
		Thresholds: map[string]int64{"inbox": 100},
		TopN:       2,
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name   string
		qs     []QueueInfo
		alarms int
		top    []string // names, longest first
	}{
		{"below", []QueueInfo{{"inbox", "a", 99}, {"inbox", "b", 5}}, 0, []string{"a", "b"}},
		{"fires", []QueueInfo{{"inbox", "a", 150}, {"inbox", "b", 5}, {"inbox", "c", 7}}, 1, []string{"a", "c"}},
		{"hysteresis", []QueueInfo{{"inbox", "a", 60}, {"inbox", "b", 5}}, 1, []string{"a", "b"}},
		{"clears", []QueueInfo{{"inbox", "a", 50}}, 0, []string{"a"}},
		{"unthresholded-kind", []QueueInfo{{"other", "z", 1 << 40}}, 0, []string{"z"}},
		{"fires-again", []QueueInfo{{"inbox", "a", 100}}, 1, []string{"a"}},
		{"vanishes", nil, 0, nil},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			cur = st.qs
			r.Sample()
			s := r.Snapshot(0)
			var names []string
			for _, q := range s.TopQueues {
				names = append(names, q.Name)
			}
			if len(s.Alarms) != st.alarms || strings.Join(names, ",") != strings.Join(st.top, ",") {
				t.Fatalf("alarms %+v top %v; want %d alarms, top %v", s.Alarms, names, st.alarms, st.top)
			}
		})
	}
	if s := r.Snapshot(0); s.AlarmsFired != 2 {
		t.Fatalf("fired %d, want 2", s.AlarmsFired)
	}
	// A draining queue has a positive drain rate and a finite time to drain.
	for _, n := range []int64{1000, 900, 800} {
		cur = []QueueInfo{{"inbox", "d", n}}
		time.Sleep(5 * time.Millisecond)
		r.Sample()
	}
	q := r.Snapshot(0).TopQueues[0]
	if q.DrainPerS <= 0 || q.ETAS <= 0 {
		t.Fatalf("draining queue: %+v", q)
	}
	for _, n := range []int64{900, 2000, 4000, 8000} {
		cur = []QueueInfo{{"inbox", "d", n}}
		time.Sleep(5 * time.Millisecond)
		r.Sample()
	}
	if q := r.Snapshot(0).TopQueues[0]; q.DrainPerS >= 0 || q.ETAS != -1 {
		t.Fatalf("growing queue: %+v", q)
	}
}

func TestMountRefusesTakenRoute(t *testing.T) {
	r, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		taken string
		path  string
	}{
		{"stats", "GET /stats", "/stats"},
		{"metrics", "/metrics", ""},
		{"pprof", "/debug/pprof/", ""},
		{"knobs", "PUT /knobs/{k}", ""},
		{"free-with-catchall", "/", "/stats"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.HandleFunc(tt.taken, func(http.ResponseWriter, *http.Request) {})
			err := r.Mount(mux)
			if tt.taken == "/" {
				if err != nil {
					t.Fatalf("Mount beside a catch-all: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrRouteTaken) {
				t.Fatalf("Mount: %v, want ErrRouteTaken", err)
			}
		})
	}
	// Another StatsPath mounts beside a server's own /stats.
	r2, err := New(Options{StatsPath: "/obs/stats"})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(http.ResponseWriter, *http.Request) {})
	if err := r2.Mount(mux); err != nil {
		t.Fatalf("Mount with StatsPath /obs/stats: %v", err)
	}
}

func TestStartProfile(t *testing.T) {
	tests := []struct {
		mode string
		err  error
	}{
		{"cpu", nil}, {"mem", nil}, {"mutex", nil}, {"block", nil}, {"trace", nil},
		{"heap", ErrUnknownMode}, {"", ErrUnknownMode},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "prof")
			stop, err := StartProfile(tt.mode, dir)
			if !errors.Is(err, tt.err) {
				t.Fatalf("StartProfile(%q): %v, want %v", tt.mode, err, tt.err)
			}
			if err != nil {
				return
			}
			if _, err := StartProfile("cpu", t.TempDir()); !errors.Is(err, ErrProfiling) {
				stop()
				t.Fatalf("second StartProfile: %v, want ErrProfiling", err)
			}
			contend(4, 500)
			stop()
			stop() // a second stop is harmless
			fi, err := os.Stat(ProfilePath(tt.mode, dir))
			if err != nil || fi.Size() == 0 {
				t.Fatalf("profile file: %v (size %d)", err, sizeOf(fi))
			}
		})
	}
	t.Run("unwritable-dir", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "file")
		os.WriteFile(f, nil, 0o644)
		if _, err := StartProfile("cpu", filepath.Join(f, "sub")); err == nil {
			t.Fatal("StartProfile under a regular file succeeded")
		}
	})
}

func sizeOf(fi os.FileInfo) int64 {
	if fi == nil {
		return -1
	}
	return fi.Size()
}
