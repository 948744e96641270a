package burst

import (
	"errors"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgedhq/edged/internal/testenv"
)

// socketPair returns the descriptor of one end of a connected loopback TCP
// pair (as a loop would hold it) and the other end.
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
	t.Cleanup(func() { unix.Close(fd) })
	return fd, peer
}

// TestGroup: Go is bounded by max; Shutdown ends a handshake blocked in a
// read on its Conn and waits for it; the descriptor stays the caller's;
// a Conn after Shutdown is refused.
func TestGroup(t *testing.T) {
	var g Group
	fd, peer := socketPair(t)
	started, ended := make(chan struct{}), make(chan error, 1)
	if !g.Go(1, func() {
		nc, done, err := g.Conn(fd, "test")
		if err != nil {
			ended <- err
			return
		}
		defer done()
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
	// fd is still open and connected: the peer gets what is written on it.
	if _, err := unix.Write(fd, []byte("x")); err != nil {
		t.Fatalf("write on the caller's descriptor after Shutdown: %v", err)
	}
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := peer.Read(make([]byte, 1)); err != nil {
		t.Fatalf("peer read: %v", err)
	}
	if _, _, err := g.Conn(fd, "test"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Conn after Shutdown: %v, want ErrClosed", err)
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
