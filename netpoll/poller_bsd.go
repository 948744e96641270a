//go:build darwin || freebsd

package netpoll

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// The kqueue poller is compile-checked only: CI vets it for freebsd and
// darwin, but no machine of this project can run it.

type poller struct {
	kq  int
	raw [maxEvents]unix.Kevent_t
	// cookies maps an fd to its cookie. Kevent_t.Udata is a pointer field,
	// and integers stored there would look like bad pointers to the GC.
	cookies []uint64
	parked  bool // always false: no park here
}

// wakeIdent is the EVFILT_USER identifier used for wake-ups.
const wakeIdent = 1

func openPoller() (p *poller, err error) {
	kq, err := unix.Kqueue()
	if err != nil {
		return nil, os.NewSyscallError("kqueue", err)
	}
	defer func() {
		if err != nil {
			unix.Close(kq)
		}
	}()
	unix.CloseOnExec(kq)
	p = &poller{kq: kq}
	ev := unix.Kevent_t{Ident: wakeIdent, Filter: unix.EVFILT_USER, Flags: unix.EV_ADD | unix.EV_CLEAR}
	if err := p.kevent(ev); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *poller) kevent(evs ...unix.Kevent_t) error {
	for {
		_, err := unix.Kevent(p.kq, evs, nil, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("kevent", err)
		}
		return nil
	}
}

func (p *poller) setCookie(fd int, cookie uint64) {
	for fd >= len(p.cookies) {
		p.cookies = append(p.cookies, 0)
	}
	p.cookies[fd] = cookie
}

func (p *poller) cookie(fd int) uint64 {
	if fd < len(p.cookies) {
		return p.cookies[fd]
	}
	return 0
}

func (p *poller) addListener(fd, group int) error {
	var ev unix.Kevent_t
	unix.SetKevent(&ev, fd, unix.EVFILT_READ, unix.EV_ADD)
	p.setCookie(fd, cookieListener|uint64(group))
	return p.kevent(ev)
}

func (p *poller) addConn(fd int, cookie uint64) error {
	var ev unix.Kevent_t
	unix.SetKevent(&ev, fd, unix.EVFILT_READ, unix.EV_ADD|unix.EV_CLEAR)
	p.setCookie(fd, cookie)
	return p.kevent(ev)
}

func (p *poller) armWrite(fd int, cookie uint64, on bool) error {
	var ev unix.Kevent_t
	flags := unix.EV_ADD | unix.EV_CLEAR
	if !on {
		flags = unix.EV_DELETE
	}
	unix.SetKevent(&ev, fd, unix.EVFILT_WRITE, flags)
	err := p.kevent(ev)
	if !on && err != nil {
		return nil // deleting a filter that was never added reports ENOENT
	}
	return err
}

func (p *poller) wait(evs []event, timeoutMs int) (int, error) {
	var ts *unix.Timespec
	if timeoutMs >= 0 {
		t := unix.NsecToTimespec(int64(timeoutMs) * 1e6)
		ts = &t
	}
	n, err := unix.Kevent(p.kq, nil, p.raw[:len(evs)], ts)
	if err != nil {
		if err == unix.EINTR {
			return 0, nil
		}
		return 0, os.NewSyscallError("kevent", err)
	}
	for i := 0; i < n; i++ {
		r := &p.raw[i]
		if r.Filter == unix.EVFILT_USER {
			evs[i] = event{cookie: cookieWake, readable: true}
			continue
		}
		eof := r.Flags&(unix.EV_EOF|unix.EV_ERROR) != 0
		evs[i] = event{
			cookie:   p.cookie(int(r.Ident)),
			readable: r.Filter == unix.EVFILT_READ,
			writable: r.Filter == unix.EVFILT_WRITE,
			hangup:   eof,
		}
	}
	return n, nil
}

func (p *poller) wake() error {
	ev := unix.Kevent_t{Ident: wakeIdent, Filter: unix.EVFILT_USER, Fflags: unix.NOTE_TRIGGER}
	return p.kevent(ev)
}

func (p *poller) drainWake() {} // EV_CLEAR resets the user event when it is reported

func (p *poller) close() error {
	if err := unix.Close(p.kq); err != nil {
		return os.NewSyscallError("close kqueue", err)
	}
	return nil
}

func (p *poller) delListener(fd int) error {
	var ev unix.Kevent_t
	unix.SetKevent(&ev, fd, unix.EVFILT_READ, unix.EV_DELETE)
	return p.kevent(ev)
}

// delConn stops watching a connection's descriptor: both filters go (a
// filter that was never added reports ENOENT, which is not an error here).
func (p *poller) delConn(fd int) error {
	var r, w unix.Kevent_t
	unix.SetKevent(&r, fd, unix.EVFILT_READ, unix.EV_DELETE)
	unix.SetKevent(&w, fd, unix.EVFILT_WRITE, unix.EV_DELETE)
	p.kevent(r)
	p.kevent(w)
	p.setCookie(fd, 0)
	return nil
}

// canPark: WaitPark is not implemented on kqueue (a kqueue descriptor can
// be polled by the runtime's kqueue as an epoll set is by its epoll, but no
// machine of this project can test it): WaitPark runs as WaitBlock.
const canPark = false

func (p *poller) enablePark() error { return ErrUnsupported }

func (p *poller) park(evs []event, deadline time.Time) (int, error) { return 0, ErrUnsupported }

func (p *poller) pending() bool { return false }
