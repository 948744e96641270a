package capture

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// socketBuffer is the capture socket's receive buffer: a burst of 64 KiB
// loopback segments fills the default (about 200 KiB) at once.
const socketBuffer = 8 << 20

// afPacket is an AF_PACKET SOCK_RAW socket bound to one interface.
type afPacket struct {
	fd  int
	oob []byte
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// openSource opens the capture socket. It is created with protocol 0, which
// receives nothing, gets its filter, and only then is bound with ETH_P_ALL,
// so no packet outside the filter is ever queued on it (packet(7)).
func openSource(iface string, port int) (_ packetSource, err error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("find interface %q: %w", iface, err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open capture socket: %w", os.NewSyscallError("socket", err))
	}
	defer func() {
		if err != nil {
			unix.Close(fd)
		}
	}()
	raw, err := filterProgram(port, ifi.Flags&net.FlagLoopback != 0)
	if err != nil {
		return nil, err
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
		return nil, fmt.Errorf("attach capture filter: %w", os.NewSyscallError("setsockopt", err))
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		return nil, fmt.Errorf("enable timestamps: %w", os.NewSyscallError("setsockopt", err))
	}
	tv := unix.NsecToTimeval(pollInterval.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return nil, fmt.Errorf("set read timeout: %w", os.NewSyscallError("setsockopt", err))
	}
	// Best effort: the caller sees drops in RecordStats.Dropped.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketBuffer) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, socketBuffer)
	}
	sa := unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}
	if err := unix.Bind(fd, &sa); err != nil {
		return nil, fmt.Errorf("bind capture socket to %s: %w", iface, os.NewSyscallError("bind", err))
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		return nil, fmt.Errorf("read capture socket address: %w", os.NewSyscallError("getsockname", err))
	}
	if ll, ok := got.(*unix.SockaddrLinklayer); !ok || (ll.Hatype != unix.ARPHRD_ETHER && ll.Hatype != unix.ARPHRD_LOOPBACK) {
		hw := -1
		if ok {
			hw = int(ll.Hatype)
		}
		return nil, fmt.Errorf("capture on %s (ARPHRD %d; Ethernet and loopback only): %w", iface, hw, ErrLinkType)
	}
	return &afPacket{fd: fd, oob: make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{}))))}, nil
}

func (a *afPacket) read(buf []byte) (n, orig int, ts time.Time, err error) {
	// MSG_TRUNC: the result is the packet's real length even when longer
	// than buf (packet(7)).
	orig, oobn, _, _, err := unix.Recvmsg(a.fd, buf, a.oob, unix.MSG_TRUNC)
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
		return 0, 0, ts, nil
	}
	if err != nil {
		return 0, 0, ts, fmt.Errorf("read capture socket: %w", os.NewSyscallError("recvmsg", err))
	}
	ts = time.Now()
	if msgs, perr := unix.ParseSocketControlMessage(a.oob[:oobn]); perr == nil {
		for _, m := range msgs {
			if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SO_TIMESTAMPNS && len(m.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
				t := (*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
				ts = time.Unix(int64(t.Sec), int64(t.Nsec))
			}
		}
	}
	return min(orig, len(buf)), orig, ts, nil
}

func (a *afPacket) dropped() uint32 {
	st, err := unix.GetsockoptTpacketStats(a.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return 0
	}
	return st.Drops
}

func (a *afPacket) close() error {
	if err := unix.Close(a.fd); err != nil {
		return os.NewSyscallError("close", err)
	}
	return nil
}
