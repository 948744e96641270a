package netpoll

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Loop is one event loop: one goroutine (on its own OS thread in
// WaitBlock mode), one poller, one listener (in a
// SO_REUSEPORT group), one slab of connections, one timer wheel and one
// inbound queue. Its methods may be called only from its own Handler
// callbacks, except where noted.
type Loop struct {
	id    int
	gid   uint16
	e     *Engine
	p     *poller
	parks bool // WaitPark: waits parked on the runtime's poller, not locked to a thread
	// lastPark is when the loop last slept in a park (WaitPark; see
	// yieldIfStarved).
	lastPark time.Time
	lfds     []int // one listener per address group; -1: none of its own
	slab     *connSlab

	wheel *timerWheel
	start time.Time
	tick  time.Duration
	now   time.Time
	fire  func(uint32)

	q *mpsc
	// The wake-up protocol. A poster pushes, then wakes the loop only if
	// sleeping is set and it wins wakePending; the loop sets sleeping
	// before it blocks, then looks at the queue once more. Both sides store
	// then load (sequentially consistent atomics), so either the loop sees
	// the item and does not block or the poster sees sleeping and wakes it:
	// no lost wake-up. A loop that is awake (handling events, or posting to
	// itself) costs a poster no syscall at all.
	sleeping    atomic.Int32 // 1 from just before a blocking poller wait until it returns
	wakePending atomic.Int32 // 1 while a wake-up is on its way: one eventfd write per batch
	posters     atomic.Int32 // Post calls in progress; the poller outlives them
	spill       []item
	cur         item // the queue item being handled

	rbuf     []byte
	wrapBuf  []byte // Transport.Wrap's output before it joins a connection's buffer
	evs      [maxEvents]event
	bufs     []ioBuf
	freeBufs []uint32
	pool     [numClasses][][]byte
	dirty    []uint32   // slots with output to flush this iteration
	closes   []closeReq // closes requested this iteration
	linger   map[uint32]error
	rr       int // fallback mode: next loop to hand a connection to

	lastLive int // connections last reported to Config.LiveHook

	// backlogged holds the slots whose output the kernel did not take
	// (writability armed): the only connections with a backlog. Every
	// backlogPublish the longest are copied to pubBacklogs for Backlogs.
	backlogged   map[uint32]struct{}
	lastBacklogs time.Time
	backlogMu    sync.Mutex // guards pubBacklogs
	pubBacklogs  []Backlog

	unwatched    []bool // per listener group: readiness not watched (accepting paused)
	acceptResume time.Time

	// partials holds the slots with an incomplete input frame buffered
	// (c.pend != 0): the only connections the partial-frame deadline
	// sweep (every sweepEvery) has to look at.
	partials   map[uint32]struct{}
	lastSweep  time.Time
	sweepEvery time.Duration

	// draining holds closed sockets whose output the peer has not yet
	// acknowledged (see drainClose), swept every drainEvery.
	draining  []drainFD
	lastDrain time.Time

	// Counters, readable from any goroutine through Engine.Stats.
	conns, accepts, reads, writes, bytesIn, bytesOut, wakeups atomic.Int64
	passes                                                    atomic.Uint64 // iterations that looked at the accept pause (PauseAccepts)
	queuedBytes, stale, acceptErrs, busyNs, waitNs            atomic.Int64
	ndraining                                                 atomic.Int64 // len(draining)
	yields                                                    atomic.Int64 // yieldIfStarved's yields
}

type closeReq struct {
	slot, gen uint32
	reason    error
	now       bool // close without waiting for queued output
}

// lingerTime bounds how long a closing connection waits for its output to
// drain before it is closed anyway.
const lingerTime = 5 * time.Second

// ErrLinger is the close reason when output did not drain within the linger
// time after Close.
var ErrLinger = errors.New("netpoll: output did not drain before close")

// loopTable maps a Conn's loop index to its Loop, so that Conn stays
// pointer-free. Indexes are reused when an engine closes.
var (
	loopTable   [maxLoopsInProcess]atomic.Pointer[Loop]
	loopTableMu sync.Mutex
)

const maxLoopsInProcess = 4096

func registerLoop(l *Loop) error {
	loopTableMu.Lock()
	defer loopTableMu.Unlock()
	for i := range loopTable {
		if loopTable[i].Load() == nil {
			l.gid = uint16(i)
			loopTable[i].Store(l)
			return nil
		}
	}
	return fmt.Errorf("register loop: more than %d loops in this process", maxLoopsInProcess)
}

func unregisterLoop(l *Loop) {
	loopTableMu.Lock()
	loopTable[l.gid].CompareAndSwap(l, nil)
	loopTableMu.Unlock()
}

// ID returns the loop's index in its engine.
func (l *Loop) ID() int { return l.id }

// Now returns the time taken at the start of the current iteration.
func (l *Loop) Now() time.Time { return l.now }

// Len returns the number of connections the loop holds.
func (l *Loop) Len() int { return l.slab.Len() }

// Conn returns the live connection h names if it belongs to this loop, else nil.
func (l *Loop) Conn(h Handle) *Conn {
	if int(h>>56) != l.id {
		return nil
	}
	return l.slab.Lookup(uint32(h), uint32(h>>32)&genMask)
}

func (l *Loop) tickOf(t time.Time) int64 { return int64(t.Sub(l.start) / l.tick) }

func cookieOf(slot, gen uint32) uint64 { return uint64(gen)<<32 | uint64(slot) }

func (l *Loop) run() {
	if !l.parks {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	}
	defer l.e.wg.Done()
	lh, _ := l.e.cfg.Handler.(LoopHandler)
	for {
		timeout := -1
		if next, ok := l.wheel.Next(); ok {
			d := l.start.Add(time.Duration(next) * l.tick).Sub(time.Now())
			timeout = max(0, int((d+time.Millisecond-1)/time.Millisecond))
		}
		if !l.acceptResume.IsZero() {
			d := int(time.Until(l.acceptResume)/time.Millisecond) + 1
			if timeout < 0 || d < timeout {
				timeout = max(0, d)
			}
		}
		if len(l.partials) > 0 && l.e.cfg.PartialTimeout > 0 {
			d := max(0, int((l.sweepEvery-time.Since(l.lastSweep)+time.Millisecond-1)/time.Millisecond))
			if timeout < 0 || d < timeout {
				timeout = d
			}
		}
		if len(l.backlogged) > 0 && !l.lastBacklogs.IsZero() {
			// A publish skipped by the rate limit would leave Backlogs
			// stale on a loop that then goes idle with the backlog still
			// there (found as a flaky test): look again when it is due.
			d := max(1, int((backlogPublish-time.Since(l.lastBacklogs)+time.Millisecond-1)/time.Millisecond))
			if timeout < 0 || d < timeout {
				timeout = d
			}
		}
		if len(l.draining) > 0 {
			d := max(0, int((drainEvery-time.Since(l.lastDrain)+time.Millisecond-1)/time.Millisecond))
			if timeout < 0 || d < timeout {
				timeout = d
			}
		}
		if l.q.length.Load() > 0 {
			timeout = 0
		}
		if timeout != 0 {
			if testHookBeforeSleep != nil {
				testHookBeforeSleep() // widens the race with post for TestPostNoLostWakeup
			}
			l.sleeping.Store(1)
			if l.q.length.Load() > 0 || l.e.closing.Load() {
				timeout = 0 // posted between the first look and sleeping: see post
			}
		}
		t0 := time.Now()
		n, err := l.waitFor(timeout)
		l.sleeping.Store(0)
		t1 := time.Now()
		l.waitNs.Add(int64(t1.Sub(t0)))
		l.now = t1
		if err != nil {
			// The poller itself failed: nothing on this loop can make
			// progress. Close its connections and stop.
			l.e.logf("netpoll: loop %d: %v; closing its connections", l.id, err)
			l.shutdown(err)
			return
		}
		for i := 0; i < n; i++ {
			ev := &l.evs[i]
			switch ev.cookie {
			case cookieWake:
				l.p.drainWake()
				l.wakePending.Store(0)
				l.wakeups.Add(1)
			default:
				if ev.cookie&cookieListener == cookieListener {
					g := int(ev.cookie &^ cookieListener)
					l.acceptAll(l.lfds[g], g)
				} else {
					l.onConnEvent(ev)
				}
			}
		}
		l.drainQueue()
		l.wheel.Advance(l.tickOf(l.now), l.fire)
		if len(l.partials) > 0 && l.e.cfg.PartialTimeout > 0 && l.now.Sub(l.lastSweep) >= l.sweepEvery {
			l.sweepPartials()
		}
		if len(l.draining) > 0 && l.now.Sub(l.lastDrain) >= drainEvery {
			l.sweepDraining(false)
		}
		if lh != nil {
			lh.OnTick(l)
		}
		// OnClose may write to or close other connections: repeat until
		// both lists stay empty.
		for len(l.dirty) > 0 || len(l.closes) > 0 {
			l.flushDirty()
			l.processCloses()
		}
		l.updateAccepting()
		l.passes.Add(1)
		if len(l.backlogged) > 0 || !l.lastBacklogs.IsZero() {
			l.publishBacklogs()
		}
		if hook := l.e.cfg.LiveHook; hook != nil {
			if n := l.slab.Len(); n != l.lastLive {
				l.lastLive = n
				hook(l.id, n)
			}
		}
		l.busyNs.Add(int64(time.Since(t1)))
		l.yieldIfStarved()
		if l.e.freezing.Load() && l.park() {
			return // abandoned: the connections belong to another process now
		}
		if l.e.closing.Load() {
			l.shutdown(ErrShutdown)
			return
		}
	}
}

// updateAccepting starts or stops watching the listener: accepting pauses
// while the engine's PauseAccepts is in effect and for a while after EMFILE.
func (l *Loop) updateAccepting() {
	if len(l.lfds) == 0 || l.lfds[0] < 0 {
		return
	}
	if !l.acceptResume.IsZero() && !l.now.Before(l.acceptResume) {
		l.acceptResume = time.Time{} // the EMFILE back-off is over
	}
	want := !l.e.acceptsOff.Load() && l.acceptResume.IsZero()
	if len(l.unwatched) != len(l.lfds) {
		l.unwatched = make([]bool, len(l.lfds))
	}
	for g, fd := range l.lfds {
		if fd < 0 || l.unwatched[g] == !want {
			continue
		}
		var err error
		if want {
			err = l.p.addListener(fd, g)
		} else {
			err = l.p.delListener(fd)
		}
		if err != nil {
			// Left as it was: the next iteration tries this group again.
			l.e.logf("netpoll: loop %d: pause (%v) accepting on group %d: %v", l.id, !want, g, err)
			continue
		}
		l.unwatched[g] = !want
	}
}

// backlogPublish is how often a loop publishes its longest output
// backlogs, and backlogTop how many, for Engine.Backlogs.
const (
	backlogPublish = 250 * time.Millisecond
	backlogTop     = 16
)

// publishBacklogs copies the loop's longest backlogs for Engine.Backlogs, at
// most every backlogPublish; when the last one drains or closes the empty
// list is published at once.
func (l *Loop) publishBacklogs() {
	if len(l.backlogged) > 0 && l.now.Sub(l.lastBacklogs) < backlogPublish {
		return // the last backlog to drain is published at once, others at most every backlogPublish
	}
	var top [backlogTop]Backlog
	n := 0
	for slot := range l.backlogged {
		c := l.slab.Get(slot)
		b := Backlog{Handle: c.Handle(), Loop: l.id, Queued: c.Queued()}
		if n < backlogTop {
			top[n] = b
			n++
			continue
		}
		min := 0
		for i := 1; i < n; i++ {
			if top[i].Queued < top[min].Queued {
				min = i
			}
		}
		if b.Queued > top[min].Queued {
			top[min] = b
		}
	}
	l.backlogMu.Lock()
	l.pubBacklogs = append(l.pubBacklogs[:0], top[:n]...)
	l.backlogMu.Unlock()
	if n == 0 {
		l.lastBacklogs = time.Time{} // published the empty list: idle until the next backlog
	} else {
		l.lastBacklogs = l.now
	}
}

// acceptBatch bounds accepts per readiness report (the listener is level
// triggered), so a connection storm cannot starve established connections.
const acceptBatch = 128

func (l *Loop) acceptAll(lfd, group int) {
	for i := 0; i < acceptBatch; i++ {
		fd, err := acceptConn(lfd)
		if err != nil {
			if isAgain(err) {
				return
			}
			l.acceptErrs.Add(1)
			if isTooManyFiles(err) {
				// Out of descriptors: a level-triggered listener would
				// report readiness again at once, so stop watching it
				// for a while instead of spinning.
				l.acceptResume = l.now.Add(100 * time.Millisecond)
				l.updateAccepting()
				if ok, n := l.e.pauseLog.allow(l.now); ok {
					l.e.logf("netpoll: loop %d: accept: %v; pausing accepts for 100ms (%d more such pauses since the last line, logged at most every %v)",
						l.id, os.NewSyscallError("accept", err), n, l.e.pauseLog.every)
				}
			}
			return
		}
		l.accepts.Add(1)
		target := l
		if !l.e.reuse && len(l.e.loops) > 1 {
			target = l.e.loops[l.rr]
			l.rr = (l.rr + 1) % len(l.e.loops)
		}
		if h := l.e.cfg.Handoff; h != nil && h(target.id, group, fd) {
			continue
		}
		if target == l {
			l.adopt(fd, nil, nil)
			continue
		}
		target.post(item{kind: kindAdopt, msg: Message{Arg: uint64(fd)}})
	}
}

// adopt makes fd one of this loop's connections; a non-nil state makes
// it a Transport's (see Engine.Adopt), with initial its first wire bytes.
func (l *Loop) adopt(fd int, state any, initial []byte) {
	cfg := &l.e.cfg
	if err := tuneConn(fd, cfg.SndBuf, cfg.RcvBuf); err != nil {
		l.e.logf("netpoll: loop %d: %v", l.id, err)
	}
	slot, gen, c, err := l.slab.Alloc()
	if err != nil {
		sysClose(fd)
		l.acceptErrs.Add(1)
		return
	}
	*c = Conn{fd: int32(fd), slot: slot, gen: gen, loop: l.gid}
	if state != nil {
		// Before the socket is watched: no event can reach a
		// connection whose transport state is not there yet.
		c.flags |= flagTransport
		if err := cfg.Transport.Attach(c, state); err != nil {
			cfg.Transport.Closed(c)
			l.slab.Free(slot)
			sysClose(fd)
			l.acceptErrs.Add(1)
			return
		}
	}
	if err := l.p.addConn(fd, cookieOf(slot, gen)); err != nil {
		if state != nil {
			cfg.Transport.Closed(c)
		}
		l.slab.Free(slot)
		sysClose(fd)
		l.acceptErrs.Add(1)
		return
	}
	l.conns.Add(1)
	cfg.Handler.OnOpen(c)
	if len(initial) > 0 && c.flags&flagClosing == 0 {
		l.deliver(c, initial)
	}
}

func (l *Loop) onConnEvent(ev *event) {
	slot, gen := uint32(ev.cookie), uint32(ev.cookie>>32)
	c := l.slab.Lookup(slot, gen)
	if c == nil {
		l.stale.Add(1)
		return
	}
	if ev.writable && c.out != 0 {
		l.flush(c)
		if l.slab.Lookup(slot, gen) == nil {
			return
		}
	}
	if ev.readable && c.flags&flagClosing == 0 {
		l.readAll(c, ev.hangup)
	}
}

// readAll reads until the socket is drained. A short read means it is (new
// data raises a new edge), unless the peer hung up, in which case reading on
// finds the end of stream. Each pass hands all complete frames to the
// handler at once.
func (l *Loop) readAll(c *Conn, hangup bool) {
	for c.flags&flagClosing == 0 {
		n, err := sysRead(int(c.fd), l.rbuf)
		if n > 0 {
			l.reads.Add(1)
			l.bytesIn.Add(int64(n))
			l.deliver(c, l.rbuf[:n])
			if n < len(l.rbuf) && !hangup {
				return
			}
			continue
		}
		switch {
		case err == nil: // end of stream: send what is queued, then close
			c.Close(io.EOF)
		case isAgain(err):
		default:
			l.closeNow(c, os.NewSyscallError("read", err))
		}
		return
	}
}

// deliver hands data, after the connection's buffered partial frame if
// any, to the handler and keeps what it did not consume. Partial-frame
// memory is charged to the engine's budget before it is taken: a connection
// that would push the total past Config.MaxPartialBytes loses its partial
// bytes and is closed with ErrPartialBudget.
func (l *Loop) deliver(c *Conn, data []byte) {
	var pb *ioBuf
	if c.pend != 0 {
		pb = &l.bufs[c.pend-1]
		if !l.chargePartial(int64(grownCap(pb, len(data)) - cap(pb.b))) {
			l.dropPartial(c)
			c.Close(ErrPartialBudget)
			return
		}
		pb.b = l.grow(pb, len(data))
		pb.b = append(pb.b, data...)
		data = pb.b
	}
	// With a Transport, data is [payload unwrapped before][wire bytes]:
	// the complete wire units are unwrapped in place, the handler gets
	// the payload (app), and an incomplete unit (tail) waits for more.
	plain := 0
	if pb != nil {
		plain = pb.plain
	}
	app, tail := data, data[len(data):]
	var terr error
	if c.flags&flagTransport != 0 {
		n, m, err := l.e.cfg.Transport.Unwrap(c, data[plain:])
		if n < 0 || m < n || plain+m > len(data) {
			panic(fmt.Sprintf("netpoll: transport invariant broken: Unwrap gave %d payload bytes for %d of %d", n, m, len(data)-plain))
		}
		app, tail, terr = data[:plain+n], data[plain+m:], err
	}
	used, err := 0, error(nil)
	if len(app) > 0 || c.flags&flagTransport == 0 {
		used, err = l.e.cfg.Handler.OnData(c, app)
		if used < 0 || used > len(app) {
			panic(fmt.Sprintf("netpoll: handler invariant broken: OnData consumed %d of %d bytes", used, len(app)))
		}
	}
	if err == nil {
		err = terr
	}
	if pb != nil {
		// The handler's writes may have grown l.bufs and moved it.
		pb = &l.bufs[c.pend-1]
	}
	keep := len(app) - used
	rest := keep + len(tail)
	switch {
	case err != nil || rest == 0:
		// Closing, or nothing left over: no partial frame to keep.
		if pb != nil {
			l.dropPartial(c)
		}
	case pb != nil:
		copy(pb.b, app[used:])
		copy(pb.b[keep:], tail) // moves left: keep+len(tail) <= len(pb.b)
		pb.b = pb.b[:rest]
		pb.plain = keep
		if used > 0 {
			pb.since = int64(l.now.Sub(l.start)) // a frame completed: the rest starts a new one
		}
	default:
		if !l.chargePartial(int64(capFor(rest))) {
			c.Close(ErrPartialBudget)
			return
		}
		c.pend = l.takeBuf(rest) + 1
		pb = &l.bufs[c.pend-1]
		pb.b = append(pb.b, app[used:]...)
		pb.b = append(pb.b, tail...)
		pb.plain = keep
		pb.since = int64(l.now.Sub(l.start))
		if l.partials == nil {
			l.partials = make(map[uint32]struct{})
		}
		l.partials[c.slot] = struct{}{}
	}
	if err != nil {
		c.Close(err)
		return
	}
	if rest > l.e.cfg.MaxPending {
		c.Close(ErrPendingFull)
	}
}

// chargePartial adds d bytes of partial-frame buffer to the engine's total
// and reports whether it stays within Config.MaxPartialBytes; a refused
// charge is not added. Releases (d <= 0) always succeed.
func (l *Loop) chargePartial(d int64) bool {
	limit := l.e.cfg.MaxPartialBytes
	if d <= 0 || limit < 0 {
		l.e.partialBytes.Add(d)
		return true
	}
	if l.e.partialBytes.Add(d) > limit {
		l.e.partialBytes.Add(-d)
		return false
	}
	return true
}

// dropPartial releases c's partial-frame buffer and its budget.
func (l *Loop) dropPartial(c *Conn) {
	l.chargePartial(-int64(cap(l.bufs[c.pend-1].b)))
	l.releaseBuf(c.pend - 1)
	c.pend = 0
	delete(l.partials, c.slot)
}

// sweepPartials closes, with ErrPartialTimeout, the connections whose
// incomplete frame began more than Config.PartialTimeout ago; their partial
// bytes are released at once.
func (l *Loop) sweepPartials() {
	l.lastSweep = l.now
	now, limit := int64(l.now.Sub(l.start)), int64(l.e.cfg.PartialTimeout)
	for slot := range l.partials {
		c := l.slab.Get(slot)
		if now-l.bufs[c.pend-1].since >= limit {
			l.dropPartial(c)
			c.Close(ErrPartialTimeout)
		}
	}
}

// partialSweep is how often a loop looks for expired partial frames: an
// eighth of the timeout, at least one timer tick and at most a second, so a
// stalled frame is closed between 1x and 1.125x the timeout (or +1 s).
func partialSweep(cfg *Config) time.Duration {
	return min(max(cfg.PartialTimeout/8, cfg.TimerTick), time.Second)
}

func (l *Loop) flushDirty() {
	// By index: a close during a flush runs OnClose, which may append.
	for i := 0; i < len(l.dirty); i++ {
		c := l.slab.Get(l.dirty[i])
		c.flags &^= flagDirty
		if c.out != 0 && c.flags&flagWriteArmed == 0 {
			l.flush(c)
		}
	}
	l.dirty = l.dirty[:0]
}

// flush writes queued output until it is gone or the kernel pushes back;
// then writability is watched until the rest drains. Every pass makes
// progress or parks on the poller.
func (l *Loop) flush(c *Conn) {
	if c.flags&flagTransport != 0 {
		if err := l.wrapPending(c); err != nil {
			l.closeNow(c, err)
			return
		}
	}
	b := &l.bufs[c.out-1]
	for b.off < len(b.b) {
		n, err := sysWrite(int(c.fd), b.b[b.off:])
		if n > 0 {
			b.off += n
			l.writes.Add(1)
			l.bytesOut.Add(int64(n))
			l.queuedBytes.Add(-int64(n))
		}
		if err != nil {
			if isAgain(err) {
				if c.flags&flagWriteArmed == 0 {
					if err := l.p.armWrite(int(c.fd), cookieOf(c.slot, c.gen), true); err != nil {
						l.closeNow(c, err)
						return
					}
					c.flags |= flagWriteArmed
					if l.backlogged == nil {
						l.backlogged = make(map[uint32]struct{})
					}
					l.backlogged[c.slot] = struct{}{}
				}
				return
			}
			l.closeNow(c, os.NewSyscallError("write", err))
			return
		}
	}
	l.releaseBuf(c.out - 1)
	c.out = 0
	if c.flags&flagWriteArmed != 0 {
		c.flags &^= flagWriteArmed
		delete(l.backlogged, c.slot)
		if err := l.p.armWrite(int(c.fd), cookieOf(c.slot, c.gen), false); err != nil {
			l.closeNow(c, err)
			return
		}
	}
	if c.flags&flagLinger != 0 {
		reason := l.linger[c.slot]
		l.closeGraceful(c, reason)
	}
}

func (l *Loop) processCloses() {
	// By index: OnClose may request more closes.
	for i := 0; i < len(l.closes); i++ {
		r := l.closes[i]
		l.closes[i] = closeReq{}
		c := l.slab.Lookup(r.slot, r.gen)
		if c == nil {
			continue
		}
		if r.now {
			l.closeNow(c, r.reason)
			continue
		}
		if c.out == 0 {
			l.closeGraceful(c, r.reason)
			continue
		}
		// Output is still queued: wait for it to drain, up to lingerTime.
		if l.linger == nil {
			l.linger = make(map[uint32]error)
		}
		l.linger[c.slot] = r.reason
		c.flags |= flagLinger
		l.wheel.Add(c.slot, l.tickOf(l.now)+int64(lingerTime/l.tick))
		if c.flags&flagWriteArmed == 0 {
			l.flush(c)
		}
	}
	l.closes = l.closes[:0]
}

func (l *Loop) onTimer(slot uint32) {
	c := l.slab.Get(slot)
	if c.flags&flagLinger != 0 {
		l.closeNow(c, errors.Join(l.linger[slot], ErrLinger))
		return
	}
	if c.flags&flagClosing == 0 {
		l.e.cfg.Handler.OnTimer(c)
	}
}

// closeNow closes c in the fixed order: the handler's OnClose, then the slot
// is released (its generation bumps, so stale handles and events miss), then
// the fd is closed last, so nothing can reach a reused descriptor.
func (l *Loop) closeNow(c *Conn, reason error) {
	sysClose(l.release(c, reason))
}

// closeGraceful closes c like closeNow once its output reached the kernel,
// except that a socket whose output the peer has not acknowledged yet is
// drained rather than closed: closing a TCP socket with unread input makes
// the kernel send a reset and throw away what it still holds to send, so a
// client closed for a reason (store_full, say) while it was still writing
// could miss the acknowledgements for the messages before the refused one
// and send them again (found as a flaky TestStoreCap under load).
func (l *Loop) closeGraceful(c *Conn, reason error) {
	l.drainClose(l.release(c, reason))
}

// release runs the handler's OnClose and frees c's slot, returning the
// descriptor for the caller to close.
func (l *Loop) release(c *Conn, reason error) int {
	c.flags |= flagClosing
	l.e.cfg.Handler.OnClose(c, reason)
	if c.flags&flagTransport != 0 {
		l.e.cfg.Transport.Closed(c)
	}
	l.wheel.Cancel(c.slot)
	if c.flags&flagLinger != 0 {
		delete(l.linger, c.slot)
	}
	if c.pend != 0 {
		l.dropPartial(c)
	}
	if c.out != 0 {
		b := &l.bufs[c.out-1]
		l.queuedBytes.Add(-int64(len(b.b) - b.off))
		l.releaseBuf(c.out - 1)
	}
	delete(l.backlogged, c.slot)
	fd := int(c.fd)
	l.slab.Free(c.slot)
	l.conns.Add(-1)
	return fd
}

// drainTime bounds how long a closed socket is drained (see drainClose);
// maxDraining bounds how many a loop drains at once, so that a flood of
// refused clients cannot hold descriptors past the process limit.
const (
	drainTime   = 2 * time.Second
	drainEvery  = 10 * time.Millisecond
	maxDraining = 1024
)

type drainFD struct {
	fd    int32
	until int64 // UnixNano
}

// drainClose closes fd, or, when the kernel still holds output for it that
// the peer has not acknowledged, half-closes it (shutdown SHUT_WR: the FIN
// follows the output) and keeps it off the poller in l.draining, where
// sweepDraining discards its input until the peer has acknowledged
// everything, closes its side, or drainTime passes.
func (l *Loop) drainClose(fd int) {
	if len(l.draining) >= maxDraining || outQueued(fd) == 0 {
		sysClose(fd)
		return
	}
	if err := sysShutdownWrite(fd); err != nil {
		sysClose(fd)
		return
	}
	if err := l.p.delConn(fd); err != nil {
		sysClose(fd)
		return
	}
	l.draining = append(l.draining, drainFD{fd: int32(fd), until: l.now.Add(drainTime).UnixNano()})
	l.ndraining.Store(int64(len(l.draining)))
}

// sweepDraining looks at every draining socket: its input is read and
// discarded; it is closed once nothing is left unacknowledged, at the end
// of its stream, on an error or when its time is up (all: now). The input
// is read first in every case, since a close with unread input resets the
// connection and drops the output the kernel still holds.
func (l *Loop) sweepDraining(all bool) {
	l.lastDrain = l.now
	now := l.now.UnixNano()
	kept := l.draining[:0]
	for _, d := range l.draining {
		fd := int(d.fd)
		ended := discardInput(fd, l.rbuf)
		if all || ended || now >= d.until || outQueued(fd) == 0 {
			sysClose(fd)
			continue
		}
		kept = append(kept, d)
	}
	clear(l.draining[len(kept):])
	l.draining = kept
	l.ndraining.Store(int64(len(kept)))
}

// discardInput reads and drops what fd's peer sent, reporting the end of
// its stream (or an error). Bounded: a peer that never stops sending is
// read maxDrainReads times, and closed later with what it sent since (a
// reset: the one case where the output the kernel holds may be lost).
func discardInput(fd int, buf []byte) (ended bool) {
	for range maxDrainReads {
		n, err := sysRead(fd, buf)
		if n > 0 {
			continue
		}
		return err == nil || !isAgain(err)
	}
	return false
}

// maxDrainReads bounds the reads of one draining socket per look.
const maxDrainReads = 16

// testHookBeforeSleep, if set (by tests, before any engine starts), runs
// on a loop between its last look at the queue and setting sleeping.
var testHookBeforeSleep func()

// post queues x for this loop; safe from any goroutine. The loop is woken
// only if it sleeps in (or is about to enter) its poller wait, and then at
// most once per batch; see Loop.sleeping. q.push counts the item in
// q.length before it returns, which is what the loop looks at.
func (l *Loop) post(x item) {
	l.q.push(x)
	if l.sleeping.Load() != 0 && l.wakePending.CompareAndSwap(0, 1) {
		if err := l.p.wake(); err != nil {
			l.wakePending.Store(0) // no wake-up is on its way: let the next post try again
			l.e.logf("netpoll: loop %d: wake: %v", l.id, err)
		}
	}
}

// drainBatch bounds queued messages handled per iteration, so timers and
// I/O keep running under a flood of cross-loop work.
const drainBatch = 4096

func (l *Loop) drainQueue() {
	// l.cur, not a local: the handler receives &it.msg through an interface,
	// which would move a local to the heap on every call.
	it := &l.cur
	for i := 0; i < drainBatch && l.q.pop(it); i++ {
		l.handleItem(it)
		*it = item{}
	}
	l.spill = l.q.takeOverflow(l.spill)
	for i := range l.spill {
		l.handleItem(&l.spill[i])
		l.spill[i] = item{}
	}
}

const (
	kindConn = iota
	kindLoop
	kindAdopt
)

func (l *Loop) handleItem(it *item) {
	switch it.kind {
	case kindAdopt:
		fd := int(it.msg.Arg)
		if l.e.closing.Load() {
			sysClose(fd)
			return
		}
		l.adopt(fd, it.msg.Ref, it.msg.Data)
	case kindLoop:
		if lh, ok := l.e.cfg.Handler.(LoopHandler); ok {
			lh.OnLoopMessage(l, &it.msg)
		}
	default:
		c := l.Conn(it.to)
		if c == nil || c.flags&flagClosing != 0 {
			l.stale.Add(1)
			return
		}
		l.e.cfg.Handler.OnMessage(c, &it.msg)
	}
}

// closeListeners closes the loop's listening sockets.
func (l *Loop) closeListeners() {
	for g, fd := range l.lfds {
		if fd >= 0 {
			sysClose(fd)
			l.lfds[g] = -1
		}
	}
}

// shutdown closes every connection with reason and releases the loop.
func (l *Loop) shutdown(reason error) {
	l.closeListeners()
	if t := l.e.cfg.Transport; t != nil && reason == ErrShutdown {
		// A transport's goodbye (TLS close_notify) goes into the output
		// flushed below, so that its clients see a clean end, not a
		// truncation. Not after a poller failure: nothing is sent then.
		l.slab.Range(func(slot uint32, c *Conn) bool {
			if c.flags&(flagTransport|flagClosing) == flagTransport {
				t.Close(c, reason) // writes: c goes on the dirty list
			}
			return true
		})
	}
	l.flushDirty()
	l.slab.Range(func(slot uint32, c *Conn) bool {
		l.closeNow(c, reason)
		return true
	})
	l.sweepDraining(true)
	l.dropQueued()
}

// dropQueued discards queued messages; connections handed over but not yet
// adopted still hold descriptors, which are closed.
func (l *Loop) dropQueued() {
	var it item
	for l.q.pop(&it) {
		if it.kind == kindAdopt {
			sysClose(int(it.msg.Arg))
		}
	}
	for _, it := range l.q.takeOverflow(nil) {
		if it.kind == kindAdopt {
			sysClose(int(it.msg.Arg))
		}
	}
}
