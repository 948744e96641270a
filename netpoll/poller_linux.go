package netpoll

import (
	"os"

	"golang.org/x/sys/unix"
)

type poller struct {
	epfd   int
	wakefd int
	raw    [maxEvents]unix.EpollEvent
	wakes  uint32 // wake-ups reported since the eventfd was last read
}

func openPoller() (p *poller, err error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	defer func() {
		if err != nil {
			unix.Close(epfd)
		}
	}()
	wfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("eventfd", err)
	}
	defer func() {
		if err != nil {
			unix.Close(wfd)
		}
	}()
	p = &poller{epfd: epfd, wakefd: wfd}
	if err := p.ctl(unix.EPOLL_CTL_ADD, wfd, unix.EPOLLIN|unix.EPOLLET, cookieWake); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *poller) ctl(op, fd int, events uint32, cookie uint64) error {
	ev := unix.EpollEvent{Events: events}
	// x/sys/unix splits the 64-bit epoll_data into Fd and Pad.
	ev.Fd = int32(uint32(cookie))
	ev.Pad = int32(uint32(cookie >> 32))
	if err := unix.EpollCtl(p.epfd, op, fd, &ev); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	return nil
}

func (p *poller) addListener(fd, group int) error {
	return p.ctl(unix.EPOLL_CTL_ADD, fd, unix.EPOLLIN, cookieListener|uint64(group))
}

const connEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET

func (p *poller) addConn(fd int, cookie uint64) error {
	return p.ctl(unix.EPOLL_CTL_ADD, fd, connEvents, cookie)
}

func (p *poller) armWrite(fd int, cookie uint64, on bool) error {
	ev := uint32(connEvents)
	if on {
		ev |= unix.EPOLLOUT
	}
	return p.ctl(unix.EPOLL_CTL_MOD, fd, ev, cookie)
}

func (p *poller) wait(evs []event, timeoutMs int) (int, error) {
	n, err := unix.EpollWait(p.epfd, p.raw[:len(evs)], timeoutMs)
	if err != nil {
		if err == unix.EINTR {
			return 0, nil
		}
		return 0, os.NewSyscallError("epoll_wait", err)
	}
	for i := 0; i < n; i++ {
		r := &p.raw[i]
		evs[i] = event{
			cookie:   uint64(uint32(r.Fd)) | uint64(uint32(r.Pad))<<32,
			readable: r.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0,
			writable: r.Events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0,
			hangup:   r.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0,
		}
	}
	return n, nil
}

var wakeVal = [8]byte{1, 0, 0, 0, 0, 0, 0, 0} // eventfd takes a host-endian uint64; 1 on little-endian hosts

func (p *poller) wake() error {
	for {
		_, err := unix.Write(p.wakefd, wakeVal[:])
		switch err {
		case nil, unix.EAGAIN: // EAGAIN: the counter is saturated, a wake-up is pending anyway
			return nil
		case unix.EINTR:
			continue
		default:
			return os.NewSyscallError("write eventfd", err)
		}
	}
}

// wakeDrainEvery is how many wake-ups drainWake lets pass between reads of
// the eventfd. Not reading is safe because the eventfd is registered
// edge-triggered and every write(2) to it raises a new edge even while its
// counter is non-zero (eventfd_write calls wake_up_locked_poll on each
// write, and ep_poll_callback requeues an EPOLLET item on every wake-up:
// fs/eventfd.c, fs/eventpoll.c; TestWakeEdgePerWrite checks it). Reading now
// and then keeps the counter far from its 2^64-2 ceiling; it saves the read
// syscall on all but one in wakeDrainEvery cross-loop wake-ups.
const wakeDrainEvery = 1024

func (p *poller) drainWake() {
	if p.wakes++; p.wakes < wakeDrainEvery {
		return
	}
	p.wakes = 0
	var b [8]byte
	unix.Read(p.wakefd, b[:]) // one read resets the counter; EAGAIN means nothing pending
}

func (p *poller) close() error {
	err1 := unix.Close(p.wakefd)
	err2 := unix.Close(p.epfd)
	if err1 != nil {
		return os.NewSyscallError("close eventfd", err1)
	}
	if err2 != nil {
		return os.NewSyscallError("close epoll", err2)
	}
	return nil
}

func (p *poller) delListener(fd int) error {
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	return nil
}

// delConn stops watching a connection's descriptor (it is being drained
// before its close; see Loop.drainClose).
func (p *poller) delConn(fd int) error {
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	return nil
}
