package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Push notifications: a message that lands in the inbox of a user with no
// live connection is announced to a webhook (Config.Push.Webhook), which
// wakes the user's device (FCM, APNs or anything else behind it).
//
// The event loop never waits for it: storeDirect hands a fixed-size,
// pointer-free record to a bounded channel with a non-blocking send (a
// full queue drops the record, counted as queue_full), and one goroutine
// batches, collapses and POSTs. Collapsing: at most one notification per
// user per Interval; the device fetches its whole inbox when it connects,
// so a second wake-up within the interval would add nothing (counted as
// collapsed). A failed POST (network error, 5xx, 408, 429) is retried with
// exponential backoff and jitter; another 4xx is not (rejected). The
// webhook gets
//
//	POST {"notifications": [{"user": "bob", "sender": "alice",
//	       "message_id": "m1", "kind": "message"}, ...]}
//
// with kind "message" (u/<user>/m/...), "group" (with "group": the group
// name) or "read" (a read receipt). Delivery is best effort: the queue is
// in memory and what is in it when the server stops is dropped (shutdown).

// Defaults of PushConfig.
const (
	DefaultPushInterval   = time.Minute
	DefaultPushQueue      = 4096
	DefaultPushBatch      = 100
	DefaultPushRetries    = 5
	DefaultPushBackoff    = 500 * time.Millisecond
	DefaultPushMaxBackoff = 30 * time.Second
	DefaultPushTimeout    = 10 * time.Second
)

// PushConfig configures push notifications (Config.Push). The zero value
// of each field picks its default; an empty Webhook turns them off.
type PushConfig struct {
	// Webhook is the http:// or https:// URL notifications are POSTed to.
	Webhook string
	// Interval is the shortest time between two notifications for one
	// user (default 1 min).
	Interval time.Duration
	// Queue is the capacity of the queue from the event loops to the
	// poster, in notifications (default 4096, about 260 bytes each).
	Queue int
	// Batch is the most notifications per POST (default 100).
	Batch int
	// Retries is how often a failed POST is tried again (default 5;
	// negative: never); Backoff is the first delay (default 500 ms),
	// doubled per retry up to MaxBackoff (default 30 s), each drawn
	// between half and all of it (jitter).
	Retries    int
	Backoff    time.Duration
	MaxBackoff time.Duration
	// Timeout bounds each POST (default 10 s).
	Timeout time.Duration
}

func (c *PushConfig) setDefaults() error {
	if c.Webhook == "" {
		return nil
	}
	if err := CheckWebhook(c.Webhook); err != nil {
		return err
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.Interval, DefaultPushInterval)
	def(&c.Backoff, DefaultPushBackoff)
	def(&c.MaxBackoff, DefaultPushMaxBackoff)
	def(&c.Timeout, DefaultPushTimeout)
	if c.Queue == 0 {
		c.Queue = DefaultPushQueue
	}
	if c.Batch == 0 {
		c.Batch = DefaultPushBatch
	}
	if c.Retries == 0 {
		c.Retries = DefaultPushRetries
	}
	if c.Interval < 0 || c.Queue < 1 || c.Batch < 1 || c.Backoff < 0 || c.MaxBackoff < c.Backoff || c.Timeout < 0 {
		return fmt.Errorf("check config: push interval, queue, batch, backoff or timeout out of range: %w", ErrBadConfig)
	}
	return nil
}

// CheckWebhook returns an error wrapping ErrBadConfig unless u is an
// http:// or https:// URL with a host.
func CheckWebhook(u string) error {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		return fmt.Errorf("check config: push webhook %q: want an http:// or https:// URL with a host: %w", u, ErrBadConfig)
	}
	return nil
}

// Push drop reasons, the label of edged_push_dropped_total.
const (
	pushQueueFull = iota // the queue was full: the event loop did not wait
	pushFailed           // the POST failed after every retry
	pushRejected         // the webhook answered 4xx (not 408 or 429): not retried
	pushShutdown         // still queued or being retried when the server stopped
	numPushDrops
)

var pushDropNames = [numPushDrops]string{"queue_full", "failed", "rejected", "shutdown"}

// pushRec is what an event loop hands to the poster: pointer-free and
// fixed-size, so the send allocates nothing (user ids, group names and
// message ids are at most 64 bytes: ValidID).
type pushRec struct {
	kind            byte // 'm', 'g' or 'r'
	nu, nf, nm, ng  uint8
	user, from, mid [maxIDLen]byte
	group           [maxIDLen]byte
}

// maxIDLen is the longest user id, group name or message id (ValidID).
const maxIDLen = 64

// notification is one entry of a POST body.
type notification struct {
	User      string `json:"user"`
	Sender    string `json:"sender"`
	MessageID string `json:"message_id"`
	Kind      string `json:"kind"`
	Group     string `json:"group,omitempty"`
}

// PushStats are the push counters (Stats.Push).
type PushStats struct {
	Sent      uint64            `json:"sent"`      // notifications the webhook accepted
	Posts     uint64            `json:"posts"`     // successful POSTs (batches)
	Retries   uint64            `json:"retries"`   // POSTs tried again
	Collapsed uint64            `json:"collapsed"` // not sent: the user had one within the interval
	Dropped   map[string]uint64 `json:"dropped"`   // by reason
	Queued    int               `json:"queued"`    // waiting in the queue now
}

// pusher is the poster. offer is called by event loops; everything else
// runs on the poster goroutine.
type pusher struct {
	cfg  PushConfig
	log  *slog.Logger
	q    chan pushRec
	http *http.Client

	sent, posts, retries, collapsed atomic.Uint64
	dropped                         [numPushDrops]atomic.Uint64

	last    map[string]time.Time // poster only: when each user was last notified
	pruneAt int                  // poster only: the size of last that triggers a sweep
	now     func() time.Time

	runMu sync.Mutex // guards stop, done
	stop  chan struct{}
	done  chan struct{}
}

func newPusher(cfg PushConfig, log *slog.Logger, now func() time.Time) *pusher {
	// Its own transport, so that close can drop its idle connections
	// (and their goroutines) without touching the process's default one.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	return &pusher{cfg: cfg, log: log, q: make(chan pushRec, cfg.Queue), now: now,
		http: &http.Client{Timeout: cfg.Timeout, Transport: tr}, last: map[string]time.Time{}, pruneAt: 2 * cfg.Queue}
}

// offer queues a notification without ever blocking: a full queue drops it
// (counted). Safe for concurrent use; it allocates nothing.
func (p *pusher) offer(kind byte, user, from, group, mid []byte) {
	if len(user) > maxIDLen || len(from) > maxIDLen || len(mid) > maxIDLen || len(group) > maxIDLen {
		return // not a profile id: cannot happen for stored profile messages
	}
	var r pushRec
	r.kind = kind
	r.nu = uint8(copy(r.user[:], user))
	r.nf = uint8(copy(r.from[:], from))
	r.nm = uint8(copy(r.mid[:], mid))
	r.ng = uint8(copy(r.group[:], group))
	select {
	case p.q <- r:
	default:
		p.dropped[pushQueueFull].Add(1)
	}
}

func (p *pusher) start() {
	p.runMu.Lock()
	defer p.runMu.Unlock()
	if p.stop == nil {
		p.stop, p.done = make(chan struct{}), make(chan struct{})
		go p.run(p.stop, p.done)
	}
}

// close stops the poster (an in-flight POST is cancelled) and counts what
// was left as shutdown.
func (p *pusher) close() {
	p.runMu.Lock()
	defer p.runMu.Unlock()
	if p.stop == nil {
		return
	}
	select {
	case <-p.stop:
		return
	default:
	}
	close(p.stop)
	<-p.done
	p.http.CloseIdleConnections()
	p.dropped[pushShutdown].Add(uint64(len(p.q)))
}

func (p *pusher) run(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-stop; cancel() }()
	batch := make([]notification, 0, p.cfg.Batch)
	for {
		select {
		case <-stop:
			return
		case r := <-p.q:
			batch = p.add(batch, &r)
		}
		// Whatever queued up while the last POST ran goes in this one.
	drain:
		for len(batch) < p.cfg.Batch {
			select {
			case r := <-p.q:
				batch = p.add(batch, &r)
			default:
				break drain
			}
		}
		if len(batch) > 0 {
			p.post(ctx, batch)
		}
		clear(batch)
		batch = batch[:0]
	}
}

// add appends r to batch unless its user was notified within the
// interval (collapsed).
func (p *pusher) add(batch []notification, r *pushRec) []notification {
	now := p.now()
	user := string(r.user[:r.nu])
	if t, ok := p.last[user]; ok && now.Sub(t) < p.cfg.Interval {
		p.collapsed.Add(1)
		return batch
	}
	if len(p.last) >= p.pruneAt { // forget users notified more than an interval ago
		for u, t := range p.last {
			if now.Sub(t) >= p.cfg.Interval {
				delete(p.last, u)
			}
		}
		// The next sweep when the map has doubled: amortised O(1) per
		// notification even when every user in it is recent.
		p.pruneAt = max(2*len(p.last), 2*p.cfg.Queue)
	}
	p.last[user] = now
	kind := "message"
	switch r.kind {
	case 'g':
		kind = "group"
	case 'r':
		kind = "read"
	}
	return append(batch, notification{User: user, Sender: string(r.from[:r.nf]), MessageID: string(r.mid[:r.nm]),
		Kind: kind, Group: string(r.group[:r.ng])})
}

// backoff returns the delay before retry n (0 = the first retry): Backoff
// doubled n times, capped at MaxBackoff, drawn from its upper half.
func (c *PushConfig) backoff(n int) time.Duration {
	d := c.Backoff
	for range n {
		if d >= c.MaxBackoff/2 {
			d = c.MaxBackoff
			break
		}
		d *= 2
	}
	d = min(d, c.MaxBackoff)
	return d/2 + rand.N(d/2+1)
}

// post sends one batch, retrying as the policy says.
func (p *pusher) post(ctx context.Context, batch []notification) {
	body, err := json.Marshal(map[string]any{"notifications": batch})
	if err != nil {
		panic("edge: push notification does not marshal: " + err.Error()) // plain strings only
	}
	n := uint64(len(batch))
	for attempt := 0; ; attempt++ {
		code, err := p.send(ctx, body)
		switch {
		case ctx.Err() != nil:
			p.dropped[pushShutdown].Add(n)
			return
		case err == nil && code >= 200 && code < 300:
			p.sent.Add(n)
			p.posts.Add(1)
			return
		case err == nil && code >= 400 && code < 500 && code != http.StatusRequestTimeout && code != http.StatusTooManyRequests:
			p.dropped[pushRejected].Add(n)
			p.log.Warn("push webhook rejected a batch; not retried", "status", code, "notifications", n)
			return
		}
		if attempt >= p.cfg.Retries {
			p.dropped[pushFailed].Add(n)
			p.log.Warn("push webhook failed; batch dropped", "attempts", attempt+1, "status", code, "err", err, "notifications", n)
			return
		}
		p.retries.Add(1)
		t := time.NewTimer(p.cfg.backoff(attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			p.dropped[pushShutdown].Add(n)
			return
		case <-t.C:
		}
	}
}

// send POSTs body once and returns the status code.
func (p *pusher) send(ctx context.Context, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.cfg.Webhook, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("build push request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "edged-push")
	resp, err := p.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("post push batch: %w", err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	resp.Body.Close()
	return resp.StatusCode, nil
}

// stats returns the counters.
func (p *pusher) stats() PushStats {
	st := PushStats{Sent: p.sent.Load(), Posts: p.posts.Load(), Retries: p.retries.Load(),
		Collapsed: p.collapsed.Load(), Dropped: map[string]uint64{}, Queued: len(p.q)}
	for i, name := range pushDropNames {
		st.Dropped[name] = p.dropped[i].Load()
	}
	return st
}

// notifyOffline is storeDirect's hook: kind is the profile message kind
// just stored for the offline user to.
func (s *Server) notifyOffline(kind byte, to, from, group, mid []byte) {
	if s.push != nil && (kind == 'm' || kind == 'g' || kind == 'r') {
		s.push.offer(kind, to, from, group, mid)
	}
}

func (s *Server) pushStatsPtr() *PushStats {
	if s.push == nil {
		return nil
	}
	st := s.push.stats()
	return &st
}
