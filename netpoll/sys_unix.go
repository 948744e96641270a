//go:build linux || darwin || freebsd

package netpoll

import (
	"fmt"
	"net"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// This file and sys_linux.go / sys_bsd.go are the package's syscall funnel:
// every raw call lives here and wraps its error with the call's name.

func sysClose(fd int) error { return unix.Close(fd) }

func isAgain(err error) bool { return err == unix.EAGAIN || err == unix.EWOULDBLOCK }

// isTooManyFiles reports EMFILE/ENFILE from accept: the process or the system
// is out of descriptors, and accepting must pause instead of spinning.
func isTooManyFiles(err error) bool { return err == unix.EMFILE || err == unix.ENFILE }

// resolve turns "host:port" into an address; host may be a name.
func resolve(addr string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return ap, nil
	}
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("resolve %q: %w", addr, err)
	}
	return ta.AddrPort(), nil
}

func sockaddr(ap netip.AddrPort) (unix.Sockaddr, int) {
	a := ap.Addr()
	if a.Is4() || a.Is4In6() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.Unmap().As4()}, unix.AF_INET
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}, unix.AF_INET6
}

func fromSockaddr(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

// listenTCP creates a non-blocking listening socket. With reuse it joins a
// SO_REUSEPORT group; errNoReuse says the option is not available. It is a
// plain TCP socket, never MPTCP (eBPF socket arrays refuse MPTCP sockets).
func listenTCP(ap netip.AddrPort, reuse bool, backlog int) (_ int, err error) {
	sa, family := sockaddr(ap)
	fd, err := unix.Socket(family, unix.SOCK_STREAM, unix.IPPROTO_TCP)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	defer func() {
		if err != nil {
			unix.Close(fd)
		}
	}()
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		return -1, os.NewSyscallError("fcntl", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return -1, os.NewSyscallError("setsockopt SO_REUSEADDR", err)
	}
	if reuse {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return -1, fmt.Errorf("%w: %w", errNoReuse, os.NewSyscallError("setsockopt SO_REUSEPORT", err))
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return -1, os.NewSyscallError("bind", err)
	}
	if err := unix.Listen(fd, backlog); err != nil {
		return -1, os.NewSyscallError("listen", err)
	}
	return fd, nil
}

// probeFree binds a socket to ap without SO_REUSEPORT and closes it. With
// SO_REUSEADDR the bind passes over TIME_WAIT leftovers of an earlier run,
// but not over a listening socket, SO_REUSEPORT or not (Linux
// inet_csk_bind_conflict; BSD in_pcbbind_setup): EADDRINUSE then returns
// ErrAddrInUse.
func probeFree(ap netip.AddrPort) error {
	sa, family := sockaddr(ap)
	fd, err := unix.Socket(family, unix.SOCK_STREAM, unix.IPPROTO_TCP)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	unix.CloseOnExec(fd)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return os.NewSyscallError("setsockopt SO_REUSEADDR", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		if err == unix.EADDRINUSE {
			return fmt.Errorf("%w (is another edged running there?): %w", ErrAddrInUse, os.NewSyscallError("bind", err))
		}
		return os.NewSyscallError("bind", err)
	}
	return nil
}

func localAddr(fd int) (netip.AddrPort, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return netip.AddrPort{}, os.NewSyscallError("getsockname", err)
	}
	return fromSockaddr(sa), nil
}

// tuneConn sets TCP_NODELAY (MQTT acks are tiny and latency-bound) and the
// optional buffer sizes on an accepted socket.
func tuneConn(fd, sndbuf, rcvbuf int) error {
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		return os.NewSyscallError("setsockopt TCP_NODELAY", err)
	}
	if sndbuf > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sndbuf); err != nil {
			return os.NewSyscallError("setsockopt SO_SNDBUF", err)
		}
	}
	if rcvbuf > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf); err != nil {
			return os.NewSyscallError("setsockopt SO_RCVBUF", err)
		}
	}
	return nil
}

// sysShutdownWrite half-closes fd: the FIN goes out after the output the
// kernel holds, and the socket can still be read.
func sysShutdownWrite(fd int) error { return unix.Shutdown(fd, unix.SHUT_WR) }
