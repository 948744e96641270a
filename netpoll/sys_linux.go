package netpoll

import (
	"net/netip"

	"golang.org/x/sys/unix"
)

// acceptConn takes one connection, non-blocking and close-on-exec in one call.
func acceptConn(lfd int) (int, netip.AddrPort, error) {
	for {
		fd, sa, err := unix.Accept4(lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err == unix.EINTR || err == unix.ECONNABORTED {
			continue
		}
		if err != nil {
			return -1, netip.AddrPort{}, err
		}
		return fd, fromSockaddr(sa), nil
	}
}
