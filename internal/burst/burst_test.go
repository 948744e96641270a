package burst

import (
	"errors"
	"io"
	"net"
	"runtime/debug"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgedhq/edged/internal/testenv"
)

// socketPair returns the descriptor of one end of a connected loopback TCP
// pair (as a loop would hold it, non-blocking; the caller owns it) and the
// other end.
func socketPair(t *testing.T) (int, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	fd := testenv.FD(t, c)
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	return fd, peer
}

// TestGroup: Go is bounded by max; Shutdown ends a handshake blocked in a
// read on its Conn, closes the socket and waits; a Detach after Shutdown
// fails; a Conn after Shutdown is refused.
func TestGroup(t *testing.T) {
	var g Group
	fd, peer := socketPair(t)
	started, ended := make(chan struct{}), make(chan error, 1)
	var nc *Conn
	if !g.Go(1, func() {
		var err error
		nc, err = g.Conn(fd, "test")
		if err != nil {
			ended <- err
			return
		}
		close(started)
		_, err = nc.Read(make([]byte, 1)) // blocks: the peer sends nothing
		ended <- err
	}) {
		t.Fatal("Go refused the first handshake")
	}
	<-started
	if g.Go(1, func() { t.Error("a second handshake ran over max 1") }) {
		t.Fatal("Go took a second handshake over max 1")
	}
	if n := g.InProgress(); n != 1 {
		t.Fatalf("in progress %d, want 1", n)
	}
	g.Shutdown()
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("the blocked read returned no error after Shutdown")
		}
	default:
		t.Fatal("Shutdown returned before the handshake ended")
	}
	if n := g.InProgress(); n != 0 {
		t.Fatalf("in progress %d after Shutdown, want 0", n)
	}
	if d, err := nc.Detach(); err == nil {
		unix.Close(d)
		t.Fatal("Detach after Shutdown gave a descriptor")
	}
	// The socket is closed: the peer reads its end.
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := peer.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("peer read of a socket Shutdown closed: %d bytes, %v; want EOF", n, err)
	}
	fd2, _ := socketPair(t)
	defer unix.Close(fd2)
	if _, err := g.Conn(fd2, "test"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Conn after Shutdown: %v, want ErrClosed", err)
	}
}

// TestDetach: what the handshake did not read stays in the socket for the
// descriptor Detach returns, which is non-blocking and outside Go's
// poller; the Conn is closed and no longer tracked.
func TestDetach(t *testing.T) {
	var g Group
	fd, peer := socketPair(t)
	nc, err := g.Conn(fd, "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := peer.Write([]byte("ab")); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 1)
	if _, err := io.ReadFull(nc, b); err != nil || b[0] != 'a' {
		t.Fatalf("read %q, %v; want a", b, err)
	}
	d, err := nc.Detach()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(d)
	if _, err := nc.Read(b); err == nil {
		t.Fatal("the Conn still reads after Detach")
	}
	g.mu.Lock()
	n := len(g.active)
	g.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d Conns tracked after Detach, want 0", n)
	}
	if fl, err := unix.FcntlInt(uintptr(d), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK == 0 {
		t.Fatalf("detached descriptor flags %#x, %v; want O_NONBLOCK", fl, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := unix.Read(d, b)
		if err == nil && n == 1 && b[0] == 'b' {
			break
		}
		if err != unix.EAGAIN || time.Now().After(deadline) {
			t.Fatalf("read on the detached descriptor: %d %q %v; want b", n, b[:max(n, 0)], err)
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := unix.Read(d, b); err != unix.EAGAIN {
		t.Fatalf("read on an empty detached descriptor: %v, want EAGAIN (non-blocking)", err)
	}
	if _, err := unix.Write(d, []byte("c")); err != nil {
		t.Fatal(err)
	}
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(peer, b); err != nil || b[0] != 'c' {
		t.Fatalf("peer read %q, %v; want c", b, err)
	}
}

// TestBurstWindow: After ends close together arm a scavenge check; ends
// spread over more than Window do not add up to a burst.
func TestBurstWindow(t *testing.T) {
	var c Counter
	for range After - 1 {
		c.Ended()
	}
	if c.armed.Load() {
		t.Fatalf("armed after %d ends, want %d", After-1, After)
	}
	// The window began over a minute ago: the next end starts a new
	// one, and the 999 before it no longer count.
	c.window.Store(time.Now().Add(-Window - time.Second).UnixNano())
	c.Ended()
	if c.armed.Load() || c.since.Load() != 1 {
		t.Fatalf("an end after the window: armed %v, count %d; want false, 1", c.armed.Load(), c.since.Load())
	}
	for range After - 1 {
		c.Ended()
	}
	if !c.armed.Load() {
		t.Fatalf("not armed after %d ends within the window", After)
	}
	c.inProgress.Add(1) // keep the armed check from scavenging in this test
	t.Cleanup(func() { c.inProgress.Add(-1) })
}

// TestHeadroom: a burst of a Counter with Headroom raises the collector's
// percent while it is armed and puts it back when the scavenge runs; a
// percent changed meanwhile (the GOGC knob) is left alone; a Headroom the
// live heap already gives changes nothing.
func TestHeadroom(t *testing.T) {
	old := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(old) })
	gogc := func() int { return int(readUint("/gc/gogc:percent")) }
	burst := func(c *Counter) {
		for range After {
			c.Ended()
		}
		if !c.armed.Load() {
			t.Fatal("not armed after a burst")
		}
	}
	// waitScavenge waits for the armed check (Quiet after the burst's
	// last end) to find the burst over and scavenge.
	waitScavenge := func(c *Counter) {
		t.Helper()
		deadline := time.Now().Add(4*Quiet + 5*time.Second)
		for c.Scavenges() == 0 {
			if time.Now().After(deadline) {
				t.Fatal("no scavenge after the burst")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	c := &Counter{Headroom: 1 << 30}
	burst(c)
	if p := gogc(); p <= 100 {
		t.Fatalf("GOGC %d while a burst with 1 GiB of headroom is armed, want > 100", p)
	}
	waitScavenge(c)
	if p := gogc(); p != 100 {
		t.Fatalf("GOGC %d after the scavenge, want 100 back", p)
	}

	c = &Counter{Headroom: 1 << 30}
	burst(c)
	debug.SetGCPercent(300) // an operator's change during the burst
	waitScavenge(c)
	if p := gogc(); p != 300 {
		t.Fatalf("GOGC %d after the scavenge, want the operator's 300 kept", p)
	}
	debug.SetGCPercent(100)

	c = &Counter{Headroom: 1} // the live heap gives more room than this already
	burst(c)
	if p := gogc(); p != 100 {
		t.Fatalf("GOGC %d with 1 byte of headroom, want 100 unchanged", p)
	}
	waitScavenge(c)
	if p := gogc(); p != 100 {
		t.Fatalf("GOGC %d after the scavenge, want 100", p)
	}

	// A Group shut down while its burst is armed puts the percent back;
	// the check that finds the burst over later does not lower it twice.
	var g Group
	g.Headroom = 1 << 30
	burst(&g.Counter)
	if p := gogc(); p <= 100 {
		t.Fatalf("GOGC %d while the Group's burst is armed, want > 100", p)
	}
	g.Shutdown()
	if p := gogc(); p != 100 {
		t.Fatalf("GOGC %d after Shutdown, want 100 back", p)
	}
	waitScavenge(&g.Counter)
	gc.Lock()
	raised, set := gc.raised, gc.set
	gc.Unlock()
	if raised != 0 || set != 0 {
		t.Fatalf("after every burst ended: raised %d, set %d; want 0, 0", raised, set)
	}
}
