package netpoll

import (
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sysRead and sysWrite are for non-blocking descriptors only: they are raw
// syscalls, which skip the runtime's entersyscall/exitsyscall. Those would
// make the loop's P look as if it were in a syscall and, whenever every P
// had been idle (a parked loop that just woke: WaitPark at moderate load),
// wake the runtime's sysmon thread from its deep sleep (entersyscall calls
// entersyscallWakeSysmon when sched.sysmonwait is set, runtime/proc.go),
// which then polls every 20 us for a millisecond: a thread wake-up or
// more per message. A non-blocking read or write returns within
// microseconds, which is what RawSyscall requires.
//
// A raw syscall also holds up a stop-the-world for its length (the
// goroutine counts as running and cannot be preempted inside it), so one
// write copies at most maxRawWrite bytes: flush loops until the kernel
// pushes back, so a larger buffer only takes more calls.
func sysRead(fd int, p []byte) (int, error) { return rawIO(unix.SYS_READ, fd, p) }
func sysWrite(fd int, p []byte) (int, error) {
	return rawIO(unix.SYS_WRITE, fd, p[:min(len(p), maxRawWrite)])
}

// maxRawWrite bounds one raw write(2): copying 256 KiB into a socket takes
// tens of microseconds.
const maxRawWrite = 256 << 10

// rawIO is read(2) or write(2) (trap) as a raw syscall, again on EINTR.
func rawIO(trap uintptr, fd int, p []byte) (int, error) {
	var b unsafe.Pointer
	if len(p) > 0 {
		b = unsafe.Pointer(&p[0])
	}
	for {
		n, _, e := unix.RawSyscall(trap, uintptr(fd), uintptr(b), uintptr(len(p)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return -1, e
		}
		return int(n), nil
	}
}

// acceptConn takes one connection, non-blocking and close-on-exec in one
// call. It passes no address buffer: x/sys/unix's Accept4 allocates a
// Sockaddr for every connection, and the engine never needs the peer's
// address at accept time (Conn.RemoteAddr asks the kernel when wanted).
func acceptConn(lfd int) (int, error) {
	for {
		fd, _, e := unix.Syscall6(unix.SYS_ACCEPT4, uintptr(lfd), 0, 0, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
		if e == unix.EINTR || e == unix.ECONNABORTED {
			continue
		}
		if e != 0 {
			return -1, e
		}
		return int(fd), nil
	}
}

// peerAddr returns the peer's address without allocating (getpeername into
// a stack buffer; unix.Getpeername allocates a Sockaddr).
func peerAddr(fd int) netip.AddrPort {
	var rsa unix.RawSockaddrAny
	n := uint32(unix.SizeofSockaddrAny)
	_, _, e := unix.RawSyscall(unix.SYS_GETPEERNAME, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)))
	if e != 0 {
		return netip.AddrPort{}
	}
	switch rsa.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&rsa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port)) // network byte order
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(p[0])<<8|uint16(p[1]))
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&rsa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(p[0])<<8|uint16(p[1]))
	}
	return netip.AddrPort{}
}

// outQueued returns the bytes the kernel still holds for fd's peer: not yet
// sent, or sent and not yet acknowledged (SIOCOUTQ). On an error it reports
// 0: the socket is closed as it would have been without draining.
func outQueued(fd int) int {
	n, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
	if err != nil {
		return 0
	}
	return n
}
