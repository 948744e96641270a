package netpoll

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

type poller struct {
	epfd   int
	wakefd int
	raw    [maxEvents]unix.EpollEvent
	wakes  uint32 // wake-ups reported since the eventfd was last read

	// WaitPark (enablePark): the epoll descriptor as a file registered
	// with the runtime's poller, which owns it from then on.
	file          *os.File
	rc            syscall.RawConn
	try           func(uintptr) bool // p.tryWait, bound once: a closure per park would allocate
	deadline      time.Time          // the file's read deadline as last set
	deadlineStale bool               // it expired: set it again even if equal
	want, n       int                // tryWait's buffer length and result
	werr          error
	looks         int  // tryWait calls in this park
	parked        bool // the last park slept (did not return from its first look)
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
	var n int
	var err error
	if timeoutMs == 0 {
		n, err = p.look(len(evs))
	} else {
		n, err = unix.EpollWait(p.epfd, p.raw[:len(evs)], timeoutMs)
	}
	if err != nil {
		if err == unix.EINTR {
			return 0, nil
		}
		return 0, os.NewSyscallError("epoll_wait", err)
	}
	return p.events(evs, n), nil
}

// look is epoll_wait with a zero timeout into p.raw[:max], a raw syscall:
// it does not block (see sysRead).
func (p *poller) look(max int) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(p.epfd), uintptr(unsafe.Pointer(&p.raw[0])), uintptr(max), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// events converts the first n raw events into evs.
func (p *poller) events(evs []event, n int) int {
	for i := 0; i < n; i++ {
		r := &p.raw[i]
		evs[i] = event{
			cookie:   uint64(uint32(r.Fd)) | uint64(uint32(r.Pad))<<32,
			readable: r.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0,
			writable: r.Events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0,
			hangup:   r.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0,
		}
	}
	return n
}

const canPark = true

// enablePark registers the epoll descriptor with the Go runtime's poller
// (WaitPark): an epoll set is readable while it has events ready, and
// nesting it in the runtime's epoll set gives the runtime an edge for every
// readiness callback the set gets (ep_poll_callback wakes the set's own
// poll wait queue on each, fs/eventpoll.c), so every new event, wake-ups
// included, makes a parked loop runnable. From here on p.file owns the
// descriptor.
func (p *poller) enablePark() error {
	if err := unix.SetNonblock(p.epfd, true); err != nil {
		return os.NewSyscallError("fcntl", err)
	}
	f := os.NewFile(uintptr(p.epfd), "epoll") // nonblocking: NewFile registers it with the runtime's poller
	rc, err := f.SyscallConn()
	if err == nil {
		// Only a file the runtime polls takes a deadline: this
		// reports whether the registration worked.
		err = f.SetReadDeadline(time.Time{})
	}
	if err != nil {
		f.Close()
		p.epfd = -1
		return fmt.Errorf("register epoll with the runtime poller: %w", err)
	}
	p.file, p.rc = f, rc
	p.try = p.tryWait
	return nil
}

// park: see poller.go. RawConn.Read calls tryWait, which looks at the epoll
// set without blocking, and parks only after a look found nothing; the
// runtime clears the file's readiness before the first look, so an event
// that arrives after that look raises the edge that ends the park. A look
// found something: the readiness it leaves behind at most costs one
// spurious look later.
func (p *poller) park(evs []event, deadline time.Time) (int, error) {
	if p.deadlineStale || !deadline.Equal(p.deadline) {
		if err := p.file.SetReadDeadline(deadline); err != nil {
			return 0, fmt.Errorf("set epoll read deadline: %w", err)
		}
		p.deadline, p.deadlineStale = deadline, false
	}
	p.want, p.n, p.werr, p.looks = len(evs), 0, nil, 0
	err := p.rc.Read(p.try)
	// Slept: looked more than once, or looked, found nothing and slept
	// until the deadline (the runtime does not look again then).
	p.parked = p.looks != 1 || errors.Is(err, os.ErrDeadlineExceeded)
	if p.werr != nil {
		return 0, os.NewSyscallError("epoll_wait", p.werr)
	}
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// Set the deadline again next time even if it is equal: a
			// wall clock stepped back could otherwise repeat an
			// expired one, and every park would return at once.
			p.deadlineStale = true
			return 0, nil // tryWait found nothing (or did not run): the next wait looks again
		}
		return 0, fmt.Errorf("park on epoll: %w", err)
	}
	return p.events(evs, p.n), nil
}

// pending reports whether the epoll set has events ready, without taking
// them (ppoll(2) with a zero timeout on the epoll descriptor: poll(2) does
// not exist on arm64, riscv64 or loong64; raw: it does not block). Safe
// from any goroutine while the poller is open.
func (p *poller) pending() bool {
	fds := [1]unix.PollFd{{Fd: int32(p.epfd), Events: unix.POLLIN}}
	var zero unix.Timespec
	n, _, e := unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), 1, uintptr(unsafe.Pointer(&zero)), 0, 0, 0)
	return e == 0 && n > 0
}

// tryWait is park's look at the epoll set; true ends the park. EINTR looks
// again: giving up on it would park with events ready and no new edge.
func (p *poller) tryWait(uintptr) bool {
	p.looks++
	for {
		n, err := p.look(p.want)
		if err == unix.EINTR {
			continue
		}
		p.n, p.werr = n, err
		return n > 0 || err != nil
	}
}

var wakeVal = [8]byte{1, 0, 0, 0, 0, 0, 0, 0} // eventfd takes a host-endian uint64; 1 on little-endian hosts

func (p *poller) wake() error {
	for {
		_, err := sysWrite(p.wakefd, wakeVal[:]) // raw: a poster may be a loop (see sysRead)
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
	sysRead(p.wakefd, b[:]) // one read resets the counter; EAGAIN means nothing pending
}

func (p *poller) close() error {
	err1 := unix.Close(p.wakefd)
	var err2 error
	if p.file != nil {
		err2 = p.file.Close() // the runtime's poller forgets it first
	} else if p.epfd >= 0 {
		err2 = unix.Close(p.epfd)
	}
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
