package netpoll

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// lenFrames consumes frames of a 4-byte big-endian length and that many
// bytes, answering each with its length (4 bytes), and leaves partial
// frames to the engine. It records close reasons per handle.
type lenFrames struct {
	Echo
	mu     sync.Mutex
	closed map[Handle]error
	log    closeLog
}

func newLenFrames() *lenFrames { return &lenFrames{closed: map[Handle]error{}} }

func (h *lenFrames) OnData(c *Conn, data []byte) (int, error) {
	used := 0
	for len(data)-used >= 4 {
		n := int(binary.BigEndian.Uint32(data[used:]))
		if len(data)-used < 4+n {
			break
		}
		c.Write(data[used : used+4])
		used += 4 + n
	}
	return used, nil
}

func (h *lenFrames) OnClose(c *Conn, reason error) {
	h.mu.Lock()
	h.closed[c.Handle()] = reason
	h.mu.Unlock()
	h.log.add(reason)
}

func frameOf(n int) []byte {
	b := make([]byte, 4+n)
	binary.BigEndian.PutUint32(b, uint32(n))
	for i := 4; i < len(b); i++ {
		b[i] = byte(i)
	}
	return b
}

func dialT(t *testing.T, e *Engine) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", e.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends one complete frame of n bytes and reads its answer.
func roundTrip(t *testing.T, c net.Conn, n int) {
	t.Helper()
	if _, err := c.Write(frameOf(n)); err != nil {
		t.Fatalf("write frame: %v", err)
	}
	var ans [4]byte
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, ans[:]); err != nil {
		t.Fatalf("read answer: %v", err)
	}
	if got := binary.BigEndian.Uint32(ans[:]); got != uint32(n) {
		t.Fatalf("answer %d, want %d", got, n)
	}
}

// closedWithin waits for the server to close c and returns when it did.
func closedWithin(t *testing.T, c net.Conn, d time.Duration) time.Time {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v", d)
	}
	return time.Now()
}

func TestPartialTimeoutClosesStalledFrames(t *testing.T) {
	checkLeaks(t)
	const timeout = 400 * time.Millisecond
	h := newLenFrames()
	e := startEngine(t, Config{Handler: h, PartialTimeout: timeout})
	defer e.Close()

	idle := dialT(t, e)    // sent complete frames only: never timed out
	stalled := dialT(t, e) // half a frame, then silence
	trickle := dialT(t, e) // one byte of the same frame every 50 ms
	roundTrip(t, idle, 10)
	start := time.Now()
	if _, err := stalled.Write(frameOf(1000)[:500]); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		f := frameOf(1000)
		for i := 0; i < len(f)-1; i++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := trickle.Write(f[i : i+1]); err != nil {
				return
			}
		}
	}()
	t1 := closedWithin(t, stalled, 20*time.Second)
	t2 := closedWithin(t, trickle, 20*time.Second)
	close(stop)
	<-done
	for name, at := range map[string]time.Time{"stalled": t1, "trickle": t2} {
		if d := at.Sub(start); d < timeout {
			t.Errorf("%s closed after %v, before the partial timeout %v", name, d, timeout)
		}
	}
	waitFor(t, "both closes recorded", func() bool { return h.log.count(ErrPartialTimeout) == 2 })
	// The idle connection outlived three timeouts and still works.
	time.Sleep(3 * timeout)
	roundTrip(t, idle, 100)
	if n := h.log.total(); n != 2 {
		t.Fatalf("%d closes, want 2 (the idle connection must stay)", n)
	}
	if n := e.PartialBytes(); n != 0 {
		t.Fatalf("PartialBytes %d after the partial frames closed, want 0", n)
	}
}

// A frame completed in time resets the deadline: a connection that keeps
// completing frames, each arriving in two halves, is never closed.
func TestPartialTimeoutRunsPerFrame(t *testing.T) {
	checkLeaks(t)
	// Frames complete every timeout/10 for 1.5 timeouts: a deadline that
	// ran from the first partial frame (not per frame) closes the
	// connection, while a loaded machine (-race, other builds on two
	// cores) would have to stall the writer or the loop for 9/10 of the
	// timeout to close it wrongly (it did at timeout/3 under CI load).
	const timeout, frames = time.Second, 15
	h := newLenFrames()
	e := startEngine(t, Config{Loops: 1, Handler: h, PartialTimeout: timeout})
	defer e.Close()
	c := dialT(t, e)
	f := frameOf(64)
	if _, err := c.Write(f[:10]); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < frames; i++ {
		time.Sleep(timeout / 10)
		// The rest of this frame plus the first bytes of the next: the
		// connection always holds a partial frame, but never an old one.
		if _, err := c.Write(append(append([]byte{}, f[10:]...), f[:10]...)); err != nil {
			t.Fatal(err)
		}
		var ans [4]byte
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, ans[:]); err != nil {
			t.Fatalf("frame %d: %v (closes: %v)", i, err, h.log.all())
		}
	}
	if n := h.log.total(); n != 0 {
		t.Fatalf("closed: %v", h.log.all())
	}
}

func TestPartialBudgetClosesTheGrower(t *testing.T) {
	checkLeaks(t)
	const budget = 900 << 10
	h := newLenFrames()
	e := startEngine(t, Config{Handler: h, MaxPartialBytes: budget, MaxPending: 4 << 20})
	defer e.Close()

	canary := dialT(t, e)
	holder := dialT(t, e) // holds 400 KB of a 450 KB frame: within the budget
	grower := dialT(t, e) // then grows past what is left
	roundTrip(t, canary, 100)

	big := frameOf(450_000)
	if _, err := holder.Write(big[:400_000]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "holder's partial frame buffered", func() bool { return e.PartialBytes() >= 400_000 })
	held := e.PartialBytes()
	if held > budget {
		t.Fatalf("PartialBytes %d over the budget %d", held, budget)
	}
	roundTrip(t, canary, 200)

	huge := frameOf(2 << 20)
	if _, err := grower.Write(huge[:100_000]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "grower's first part buffered", func() bool { return e.PartialBytes() >= held+100_000 })
	// Another 300 KB: the grower's buffer would have to move to a size
	// class that does not fit what the holder leaves.
	go grower.Write(huge[100_000:400_000])
	closedWithin(t, grower, 20*time.Second)
	waitFor(t, "budget close recorded", func() bool { return h.log.count(ErrPartialBudget) == 1 })
	if n := e.PartialBytes(); n != held {
		t.Fatalf("PartialBytes %d after the grower closed, want the holder's %d", n, held)
	}

	// Everyone else is untouched: the canary still works, the holder
	// completes its frame.
	roundTrip(t, canary, 300)
	if _, err := holder.Write(big[400_000:]); err != nil {
		t.Fatal(err)
	}
	var ans [4]byte
	holder.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(holder, ans[:]); err != nil || binary.BigEndian.Uint32(ans[:]) != 450_000 {
		t.Fatalf("holder's frame: answer %v, %v", ans, err)
	}
	if n := h.log.total(); n != 1 {
		t.Fatalf("%d closes (%v), want only the grower's", n, h.log.all())
	}
	waitFor(t, "no partial bytes left", func() bool { return e.PartialBytes() == 0 })
}
