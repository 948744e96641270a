//go:build darwin || freebsd

package netpoll

import (
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

func sysRead(fd int, p []byte) (int, error)  { return again(unix.Read, fd, p) }
func sysWrite(fd int, p []byte) (int, error) { return again(unix.Write, fd, p) }

// again calls f until it does not fail with EINTR.
func again(f func(int, []byte) (int, error), fd int, p []byte) (int, error) {
	for {
		n, err := f(fd, p)
		if err != unix.EINTR {
			return n, err
		}
	}
}

// acceptConn takes one connection. Darwin has no accept4, so the flags are
// set after the fact under syscall.ForkLock, as the standard library does.
func acceptConn(lfd int) (int, error) {
	for {
		syscall.ForkLock.RLock()
		fd, _, err := unix.Accept(lfd)
		if err == nil {
			unix.CloseOnExec(fd)
		}
		syscall.ForkLock.RUnlock()
		if err == unix.EINTR || err == unix.ECONNABORTED {
			continue
		}
		if err != nil {
			return -1, err
		}
		if err := unix.SetNonblock(fd, true); err != nil {
			unix.Close(fd)
			return -1, err
		}
		return fd, nil
	}
}

func peerAddr(fd int) netip.AddrPort {
	sa, err := unix.Getpeername(fd)
	if err != nil {
		return netip.AddrPort{}
	}
	return fromSockaddr(sa)
}

// outQueued reports 0: the kqueue side closes at once, as before draining
// existed (Darwin's SO_NWRITE and FreeBSD's FIONWRITE would serve, but that
// side is compile-checked only, never run, so it is left alone).
func outQueued(fd int) int { return 0 }
