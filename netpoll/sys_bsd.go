//go:build darwin || freebsd

package netpoll

import (
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// acceptConn takes one connection. Darwin has no accept4, so the flags are
// set after the fact under syscall.ForkLock, as the standard library does.
func acceptConn(lfd int) (int, netip.AddrPort, error) {
	for {
		syscall.ForkLock.RLock()
		fd, sa, err := unix.Accept(lfd)
		if err == nil {
			unix.CloseOnExec(fd)
		}
		syscall.ForkLock.RUnlock()
		if err == unix.EINTR || err == unix.ECONNABORTED {
			continue
		}
		if err != nil {
			return -1, netip.AddrPort{}, err
		}
		if err := unix.SetNonblock(fd, true); err != nil {
			unix.Close(fd)
			return -1, netip.AddrPort{}, err
		}
		return fd, fromSockaddr(sa), nil
	}
}
