// Package burst counts handshakes in progress (TLS off the event loops,
// WebSocket upgrades on them; MQTT CONNECTs, which end where they begin),
// bounds them, and returns the heap a burst of them leaves behind to the OS
// once the burst is over.
//
// A TLS handshake allocates buffers that are garbage once it ends
// (crypto/tls: some 50-100 KB; a WebSocket upgrade allocates next to
// nothing, so after a burst of those alone the scavenge finds little to
// return). With the default GOGC the heap keeps
// room for twice the live data, so after a burst the process would hold its
// peak (measured for TLS: 51 MB of RSS for 23 MB in use after 10,000) until
// the background scavenger slowly returns it. So once at least After
// handshakes ended within Window (a burst: sparse churn never adds up to
// one, however long it runs), a check is armed: when none has
// ended for Quiet and none is in progress, and the heap allocated at most
// QuietAlloc since the previous check (the burst is over, and so is what it
// set going: the first messages of the new sessions, which fill pools), the
// heap is returned at once (two GCs, the second in debug.FreeOSMemory, so that
// what the burst left in sync.Pools is freed too; cheap over the
// pointer-free slabs). Under steady churn, which never pauses, the
// runtime's own pacing stays in charge.
package burst

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The scavenge thresholds.
const (
	After      = 1000
	Quiet      = 2 * time.Second
	QuietAlloc = 1 << 20 // bytes allocated between two checks (Quiet/2 to Quiet apart) that still count as quiet
	// Window is how close together After handshakes must end to make a
	// burst: the count starts again once its first is older than this
	// (found in review: counted forever, reconnects at 0.5/s armed a
	// scavenge, some seconds of GC work at 2M sessions, every half hour).
	Window = time.Minute
)

// Counter counts one kind of handshake; the zero value is ready. Its
// methods are safe for concurrent use.
type Counter struct {
	inProgress atomic.Int64
	since      atomic.Int64  // handshakes ended since the last scavenge
	armed      atomic.Bool   // a scavenge check is pending
	lastEnd    atomic.Int64  // unix nanos: the last handshake's end
	window     atomic.Int64  // unix nanos: when since began counting
	allocs     atomic.Uint64 // heapAllocs at the previous check
	scavenges  atomic.Uint64
}

// Start counts a handshake that begins; false (and not counted) if max
// are already in progress.
func (c *Counter) Start(max int) bool {
	if c.inProgress.Add(1) > int64(max) {
		c.inProgress.Add(-1)
		return false
	}
	return true
}

// Done counts the end of a handshake that Start counted.
func (c *Counter) Done() {
	c.inProgress.Add(-1)
	c.Ended()
}

// Ended counts a handshake that Start did not count because it is handled
// in one step, never in progress across a wait (an MQTT CONNECT on an event
// loop): it ends a burst like any other.
func (c *Counter) Ended() {
	now := time.Now().UnixNano()
	c.lastEnd.Store(now)
	if w := c.window.Load(); now-w > int64(Window) && !c.armed.Load() && c.window.CompareAndSwap(w, now) {
		c.since.Store(0) // a new window: the ends before it were no burst
	}
	if c.since.Add(1) >= After && c.armed.CompareAndSwap(false, true) {
		c.allocs.Store(heapAllocs())
		time.AfterFunc(Quiet, c.scavenge)
	}
}

// heapAllocs is the bytes the heap has allocated since the process started.
func heapAllocs() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

func (c *Counter) scavenge() {
	a := heapAllocs()
	busy := a-c.allocs.Swap(a) > QuietAlloc
	if quiet := time.Duration(time.Now().UnixNano() - c.lastEnd.Load()); quiet < Quiet || c.inProgress.Load() != 0 || busy {
		time.AfterFunc(Quiet-min(quiet, Quiet/2), c.scavenge) // the burst goes on
		return
	}
	c.since.Store(0)
	c.armed.Store(false)
	c.scavenges.Add(1)
	// sync.Pools keep what a burst put back for one collection more (their
	// victim cache): a first collection moves it there, the one in
	// FreeOSMemory frees it before the heap goes back.
	runtime.GC()
	debug.FreeOSMemory()
}

// InProgress is the handshakes in progress.
func (c *Counter) InProgress() int64 { return c.inProgress.Load() }

// Scavenges is how many times the heap was returned after a burst.
func (c *Counter) Scavenges() uint64 { return c.scavenges.Load() }

// Group runs handshakes on goroutines of their own, off the loops: a Counter
// bounds them, and Shutdown ends those in progress and waits for them. The
// zero value is ready; its methods are safe for concurrent use.
type Group struct {
	Counter
	mu     sync.Mutex // guards active and closed
	active map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// ErrClosed is Conn's error once Shutdown has run.
var ErrClosed = errors.New("burst: shut down")

// Go runs fn on a goroutine of its own, counted as a handshake in
// progress; false (fn not run) if max are in progress already or Shutdown
// has run.
func (g *Group) Go(max int, fn func()) bool {
	g.mu.Lock()
	if g.closed || !g.Start(max) {
		g.mu.Unlock()
		return false
	}
	g.wg.Add(1) // under mu: never concurrent with Shutdown's Wait
	g.mu.Unlock()
	go func() {
		defer g.wg.Done()
		defer g.Done()
		fn()
	}()
	return true
}

// Conn returns a duplicate of fd as a net.Conn in Go's poller, for a
// handshake to run on with blocking reads and writes, and tracked so that
// Shutdown closes it; fd stays the caller's (for the loop). done closes
// the duplicate only (which removes it from Go's poller).
//
// net.FileConn dups the descriptor it is given and os.File owns (and
// finalizes) its own: hence the explicit dup, closed with the os.File.
func (g *Group) Conn(fd int, name string) (nc net.Conn, done func(), err error) {
	dup, err := unix.Dup(fd)
	if err != nil {
		return nil, nil, os.NewSyscallError("dup", err)
	}
	file := os.NewFile(uintptr(dup), name)
	nc, err = net.FileConn(file)
	file.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("%s socket: %w", name, err)
	}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		nc.Close()
		return nil, nil, ErrClosed
	}
	if g.active == nil {
		g.active = make(map[net.Conn]struct{})
	}
	g.active[nc] = struct{}{}
	g.mu.Unlock()
	return nc, func() {
		g.mu.Lock()
		delete(g.active, nc)
		g.mu.Unlock()
		nc.Close()
	}, nil
}

// Shutdown closes the connections of the handshakes in progress (they
// fail), waits for their goroutines, and makes later Conns fail.
func (g *Group) Shutdown() {
	g.mu.Lock()
	g.closed = true
	for nc := range g.active {
		nc.Close()
	}
	g.mu.Unlock()
	g.wg.Wait()
}
