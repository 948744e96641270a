package netpoll

import (
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgedhq/edged/internal/testenv"
)

// TestCloseDetachedReadsInputFirst: a detached connection whose client sent
// something the old process never read, and which has not read what it is
// owed yet, gets all of it and then the end of the stream, not a reset (a
// close with unread input resets the connection and drops what the kernel
// still holds to send).
func TestCloseDetachedReadsInputFirst(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 16<<10) })
		return serr
	}}
	client, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	fd := testenv.FD(t, sc)
	// Input the server never read, then output the client does not read
	// until after the close: the kernel still holds most of it then.
	if _, err := client.Write([]byte("unread input")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // it is in the server's receive queue
	owed := make([]byte, 1<<20)
	for i := range owed {
		owed[i] = byte(i)
	}
	done := make(chan struct{})
	go func() {
		CloseDetached([]int{fd}, map[int][]byte{fd: owed}, 0)
		close(done)
	}()
	select {
	case <-done: // closed at drainTime: the client has read nothing
	case <-time.After(drainTime + 5*time.Second):
		t.Fatal("CloseDetached did not return")
	}
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(client)
	if err != nil {
		t.Fatalf("after %d of %d owed bytes: %v (want them all, then the end of the stream)", len(got), len(owed), err)
	}
	if len(got) != len(owed) {
		t.Fatalf("read %d bytes, want %d", len(got), len(owed))
	}
	for i := range got {
		if got[i] != owed[i] {
			t.Fatalf("byte %d differs", i)
		}
	}
}
