package netpoll

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// Handing a running engine's connections to another process (a
// zero-downtime upgrade): the old engine Freezes its loops, Exports every
// connection (descriptor, partial input, unwritten output) for the caller
// to send with SCM_RIGHTS, and then either Thaws (the new process failed:
// nothing happened) or Abandons (the loops exit without closing a
// connection: the new process holds them). The new engine is made with
// Config.Listeners (the inherited listening sockets) and Restores each
// connection before Start. A connection with a Transport (TLS) is exported
// with Transport set and its output wrapped: its record state is the
// transport's, which the caller exports beside it and gives to
// RestoreTransport.

// ErrNotFrozen is returned by Export and Abandon on an engine that is not
// frozen; ErrFrozen by Freeze on one that is.
var (
	ErrNotFrozen = errors.New("netpoll: engine not frozen")
	ErrFrozen    = errors.New("netpoll: engine already frozen")
)

// freezer is the engine's freeze state.
type freezer struct {
	mu      sync.Mutex // guards the fields below
	on      bool
	parked  sync.WaitGroup
	release chan bool // closed/sent on thaw (false) or abandon (true)
}

// Freeze parks every loop at the end of an iteration, after its output was
// flushed, and returns once all are parked: no handler runs until Thaw or
// Abandon. It must not be called from a loop.
func (e *Engine) Freeze() error {
	e.mu.Lock()
	started, closed := e.started, e.closed
	e.mu.Unlock()
	if !started || closed {
		return ErrClosed
	}
	f := &e.frz
	f.mu.Lock()
	if f.on {
		f.mu.Unlock()
		return ErrFrozen
	}
	f.on = true
	f.release = make(chan bool, len(e.loops))
	f.parked.Add(len(e.loops))
	e.freezing.Store(true)
	f.mu.Unlock()
	for _, l := range e.loops {
		l.p.wake()
	}
	f.parked.Wait()
	return nil
}

// park is a loop's side of Freeze: it reports whether the loop must exit
// (Abandon) instead of going on (Thaw).
func (l *Loop) park() bool {
	f := &l.e.frz
	f.mu.Lock()
	release := f.release
	f.mu.Unlock()
	f.parked.Done()
	return <-release
}

// Thaw lets the frozen loops go on.
func (e *Engine) Thaw() {
	e.unfreeze(false)
}

// Abandon makes the frozen loops exit without closing their connections or
// calling OnClose: their descriptors were handed to another process. The
// listeners, pollers and every descriptor of this engine are then closed
// (closing a handed-over socket here does not end it: the other process
// holds it). Close must not be called afterwards to close connections; it
// only waits.
func (e *Engine) Abandon() error {
	fds, err := e.Detach()
	for _, fd := range fds {
		sysClose(fd)
	}
	return err
}

// Detach is Abandon without closing the connections: their descriptors
// are returned, open and the caller's (to drain them: a handoff to a
// process that cannot adopt connections, cmd/edged's upgrade).
func (e *Engine) Detach() ([]int, error) {
	if !e.unfreeze(true) {
		return nil, ErrNotFrozen
	}
	e.wg.Wait()
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	e.closing.Store(true)
	var fds []int
	for _, l := range e.loops {
		l.slab.Range(func(slot uint32, c *Conn) bool {
			fds = append(fds, int(c.fd))
			return true
		})
		l.sweepDraining(true) // the loop has stopped: its drains end here
	}
	e.release()
	return fds, nil
}

func (e *Engine) unfreeze(abandon bool) bool {
	f := &e.frz
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.on {
		return false
	}
	f.on = false
	e.freezing.Store(false)
	for range e.loops {
		f.release <- abandon
	}
	return true
}

// Exported is a connection of a frozen engine.
type Exported struct {
	Loop    int
	FD      int
	Handle  Handle
	User    uint64 // Conn.User
	Pending []byte // partial input not yet consumed by OnData
	// PendingPlain: with a Transport, Pending's first PendingPlain bytes
	// are payload already unwrapped, the rest wire bytes.
	PendingPlain int
	Output       []byte // output the kernel has not taken (wire bytes: a Transport's is wrapped first)
	// Transport: the connection's bytes pass through Config.Transport.
	Transport bool
}

// Export lists every connection of a frozen engine, with copies of its
// buffers. The descriptors stay the engine's.
func (e *Engine) Export() ([]Exported, error) {
	e.frz.mu.Lock()
	on := e.frz.on
	e.frz.mu.Unlock()
	if !on {
		return nil, ErrNotFrozen
	}
	var out []Exported
	for _, l := range e.loops {
		l.slab.Range(func(slot uint32, c *Conn) bool {
			x := Exported{Loop: l.id, FD: int(c.fd), Handle: c.Handle(), User: c.user, Transport: c.flags&flagTransport != 0}
			if c.pend != 0 {
				x.Pending = append([]byte(nil), l.bufs[c.pend-1].b...)
				x.PendingPlain = l.bufs[c.pend-1].plain
			}
			if x.Transport && c.out != 0 {
				// The loop is parked: wrapping here, off it, races
				// with nothing.
				l.wrapPending(c)
			}
			if c.out != 0 {
				// Output is wire bytes only: what a failed wrap left
				// unwrapped is not sent in the clear but dropped, as
				// the flush that would have closed the connection
				// for it drops it (its deliveries go again, from the
				// inbox, and its acknowledgements are asked again).
				b := &l.bufs[c.out-1]
				x.Output = append([]byte(nil), b.b[b.off:len(b.b)-b.plain]...)
			}
			out = append(out, x)
			return true
		})
	}
	return out, nil
}

// Conn returns a frozen engine's connection h (nil if it is gone), for the
// handler's export of its own state; valid until Thaw or Abandon.
func (e *Engine) Conn(h Handle) *Conn {
	if int(h>>56) >= len(e.loops) {
		return nil
	}
	return e.loops[h>>56].Conn(h)
}

// Restore adds a handed-over connection to loop before Start: fd (now this
// engine's), the partial input to prepend to what it reads next, and the
// output still to write. It returns the connection (valid until Start) for
// the handler to restore its own state; OnOpen is not called.
func (e *Engine) Restore(loop, fd int, pending, output []byte) (*Conn, error) {
	return e.restore(loop, fd, nil, pending, 0, output)
}

// RestoreTransport is Restore for a connection of Config.Transport:
// Transport.Attach gets state first (as with Adopt), pending's first plain
// bytes are payload already unwrapped and output is wire bytes.
func (e *Engine) RestoreTransport(loop, fd int, state any, pending []byte, plain int, output []byte) (*Conn, error) {
	if e.cfg.Transport == nil || state == nil {
		return nil, errors.New("netpoll: restore: no transport")
	}
	if plain < 0 || plain > len(pending) {
		return nil, fmt.Errorf("netpoll: restore: %d payload bytes in %d of partial input", plain, len(pending))
	}
	return e.restore(loop, fd, state, pending, plain, output)
}

func (e *Engine) restore(loop, fd int, state any, pending []byte, plain int, output []byte) (*Conn, error) {
	e.mu.Lock()
	started := e.started
	e.mu.Unlock()
	if started {
		return nil, errors.New("netpoll: restore after start")
	}
	if loop < 0 || loop >= len(e.loops) {
		return nil, fmt.Errorf("netpoll: restore on loop %d of %d", loop, len(e.loops))
	}
	l := e.loops[loop]
	slot, gen, c, err := l.slab.Alloc()
	if err != nil {
		return nil, fmt.Errorf("netpoll: restore: %w", err)
	}
	*c = Conn{fd: int32(fd), slot: slot, gen: gen, loop: l.gid}
	if state != nil {
		c.flags |= flagTransport
		if err := e.cfg.Transport.Attach(c, state); err != nil {
			e.cfg.Transport.Closed(c)
			l.slab.Free(slot)
			return nil, fmt.Errorf("netpoll: restore fd %d: %w", fd, err)
		}
	}
	if err := l.p.addConn(fd, cookieOf(slot, gen)); err != nil {
		if state != nil {
			e.cfg.Transport.Closed(c)
		}
		l.slab.Free(slot)
		return nil, fmt.Errorf("netpoll: restore fd %d: %w", fd, err)
	}
	l.conns.Add(1)
	if len(pending) > 0 {
		l.chargePartial(int64(capFor(len(pending))))
		c.pend = l.takeBuf(len(pending)) + 1
		pb := &l.bufs[c.pend-1]
		pb.b = append(pb.b, pending...)
		pb.plain = plain
		pb.since = 0
		if l.partials == nil {
			l.partials = make(map[uint32]struct{})
		}
		l.partials[c.slot] = struct{}{}
	}
	if len(output) > 0 {
		c.WriteWire(output) // flushed in the first iteration
	}
	return c, nil
}

// CloseDetached closes descriptors that Detach returned, at most rate per
// second (rate <= 0: no bound), so that their clients come back at that
// rate rather than all at once. Each gets what it is owed written (as much
// as the kernel takes without blocking), then a half-close: its peer sees
// the end of the stream. The closes come last, once the peer has
// acknowledged everything, closed its side, or drainTime after the last
// half-close, and each after its input was read: a close with unread input
// resets the connection and drops what the kernel still holds (see
// Loop.drainClose). It returns when all are closed.
func CloseDetached(fds []int, owed map[int][]byte, rate int) {
	start := time.Now()
	for i, fd := range fds {
		if rate > 0 {
			if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); d > 0 {
				time.Sleep(d)
			}
		}
		for b := owed[fd]; len(b) > 0; {
			n, err := sysWrite(fd, b)
			if n <= 0 || err != nil {
				break
			}
			b = b[n:]
		}
		sysShutdownWrite(fd)
	}
	deadline := time.Now().Add(drainTime)
	buf := make([]byte, 16<<10)
	for _, fd := range fds {
		for outQueued(fd) > 0 && time.Now().Before(deadline) {
			if discardInput(fd, buf) {
				break // the peer closed: what it did not read it never will
			}
			time.Sleep(drainEvery)
		}
		discardInput(fd, buf) // no reset for input that came meanwhile
		sysClose(fd)
	}
}

// CloseFD closes a descriptor that Detach returned.
func CloseFD(fd int) error { return sysClose(fd) }
