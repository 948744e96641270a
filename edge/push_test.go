package edge

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
)

// webhook is a real local HTTP server standing in for a push service: it
// records each POST and answers with what respond returns; a request can
// be held until the test lets it go (hold).
type webhook struct {
	t       *testing.T
	srv     *httptest.Server
	got     chan hookReq
	mu      sync.Mutex
	respond func(n int) int // status for the n-th request (0-based)
	n       int
	hold    chan struct{} // if not nil, the first request waits for it to close
}

type hookReq struct {
	at   time.Time
	body []notification
	raw  string
}

func newWebhook(t *testing.T, respond func(n int) int) *webhook {
	w := &webhook{t: t, got: make(chan hookReq, 100), respond: respond}
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		var b struct {
			Notifications []notification `json:"notifications"`
		}
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(raw, &b) != nil {
			t.Errorf("webhook got %s %q %q", r.Method, r.Header.Get("Content-Type"), raw)
		}
		w.mu.Lock()
		n, hold := w.n, w.hold
		w.n++
		w.mu.Unlock()
		w.got <- hookReq{at: time.Now(), body: b.Notifications, raw: string(raw)}
		if n == 0 && hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
			}
		}
		rw.WriteHeader(w.respond(n))
	}))
	t.Cleanup(w.srv.Close)
	return w
}

func ok200(int) int { return http.StatusOK }

// failFirst answers the first k requests with fail, the rest with then.
func failFirst(k, fail, then int) func(int) int {
	return func(n int) int {
		if n < k {
			return fail
		}
		return then
	}
}

// next returns the next request, failing after 10 s.
func (w *webhook) next() hookReq {
	w.t.Helper()
	select {
	case r := <-w.got:
		return r
	case <-time.After(10 * time.Second):
		w.t.Fatal("no webhook request within 10 s")
	}
	return hookReq{}
}

func pushServer(t *testing.T, w *webhook, mod func(*PushConfig)) *Server {
	return startServer(t, func(c *Config) {
		c.Push = PushConfig{Webhook: w.srv.URL, Interval: time.Hour, Backoff: 40 * time.Millisecond}
		if mod != nil {
			mod(&c.Push)
		}
	})
}

// send publishes a QoS 1 message and waits for its PUBACK: by then the
// server has stored it and offered its notification.
func (c *rawClient) sendAcked(topic string) {
	c.t.Helper()
	id := c.publish(topic, "x", 1)
	if p := c.expect(mqtt.TypePuback); p.ID != id {
		c.t.Fatalf("PUBACK %d, want %d", p.ID, id)
	}
}

// TestPushOfflineBatchedCollapsed: messages to offline users become
// notifications, those queued while a POST runs go in one batch, a second
// message to a user within the interval is collapsed, and an online user
// gets none.
func TestPushOfflineBatchedCollapsed(t *testing.T) {
	w := newWebhook(t, ok200)
	w.hold = make(chan struct{})
	s := pushServer(t, w, nil)
	s.Groups().Add("team", "alice")
	s.Groups().Add("team", "u4")
	bob := dial(t, s)
	bob.connect("bob", false)
	alice := dial(t, s)
	alice.connect("alice", false)

	alice.sendAcked("u/u1/m1")
	first := w.next() // held: what follows queues up behind it
	if want := []notification{{User: "u1", Sender: "alice", MessageID: "m1", Kind: "message"}}; !reflect.DeepEqual(first.body, want) {
		t.Fatalf("first POST %s, want %+v", first.raw, want)
	}
	alice.sendAcked("u/bob/mb") // bob is online: no notification
	alice.sendAcked("u/u2/m2")
	alice.sendAcked("u/u1/m1b") // u1 had one within the interval: collapsed
	alice.sendAcked("g/team/m3")
	alice.sendAcked("r/u5/m5")
	close(w.hold)
	second := w.next()
	want := []notification{
		{User: "u2", Sender: "alice", MessageID: "m2", Kind: "message"},
		{User: "u4", Sender: "alice", MessageID: "m3", Kind: "group", Group: "team"},
		{User: "u5", Sender: "alice", MessageID: "m5", Kind: "read"},
	}
	if !reflect.DeepEqual(second.body, want) {
		t.Fatalf("second POST %s, want %+v", second.raw, want)
	}
	waitFor(t, "the counters", func() bool { return s.PushStats().Sent == 4 })
	st := s.PushStats()
	if st.Posts != 2 || st.Collapsed != 1 || st.Retries != 0 || st.Dropped["queue_full"] != 0 {
		t.Fatalf("push stats %+v", st)
	}
	m := s.Counters()
	if m["push_notifications_sent"] != 4 || m["push_collapsed"] != 1 || m["push_posts"] != 2 {
		t.Fatalf("Counters: %v", m)
	}
}

// TestPushRetriesWithBackoff: a 500 is retried with the same batch after a
// growing delay (at least half of 40 ms, then of 80 ms: the jitter's floor).
func TestPushRetriesWithBackoff(t *testing.T) {
	w := newWebhook(t, failFirst(2, http.StatusInternalServerError, http.StatusOK))
	s := pushServer(t, w, nil)
	alice := dial(t, s)
	alice.connect("alice", false)
	alice.sendAcked("u/bob/m1")
	r0, r1, r2 := w.next(), w.next(), w.next()
	if r0.raw != r1.raw || r1.raw != r2.raw {
		t.Fatalf("retries changed the batch: %s / %s / %s", r0.raw, r1.raw, r2.raw)
	}
	if d := r1.at.Sub(r0.at); d < 20*time.Millisecond {
		t.Errorf("first retry after %v, want >= 20ms", d)
	}
	if d := r2.at.Sub(r1.at); d < 40*time.Millisecond {
		t.Errorf("second retry after %v, want >= 40ms", d)
	}
	waitFor(t, "the batch counted sent", func() bool { return s.PushStats().Sent == 1 })
	if st := s.PushStats(); st.Retries != 2 || st.Posts != 1 || st.Dropped["failed"] != 0 {
		t.Fatalf("push stats %+v", st)
	}
}

// TestPushGivesUp: a webhook that keeps failing gets Retries+1 attempts,
// then the batch is dropped as failed; a 4xx is not retried (rejected).
func TestPushGivesUp(t *testing.T) {
	w := newWebhook(t, failFirst(3, http.StatusServiceUnavailable, http.StatusBadRequest))
	s := pushServer(t, w, func(c *PushConfig) { c.Retries, c.Backoff = 2, time.Millisecond })
	alice := dial(t, s)
	alice.connect("alice", false)
	alice.sendAcked("u/bob/m1")
	w.next()
	w.next()
	w.next()
	waitFor(t, "the batch dropped as failed", func() bool { return s.PushStats().Dropped["failed"] == 1 })
	alice.sendAcked("u/carol/m2")
	w.next()
	waitFor(t, "the batch dropped as rejected", func() bool { return s.PushStats().Dropped["rejected"] == 1 })
	if st := s.PushStats(); st.Retries != 2 || st.Sent != 0 {
		t.Fatalf("push stats %+v", st)
	}
}

// TestPushQueueFullDropped: with the poster stuck in a POST, the queue
// takes Queue records and the event loop drops (and counts) the rest
// rather than wait.
func TestPushQueueFullDropped(t *testing.T) {
	w := newWebhook(t, ok200)
	w.hold = make(chan struct{})
	s := pushServer(t, w, func(c *PushConfig) { c.Queue = 2 })
	alice := dial(t, s)
	alice.connect("alice", false)
	alice.sendAcked("u/a/1")
	w.next() // the poster is now stuck in this POST
	for _, u := range []string{"b", "c", "d", "e", "f"} {
		alice.sendAcked("u/" + u + "/1")
	}
	if st := s.PushStats(); st.Dropped["queue_full"] != 3 || st.Queued != 2 {
		t.Fatalf("push stats %+v, want 3 queue_full drops and 2 queued", st)
	}
	if m := s.Counters(); m["push_dropped_queue_full"] != 3 {
		t.Fatalf("Counters: push_dropped_queue_full = %d", m["push_dropped_queue_full"])
	}
	close(w.hold)
	if r := w.next(); len(r.body) != 2 || r.body[0].User != "b" || r.body[1].User != "c" {
		t.Fatalf("after the stall: %s, want b and c", r.raw)
	}
}

// TestPushBadConfig: a webhook that is not an http(s) URL with a host is
// refused with one clear error.
func TestPushBadConfig(t *testing.T) {
	for _, u := range []string{"ftp://example.com/x", "example.com/hook", "http://", "://x", "http//x"} {
		_, err := New(Config{Addr: "127.0.0.1:0", Auth: AuthLoopbackAnonymous, Push: PushConfig{Webhook: u}})
		if !errors.Is(err, ErrBadConfig) {
			t.Errorf("webhook %q: %v, want ErrBadConfig", u, err)
		}
	}
}

// TestPushBackoffSchedule: the delays double up to the cap, each drawn
// from the upper half of its step.
func TestPushBackoffSchedule(t *testing.T) {
	c := PushConfig{Backoff: 100 * time.Millisecond, MaxBackoff: time.Second}
	for n, step := range []time.Duration{100, 200, 400, 800, 1000, 1000, 1000} {
		step *= time.Millisecond
		if n >= 4 {
			step = time.Second
		}
		for range 50 {
			if d := c.backoff(n); d < step/2 || d > step {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", n, d, step/2, step)
			}
		}
	}
}

// BenchmarkPushOffer is what an event loop pays to hand one notification
// to the poster: a fixed-size record through a channel (queued; the queue
// is emptied with the timer stopped), or the counted drop of a full queue.
func BenchmarkPushOffer(b *testing.B) {
	user, from, mid := []byte("14155550123"), []byte("14155550124"), []byte("3EB0C767D26A")
	b.Run("queued", func(b *testing.B) {
		p := newPusher(PushConfig{Queue: DefaultPushQueue}, nil, time.Now)
		b.ReportAllocs()
		for b.Loop() {
			if len(p.q) == cap(p.q) {
				b.StopTimer()
				for len(p.q) > 0 {
					<-p.q
				}
				b.StartTimer()
			}
			p.offer('m', user, from, nil, mid)
		}
		if n := p.dropped[pushQueueFull].Load(); n != 0 {
			b.Fatalf("%d dropped", n)
		}
	})
	b.Run("full", func(b *testing.B) {
		p := newPusher(PushConfig{Queue: 1}, nil, time.Now)
		p.offer('m', user, from, nil, mid)
		b.ReportAllocs()
		for b.Loop() {
			p.offer('m', user, from, nil, mid)
		}
		if n := p.dropped[pushQueueFull].Load(); n != uint64(b.N) {
			b.Fatalf("%d dropped, want %d", n, b.N)
		}
	})
}
