package netpoll

import (
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The WaitPark poller (poller_linux.go's park): wake-ups, deadlines and
// readiness left behind by a full look.

// openParkPoller is a poller in WaitPark mode, or a skip where the platform
// has none (kqueue: WaitPark runs as WaitBlock there).
func openParkPoller(t *testing.T) *poller {
	t.Helper()
	if !canPark {
		t.Skip("this platform's poller cannot be parked on (WaitPark runs as WaitBlock)")
	}
	p, err := openPoller()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.enablePark(); err != nil {
		p.close()
		t.Fatal(err)
	}
	t.Cleanup(func() { p.close() })
	return p
}

// A parked wait must return for every wake, however the wake races with
// the park: before the look, between the look and the park, or after.
func TestParkWake(t *testing.T) {
	p := openParkPoller(t)
	var evs [4]event
	const rounds = 3000
	woke := make(chan struct{})
	go func() {
		for i := 0; i < rounds; i++ {
			<-woke
			switch i % 3 {
			case 1:
				for t0 := time.Now(); time.Since(t0) < time.Duration(i%7)*time.Microsecond; {
				}
			case 2:
				time.Sleep(time.Duration(i%50) * time.Microsecond)
			}
			if err := p.wake(); err != nil {
				panic(err)
			}
		}
	}()
	for i := 0; i < rounds; i++ {
		woke <- struct{}{}
		n, err := p.park(evs[:], time.Now().Add(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if n != 1 || evs[0].cookie != cookieWake {
			t.Fatalf("wake-up %d: %d events (first cookie %#x), want the wake-up: lost in the park", i, n, evs[0].cookie)
		}
		p.drainWake()
	}
}

// A park with nothing ready returns at its deadline with no events, and one
// with no deadline is ended by a wake.
func TestParkDeadline(t *testing.T) {
	p := openParkPoller(t)
	var evs [4]event
	for _, d := range []time.Duration{time.Millisecond, 20 * time.Millisecond} {
		t0 := time.Now()
		n, err := p.park(evs[:], t0.Add(d))
		if el := time.Since(t0); err != nil || n != 0 || el < d {
			t.Fatalf("park until +%v: %d events, %v after %v; want 0, nil, at the deadline", d, n, err, el)
		}
	}
	go func() { time.Sleep(10 * time.Millisecond); p.wake() }()
	if n, err := p.park(evs[:], time.Time{}); err != nil || n != 1 {
		t.Fatalf("park without a deadline: %d events, %v; want the wake-up", n, err)
	}
}

// Readiness a look left behind (more ready than the buffer takes) raises no
// new edge: the next park must find it by looking before it parks.
func TestParkLeftover(t *testing.T) {
	p := openParkPoller(t)
	const fds = maxEvents + 44
	for i := 0; i < fds; i++ {
		fd, err := unix.Eventfd(1, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC) // readable from the start
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		if err := p.addConn(fd, cookieOf(uint32(i), 1)); err != nil {
			t.Fatal(err)
		}
	}
	var evs [maxEvents]event
	got := 0
	for got < fds {
		n, err := p.park(evs[:], time.Now().Add(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatalf("park returned no events with %d of %d ready ones still unreported", fds-got, fds)
		}
		got += n
	}
	if got != fds {
		t.Fatalf("%d events, want %d", got, fds)
	}
}

// spinner keeps loop 0 busy: while on, every loop message it gets on loop 0
// posts the next one, so loop 0's queue is never empty and it never parks.
type spinner struct {
	Echo
	e  atomic.Pointer[Engine] // set after Start
	on atomic.Bool
}

func (s *spinner) OnLoopMessage(l *Loop, m *Message) {
	if s.on.Load() {
		for t0 := time.Now(); time.Since(t0) < 20*time.Microsecond; { // some work per message
		}
		s.e.Load().PostLoop(l.ID(), Message{})
	}
}

func (s *spinner) OnTick(l *Loop) {}

// A loop that never parks must not hold up a parked sibling's work: every
// echo on loop 1 comes back within a second while loop 0 spins. (Here the
// test's own network goroutines keep the runtime polling, so this checks the
// outcome, not that yieldIfStarved's kick was needed: its count is logged.)
func TestParkBusySibling(t *testing.T) {
	checkLeaks(t)
	s := &spinner{}
	e := startEngine(t, Config{Loops: 2, Handler: s, Wait: WaitPark})
	defer e.Close()
	s.e.Store(e)
	var c net.Conn
	for i := 0; i < 64 && c == nil; i++ {
		d, err := net.Dial("tcp", e.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		waitFor(t, "open", func() bool { return e.Stats()[0].Conns+e.Stats()[1].Conns == int64(i+1) })
		if e.Stats()[1].Conns > 0 {
			c = d
		}
	}
	if c == nil {
		t.Skip("the kernel put no connection on loop 1 in 64 tries")
	}
	s.on.Store(true)
	defer s.on.Store(false)
	if err := e.PostLoop(0, Message{}); err != nil {
		t.Fatal(err)
	}
	var worst time.Duration
	buf := make([]byte, 1)
	for i := 0; i < 200; i++ {
		t0 := time.Now()
		if _, err := c.Write([]byte{'p'}); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("echo %d on loop 1 while loop 0 spins: %v", i, err)
		}
		worst = max(worst, time.Since(t0))
		time.Sleep(time.Duration(i%5) * 100 * time.Microsecond) // let loop 1 park
	}
	if worst > time.Second {
		t.Fatalf("worst echo on loop 1 took %v while loop 0 spun", worst)
	}
	t.Logf("worst echo %v while loop 0 spun; loop 0 kicked %d times", worst, e.Stats()[0].Yields)
}
