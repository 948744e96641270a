//go:build unix

package testenv

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// FD returns a non-blocking descriptor of its own for c's socket (as an
// event loop holds one) and closes c; the caller closes the descriptor.
func FD(t testing.TB, c net.Conn) int {
	t.Helper()
	f, err := c.(*net.TCPConn).File()
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	return fd
}
