package netpoll

import (
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
