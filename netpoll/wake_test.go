package netpoll

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The Linux poller reads its eventfd only every wakeDrainEvery wake-ups;
// that relies on each write raising a new edge while the counter is still
// non-zero. A poller where that did not hold would time out here.
func TestWakeEdgePerWrite(t *testing.T) {
	p, err := openPoller()
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	var evs [4]event
	for i := 0; i < 3*1024+5; i++ { // a few times the Linux poller's wakeDrainEvery
		if err := p.wake(); err != nil {
			t.Fatal(err)
		}
		n, err := p.wait(evs[:], 5000)
		if err != nil {
			t.Fatal(err)
		}
		if n != 1 || evs[0].cookie != cookieWake {
			t.Fatalf("wake-up %d: %d events (first cookie %#x), want the one wake-up", i, n, evs[0].cookie)
		}
		p.drainWake()
	}
	if n, _ := p.wait(evs[:], 0); n != 0 {
		t.Fatalf("%d events with no wake-up pending, want 0", n)
	}
}

// relay forwards every message posted to a connection on loop 0 to a
// connection on loop 1 (a cross-loop post made on loop 0's thread), which
// records it; each message's Arg is producer<<32 | sequence number.
type relay struct {
	Echo
	e        atomic.Pointer[Engine] // set after Start
	mu       sync.Mutex
	byLoop   [2][]Handle
	to       Handle
	last     []atomic.Int64 // per producer: last sequence number delivered
	reorders atomic.Int64
}

func (r *relay) OnOpen(c *Conn) {
	r.mu.Lock()
	r.byLoop[c.LoopID()] = append(r.byLoop[c.LoopID()], c.Handle())
	r.mu.Unlock()
}

func (r *relay) OnMessage(c *Conn, m *Message) {
	if c.LoopID() == 0 {
		if err := r.e.Load().Post(r.to, *m); err != nil {
			panic(fmt.Sprintf("relay: %v", err))
		}
		return
	}
	p, seq := m.Arg>>32, int64(uint32(m.Arg))
	if r.last[p].Load()+1 != seq {
		r.reorders.Add(1)
	}
	r.last[p].Store(seq)
}

// TestPostNoLostWakeup posts in ping-pong: each producer posts one message
// and waits until it has arrived, so the loops go to sleep between almost
// every two messages and every post races with a loop entering its poller
// wait. The message goes to loop 0, which relays it to loop 1 from its own
// thread. A lost wake-up leaves a message undelivered (there is no other
// traffic to wake the loop) and fails the test; per-producer order is
// checked too.
// Both wait modes: in WaitPark the race is with the park on the runtime's
// poller (the nested epoll edge), in WaitBlock with epoll_wait.
func TestPostNoLostWakeup(t *testing.T) {
	for _, m := range []WaitMode{WaitBlock, WaitPark} {
		t.Run(string(m), func(t *testing.T) { testPostNoLostWakeup(t, m) })
	}
}

func testPostNoLostWakeup(t *testing.T, mode WaitMode) {
	checkLeaks(t)
	const producers, perProducer = 4, 500
	// Widen the window between the loop's last look at its queue and its
	// sleep, so a protocol without the second look loses wake-ups here.
	var n atomic.Int64
	testHookBeforeSleep = func() {
		if n.Add(1)%2 == 0 {
			for t0 := time.Now(); time.Since(t0) < 30*time.Microsecond; { // spin: a sleep would park the locked thread
			}
		}
	}
	r := &relay{last: make([]atomic.Int64, producers)}
	e := startEngine(t, Config{Loops: 2, Handler: r, Wait: mode})
	defer func() { e.Close(); testHookBeforeSleep = nil }()
	if e.Wait() != mode {
		t.Fatalf("engine runs %q, want %q", e.Wait(), mode)
	}
	r.e.Store(e)
	for i := 0; i < 64; i++ {
		r.mu.Lock()
		done := len(r.byLoop[0]) > 0 && len(r.byLoop[1]) > 0
		r.mu.Unlock()
		if done {
			break
		}
		c, err := net.Dial("tcp", e.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		waitFor(t, "open", func() bool {
			r.mu.Lock()
			defer r.mu.Unlock()
			return len(r.byLoop[0])+len(r.byLoop[1]) == i+1
		})
	}
	r.mu.Lock()
	if len(r.byLoop[0]) == 0 || len(r.byLoop[1]) == 0 {
		r.mu.Unlock()
		t.Skip("the kernel put no connection on one of the loops in 64 tries")
	}
	from := r.byLoop[0][0]
	r.to = r.byLoop[1][0]
	r.mu.Unlock()

	errs := make(chan error, producers)
	for p := 0; p < producers; p++ {
		go func() {
			for seq := int64(1); seq <= perProducer; seq++ {
				if err := e.Post(from, Message{Arg: uint64(p)<<32 | uint64(seq)}); err != nil {
					errs <- err
					return
				}
				deadline := time.Now().Add(5 * time.Second)
				for r.last[p].Load() < seq {
					if time.Now().After(deadline) {
						errs <- fmt.Errorf("producer %d: message %d not delivered in 5 s: lost wake-up", p, seq)
						return
					}
					if seq%3 == 0 {
						time.Sleep(20 * time.Microsecond) // let the loops fall asleep
					}
				}
			}
			errs <- nil
		}()
	}
	for p := 0; p < producers; p++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := r.reorders.Load(); n != 0 {
		t.Fatalf("%d messages out of per-producer order", n)
	}
	var wakeups int64
	for _, s := range e.Stats() {
		wakeups += s.Wakeups
	}
	t.Logf("%d messages relayed with %d wake-ups", producers*perProducer, wakeups)
}

// selfPoster posts n messages to its own connection for every byte read.
type selfPoster struct {
	Echo
	e atomic.Pointer[Engine] // set after Start
	n int
}

func (s *selfPoster) OnData(c *Conn, data []byte) (int, error) {
	for range data {
		for i := 0; i < s.n; i++ {
			if err := s.e.Load().Post(c.Handle(), Message{Data: []byte{'m'}}); err != nil {
				return len(data), err
			}
		}
	}
	return len(data), nil
}

// A loop posting to its own connections is awake by definition: it must
// deliver every message in the same or the next iteration without writing
// its own eventfd.
func TestSelfPostWakesNobody(t *testing.T) {
	checkLeaks(t)
	h := &selfPoster{n: 100}
	e := startEngine(t, Config{Loops: 1, Handler: h})
	defer e.Close()
	h.e.Store(e)
	c, err := net.Dial("tcp", e.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const rounds = 20
	buf := make([]byte, h.n)
	for i := 0; i < rounds; i++ {
		if _, err := c.Write([]byte{'p'}); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
	if w := e.Stats()[0].Wakeups; w != 0 {
		t.Fatalf("%d wake-ups for %d self-posts, want 0", w, rounds*h.n)
	}
}
