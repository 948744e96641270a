package netpoll

import (
	"errors"
	"fmt"
	"log"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgedhq/edged/internal/slab"
	"github.com/edgedhq/edged/internal/wheel"
)

// Engine runs a set of event loops behind one TCP address.
type Engine struct {
	cfg     Config
	loops   []*Loop
	addrs   []*net.TCPAddr // bound address of each listener group
	reuse   bool           // one listener per loop; otherwise loop 0 accepts for all
	closing atomic.Bool
	wg      sync.WaitGroup

	maxQueued  atomic.Int64 // live value of Config.MaxQueued
	acceptsOff atomic.Bool  // accepting paused by PauseAccepts
	pauseLog   everyLog     // spaces the EMFILE "pausing accepts" lines

	// partialBytes is the buffer capacity all loops hold for incomplete
	// input frames, against Config.MaxPartialBytes.
	partialBytes atomic.Int64

	mu      sync.Mutex // guards started and closed
	started bool
	closed  bool

	// kick and kicked: WaitPark's kicker goroutine (wait.go), from Start
	// to release.
	kick   chan struct{}
	kicked chan struct{}

	// frz and freezing: Freeze, Thaw, Abandon (handoff.go).
	frz      freezer
	freezing atomic.Bool
}

// errNoReuse marks a failure to set SO_REUSEPORT: the fallback is one shared
// listener.
var errNoReuse = errors.New("so_reuseport unavailable")

func (c *Config) setDefaults() error {
	if c.Handler == nil {
		return errors.New("netpoll: config: Handler is required")
	}
	if c.Loops <= 0 {
		c.Loops = runtime.GOMAXPROCS(0)
	}
	if c.Loops > 256 {
		return fmt.Errorf("netpoll: config: %d loops, at most 256 (a Handle has 8 bits for the loop)", c.Loops)
	}
	if c.ReadBufferSize <= 0 {
		c.ReadBufferSize = 64 << 10
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 1 << 20
	}
	if c.PartialTimeout == 0 {
		c.PartialTimeout = 30 * time.Second
	}
	if c.MaxPartialBytes == 0 {
		c.MaxPartialBytes = 256 << 20
	}
	if c.MaxQueued <= 0 {
		c.MaxQueued = 4 << 20
	}
	if c.Backlog <= 0 {
		c.Backlog = 4096
	}
	if c.TimerTick <= 0 {
		c.TimerTick = 10 * time.Millisecond
	}
	if c.Logf == nil {
		c.Logf = log.Printf
	}
	w, err := resolveWait(c.Wait)
	if err != nil {
		return err
	}
	c.Wait = w
	return nil
}

// New creates the listeners, pollers and loops; Start runs them. It returns
// ErrUnsupported on systems without epoll or kqueue, ErrAddrInUse when
// another socket (another server) already listens on one of the addresses,
// and never leaks a file descriptor on failure.
func New(cfg Config) (_ *Engine, err error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	ap, err := resolve(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("netpoll: %w", err)
	}
	e := &Engine{cfg: cfg, reuse: !cfg.DisableReusePort}
	e.pauseLog.every = acceptPauseLogEvery
	e.maxQueued.Store(int64(cfg.MaxQueued))
	defer func() {
		if err != nil {
			e.release()
		}
	}()
	for i := 0; i < cfg.Loops; i++ {
		p, err := openPoller()
		if err != nil {
			return nil, fmt.Errorf("netpoll: loop %d: %w", i, err)
		}
		if cfg.Wait == WaitPark {
			if err := p.enablePark(); err != nil {
				p.close()
				return nil, fmt.Errorf("netpoll: loop %d: %w", i, err)
			}
		}
		l := &Loop{
			id: i, e: e, p: p, parks: cfg.Wait == WaitPark,
			slab:  slab.New[Conn](),
			wheel: wheel.New(0),
			start: time.Now(),
			tick:  cfg.TimerTick,
			q:     newMPSC(mpscSize),
			rbuf:  make([]byte, cfg.ReadBufferSize),

			sweepEvery: partialSweep(&cfg),
		}
		l.now = l.start
		l.fire = l.onTimer
		e.loops = append(e.loops, l)
		if err := registerLoop(l); err != nil {
			l.p.close()
			e.loops = e.loops[:i]
			return nil, fmt.Errorf("netpoll: %w", err)
		}
	}
	addrs := []netip.AddrPort{ap}
	for _, a := range cfg.ExtraAddrs {
		xp, err := resolve(a)
		if err != nil {
			return nil, fmt.Errorf("netpoll: %w", err)
		}
		addrs = append(addrs, xp)
	}
	if cfg.Listeners != nil {
		if err := e.inherit(cfg.Listeners, len(addrs)); err != nil {
			return nil, err
		}
		return e, nil
	}
	if e.reuse {
		// A SO_REUSEPORT listener silently joins the group of a live
		// server on the same address (same user), and the kernel then
		// splits new connections between the two processes. So first bind
		// each fixed address once without SO_REUSEPORT: EADDRINUSE means
		// someone listens there. Port 0 gets a fresh port; the fallback
		// without SO_REUSEPORT fails in its own bind. Two servers starting
		// at the same instant can both pass the probe (a window of a few
		// syscalls). A future upgrade or cluster design that wants to share
		// a port must join it explicitly (e.g. by inheriting the
		// listeners), never by accident.
		for _, ap := range addrs {
			if ap.Port() == 0 {
				continue
			}
			if err := probeFree(ap); err != nil {
				return nil, fmt.Errorf("netpoll: listen %s: %w", ap, err)
			}
		}
	}
	for g, ap := range addrs {
		if err := e.listenGroup(g, ap); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// listenGroup makes address group g's listeners: one per loop in a
// SO_REUSEPORT group, or one on loop 0 in the fallback.
func (e *Engine) listenGroup(g int, ap netip.AddrPort) error {
	cfg := &e.cfg
	for i, l := range e.loops {
		if i > 0 && !e.reuse {
			break // the fallback: loop 0 holds every group's one listener
		}
		if len(l.lfds) != g {
			panic("netpoll: listener groups out of order")
		}
		fd, err := listenTCP(ap, e.reuse, cfg.Backlog)
		if err != nil && g == 0 && i == 0 && e.reuse && errors.Is(err, errNoReuse) {
			cfg.Logf("netpoll: %v; falling back to one listener shared by all loops", err)
			e.reuse = false
			fd, err = listenTCP(ap, false, cfg.Backlog)
		}
		if err != nil {
			return fmt.Errorf("netpoll: listen %s: %w", ap, err)
		}
		l.lfds = append(l.lfds, fd)
		if i == 0 {
			bound, err := localAddr(fd)
			if err != nil {
				return fmt.Errorf("netpoll: %w", err)
			}
			ap = bound // port 0 picks a port once; the other loops join it
			e.addrs = append(e.addrs, net.TCPAddrFromAddrPort(bound))
		}
		if err := l.p.addListener(fd, g); err != nil {
			return fmt.Errorf("netpoll: loop %d: %w", i, err)
		}
	}
	return nil
}

// inherit serves handed-over listening sockets (Config.Listeners) instead
// of binding.
func (e *Engine) inherit(groups [][]int, want int) error {
	if len(groups) != want {
		return fmt.Errorf("netpoll: %d inherited listener groups for %d addresses", len(groups), want)
	}
	e.reuse = len(groups[0]) > 1 || len(e.loops) == 1
	for g, fds := range groups {
		if len(fds) != len(e.loops) && (len(fds) != 1 || e.reuse) {
			return fmt.Errorf("netpoll: group %d: %d inherited listeners for %d loops (the loop count must not change across a handoff)", g, len(fds), len(e.loops))
		}
		for i, l := range e.loops {
			if i >= len(fds) {
				break
			}
			l.lfds = append(l.lfds, fds[i])
			if i == 0 {
				bound, err := localAddr(fds[i])
				if err != nil {
					return fmt.Errorf("netpoll: %w", err)
				}
				e.addrs = append(e.addrs, net.TCPAddrFromAddrPort(bound))
			}
			if err := l.p.addListener(fds[i], g); err != nil {
				return fmt.Errorf("netpoll: loop %d: %w", i, err)
			}
		}
	}
	return nil
}

// release closes every descriptor the engine holds; loops must not be running.
func (e *Engine) release() {
	if e.kick != nil {
		close(e.kick)
		<-e.kicked
		e.kick = nil
	}
	for _, l := range e.loops {
		l.closeListeners()
		for l.posters.Load() != 0 {
			runtime.Gosched()
		}
		l.dropQueued() // in the fallback, loop 0 may hand a connection to a loop that already stopped
		l.p.close()
		unregisterLoop(l)
	}
}

// Start runs the loops: each a goroutine, on its own locked OS thread in
// WaitBlock mode.
func (e *Engine) Start() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	if e.started {
		return errors.New("netpoll: engine already started")
	}
	e.started = true
	if e.cfg.Wait == WaitPark && len(e.loops) > 1 {
		e.kick, e.kicked = make(chan struct{}, 1), make(chan struct{})
		go e.kicker()
	}
	for _, l := range e.loops {
		e.wg.Add(1)
		go l.run()
	}
	return nil
}

// Close stops accepting, closes every connection (OnClose gets ErrShutdown),
// waits for the loops to finish and releases all descriptors. It is safe to
// call more than once.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	started := e.started
	e.mu.Unlock()
	e.closing.Store(true)
	if started {
		for _, l := range e.loops {
			l.p.wake()
		}
		e.wg.Wait()
	} else {
		for _, l := range e.loops {
			l.shutdown(ErrShutdown)
		}
	}
	e.release()
	return nil
}

// Addr returns the address the engine listens on.
func (e *Engine) Addr() net.Addr { a := *e.addrs[0]; return &a }

// Addrs returns the bound address of each listener group: Config.Addr, then
// Config.ExtraAddrs in order.
func (e *Engine) Addrs() []net.Addr {
	out := make([]net.Addr, len(e.addrs))
	for i, a := range e.addrs {
		c := *a
		out[i] = &c
	}
	return out
}

// NumLoops returns the number of loops.
func (e *Engine) NumLoops() int { return len(e.loops) }

// ReusePort reports whether each loop has its own SO_REUSEPORT listener
// (false: the fallback, one listener whose connections loop 0 hands round).
func (e *Engine) ReusePort() bool { return e.reuse }

// GroupFDs returns listener group g's listening sockets (g indexes Addrs),
// index = loop, for socket steering (eBPF). In the fallback there is only
// one per group. The engine owns them. nil for a group that does not exist.
func (e *Engine) GroupFDs(g int) []int {
	var fds []int
	for _, l := range e.loops {
		if g < len(l.lfds) && l.lfds[g] >= 0 {
			fds = append(fds, l.lfds[g])
		}
	}
	return fds
}

func (e *Engine) logf(format string, args ...any) { e.cfg.Logf(format, args...) }

// Post queues m for the connection h names, on its loop. It is safe from any
// goroutine and never blocks. It returns ErrStaleHandle if h no longer names a
// live connection; if h goes stale before delivery, m is dropped, never
// delivered to the slot's next occupant.
func (e *Engine) Post(h Handle, m Message) error {
	li := int(h >> 56)
	if li >= len(e.loops) {
		return ErrStaleHandle
	}
	l := e.loops[li]
	l.posters.Add(1)
	defer l.posters.Add(-1)
	if e.closing.Load() {
		return ErrClosed
	}
	if !l.slab.Valid(uint32(h), uint32(h>>32)&genMask) {
		return ErrStaleHandle
	}
	l.post(item{to: h, kind: kindConn, msg: m})
	return nil
}

// PostLoop queues m for loop i's LoopHandler.OnLoopMessage.
func (e *Engine) PostLoop(i int, m Message) error {
	if i < 0 || i >= len(e.loops) {
		return fmt.Errorf("netpoll: post to loop %d of %d", i, len(e.loops))
	}
	l := e.loops[i]
	l.posters.Add(1)
	defer l.posters.Add(-1)
	if e.closing.Load() {
		return ErrClosed
	}
	l.post(item{kind: kindLoop, msg: m})
	return nil
}

// SetMaxQueued changes the per-connection cap on queued output (bytes) for
// every later Write; n <= 0 is refused. Safe from any goroutine.
func (e *Engine) SetMaxQueued(n int) error {
	if n <= 0 {
		return fmt.Errorf("netpoll: set max queued: %d is not a positive byte count", n)
	}
	e.maxQueued.Store(int64(n))
	return nil
}

// MaxQueued returns the current per-connection output cap.
func (e *Engine) MaxQueued() int { return int(e.maxQueued.Load()) }

// PauseAccepts stops (true) or resumes (false) accepting new connections on
// every loop; established connections are not affected and new ones wait
// in the kernel's listen backlog. Safe from any goroutine. A pause returns
// once every running loop has seen it (or after pauseWait): no accept
// begun before it is still to be handed on (Config.Handoff) after it, so a
// caller that then counts handshakes in progress counts them all.
func (e *Engine) PauseAccepts(pause bool) {
	e.acceptsOff.Store(pause)
	seen := make([]uint64, len(e.loops))
	for i, l := range e.loops {
		seen[i] = l.passes.Load()
		l.posters.Add(1)
		if !e.closing.Load() {
			l.p.wake()
		}
		l.posters.Add(-1)
	}
	e.mu.Lock()
	running := e.started && !e.closed
	e.mu.Unlock()
	if !pause || !running {
		return
	}
	for end := time.Now().Add(pauseWait); time.Now().Before(end); time.Sleep(time.Millisecond) {
		all := true
		for i, l := range e.loops {
			// Two whole passes: the one running when seen was read
			// may have read the flag before it was set (and counted
			// itself after); the next one starts after the flag was
			// set, and at its end, after its accepts, it stops
			// watching the listeners. An idle loop is woken for it.
			if l.passes.Load() < seen[i]+2 {
				all = false
				l.posters.Add(1)
				if !e.closing.Load() {
					l.p.wake()
				}
				l.posters.Add(-1)
			}
		}
		if all || e.freezing.Load() || e.closing.Load() {
			return
		}
	}
}

// pauseWait bounds PauseAccepts's wait for the loops (one that is stuck
// does not hold its caller).
const pauseWait = time.Second

// PartialBytes returns the buffer memory (bytes) that all connections hold
// for incomplete input frames, the figure Config.MaxPartialBytes caps. Safe
// from any goroutine.
func (e *Engine) PartialBytes() int64 { return e.partialBytes.Load() }

// AcceptsPaused reports whether PauseAccepts(true) is in effect.
func (e *Engine) AcceptsPaused() bool { return e.acceptsOff.Load() }

// Valid reports whether h names a live connection now.
func (e *Engine) Valid(h Handle) bool {
	li := int(h >> 56)
	return li < len(e.loops) && e.loops[li].slab.Valid(uint32(h), uint32(h>>32)&genMask)
}

// Backlog is a connection whose output the kernel has not taken.
type Backlog struct {
	Handle Handle
	Loop   int
	Queued int // bytes
}

// Backlogs returns the longest output backlogs (up to 16 per loop), as the
// loops last published them (every 250 ms while any exists); safe from any
// goroutine. A peer that stops reading shows here until it drains or its
// queue cap closes it.
func (e *Engine) Backlogs() []Backlog {
	var out []Backlog
	for _, l := range e.loops {
		l.backlogMu.Lock()
		out = append(out, l.pubBacklogs...)
		l.backlogMu.Unlock()
	}
	return out
}

// LoopStats are one loop's counters.
type LoopStats struct {
	Loop        int
	Conns       int64 // live connections
	Accepts     int64
	AcceptErrs  int64
	Reads       int64 // read calls that returned data
	Writes      int64 // write calls that wrote data
	BytesIn     int64
	BytesOut    int64
	Wakeups     int64 // cross-loop wake-ups received
	Yields      int64 // WaitPark: kicks that got a thread for a parked sibling loop with work (wait.go)
	QueuedBytes int64 // output not yet taken by the kernel
	QueueLen    int64 // cross-loop messages waiting
	Stale       int64 // events and messages dropped for a stale handle
	Draining    int64 // closed sockets held until the peer acknowledges their output
	Busy        time.Duration
	Wait        time.Duration // time blocked in the poller: Busy/(Busy+Wait) is utilization
}

// Stats returns every loop's counters; safe from any goroutine.
func (e *Engine) Stats() []LoopStats {
	out := make([]LoopStats, len(e.loops))
	for i, l := range e.loops {
		out[i] = LoopStats{
			Loop: i, Conns: l.conns.Load(), Accepts: l.accepts.Load(), AcceptErrs: l.acceptErrs.Load(),
			Reads: l.reads.Load(), Writes: l.writes.Load(), BytesIn: l.bytesIn.Load(), BytesOut: l.bytesOut.Load(),
			Wakeups: l.wakeups.Load(), Yields: l.yields.Load(), QueuedBytes: l.queuedBytes.Load(), QueueLen: l.q.length.Load(),
			Stale: l.stale.Load(), Draining: l.ndraining.Load(), Busy: time.Duration(l.busyNs.Load()), Wait: time.Duration(l.waitNs.Load()),
		}
	}
	return out
}
