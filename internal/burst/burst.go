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
// runtime's own pacing stays in charge, with the room a Counter's Headroom
// gives it while the burst lasts (raiseGC).
package burst

import (
	"errors"
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
	// Headroom, set before the first handshake, is the heap room (bytes
	// over the live heap) that the collector leaves while a burst of
	// this kind is armed; 0, none. See raiseGC.
	Headroom int64

	inProgress atomic.Int64
	since      atomic.Int64  // handshakes ended since the last scavenge
	armed      atomic.Bool   // a scavenge check is pending
	lastEnd    atomic.Int64  // unix nanos: the last handshake's end
	window     atomic.Int64  // unix nanos: when since began counting
	allocs     atomic.Uint64 // heapAllocs at the previous check
	scavenges  atomic.Uint64
	gcRaised   atomic.Bool // this Counter counts in gc.raised (raiseGC)
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
		if c.Headroom > 0 && c.gcRaised.CompareAndSwap(false, true) {
			raiseGC(c.Headroom)
		}
		c.allocs.Store(heapAllocs())
		time.AfterFunc(Quiet, c.scavenge)
	}
}

// The collector's percent while a burst with Headroom is armed: a TLS
// handshake leaves 20-100 KB of garbage and the live heap of a server with
// few sessions is small, so at the default GOGC=100 a churn of handshakes
// collects several times a second (measured: 12.5% of edged's CPU in the
// collector during a resumed-handshake churn of 1,000 clients). While a
// burst is armed the percent is raised so that the heap may grow by about
// Headroom over the live data, worked out again at every check of the
// burst (so as the sessions the burst brings grow the live heap, the
// percent comes down, and the extra heap stays about Headroom; never below
// the percent in force before: a heap that already has that much room
// keeps it; a GOMEMLIMIT still bounds it). It is put back when the burst
// is over, just before the scavenge returns that room, or at Shutdown. A
// percent someone changed meanwhile (the GOGC knob) becomes the one to
// keep. With many sessions the live heap alone gives the room and nothing
// changes.
var gc struct {
	sync.Mutex
	raised int   // Counters with gcRaised
	room   int64 // the largest Headroom among them
	saved  int   // the percent to put back
	set    int   // the percent in force that retuneLocked set; 0 if none
}

func raiseGC(room int64) {
	gc.Lock()
	defer gc.Unlock()
	gc.raised++
	gc.room = max(gc.room, room)
	retuneLocked()
}

// retuneGC works the raised percent out again for the live heap now.
func retuneGC() {
	gc.Lock()
	defer gc.Unlock()
	if gc.raised > 0 {
		retuneLocked()
	}
}

func retuneLocked() {
	cur := int(readUint("/gc/gogc:percent"))
	if gc.set != 0 && cur != gc.set {
		gc.set = 0 // changed by someone else: theirs to keep
	}
	base := cur
	if gc.set != 0 {
		base = gc.saved
	}
	if base <= 0 { // the collector is off
		return
	}
	live := int64(readUint("/gc/heap/live:bytes"))
	if live <= 0 { // no collection has finished yet: what is allocated, garbage too
		live = int64(readUint("/memory/classes/heap/objects:bytes"))
	}
	want := base
	if live > 0 {
		want = max(base, int(min(gc.room*100/live, 1<<20)))
	}
	switch {
	case want == base && gc.set != 0:
		debug.SetGCPercent(base)
		gc.set = 0
	case want != base && want != gc.set:
		gc.saved = base
		debug.SetGCPercent(want)
		gc.set = want
	}
}

func lowerGC() {
	gc.Lock()
	defer gc.Unlock()
	gc.raised--
	if gc.raised > 0 {
		return
	}
	gc.room = 0
	if gc.set != 0 && int(readUint("/gc/gogc:percent")) == gc.set {
		debug.SetGCPercent(gc.saved)
	}
	gc.set = 0
}

// readUint reads one runtime/metrics value; 0 if the runtime has no such
// uint64 metric.
func readUint(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// heapAllocs is the bytes the heap has allocated since the process started.
func heapAllocs() uint64 { return readUint("/gc/heap/allocs:bytes") }

func (c *Counter) scavenge() {
	a := heapAllocs()
	busy := a-c.allocs.Swap(a) > QuietAlloc
	if quiet := time.Duration(time.Now().UnixNano() - c.lastEnd.Load()); quiet < Quiet || c.inProgress.Load() != 0 || busy {
		if c.gcRaised.Load() {
			retuneGC()
		}
		time.AfterFunc(Quiet-min(quiet, Quiet/2), c.scavenge) // the burst goes on
		return
	}
	c.since.Store(0)
	c.armed.Store(false)
	c.lowerGC()
	// sync.Pools keep what a burst put back for one collection more (their
	// victim cache): a first collection moves it there, the one in
	// FreeOSMemory frees it before the heap goes back.
	runtime.GC()
	debug.FreeOSMemory()
	c.scavenges.Add(1)
}

// lowerGC ends this Counter's part in the raised percent, once.
func (c *Counter) lowerGC() {
	if c.gcRaised.Swap(false) {
		lowerGC()
	}
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
	active map[*Conn]struct{}
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

// Conn takes over fd, a non-blocking socket, for a handshake to run on
// with blocking reads and writes in Go's own poller, tracked so that
// Shutdown closes it. The Conn owns fd from here on: Close closes it, and
// Detach hands a duplicate back for an event loop.
//
// os.NewFile registers fd with the poller as it is (it only reads its
// flags); net.FileConn would dup it and read its type and both addresses
// first, four system calls and a netFD per handshake that crypto/tls
// never looks at (measured: burst.Conn was 4% of edged's CPU during a
// resumed-handshake churn).
func (g *Group) Conn(fd int, name string) (*Conn, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, ErrClosed
	}
	c := &Conn{File: os.NewFile(uintptr(fd), name), g: g}
	if g.active == nil {
		g.active = make(map[*Conn]struct{})
	}
	g.active[c] = struct{}{}
	return c, nil
}

// Conn is a socket a handshake runs on (Group.Conn). Its Read, Write and
// deadlines are the os.File's; it is a net.Conn without addresses.
type Conn struct {
	*os.File
	g *Group
}

// Close stops tracking c and closes its socket.
func (c *Conn) Close() error {
	c.untrack()
	return c.File.Close()
}

func (c *Conn) untrack() {
	c.g.mu.Lock()
	delete(c.g.active, c)
	c.g.mu.Unlock()
}

// Detach ends the handshake's use of the socket: it returns a duplicate
// of it, outside Go's poller and still non-blocking (the flag belongs to
// the open file, which the duplicate shares), and closes c. After
// Shutdown, or if c was closed, it fails and returns no descriptor.
func (c *Conn) Detach() (int, error) {
	c.untrack()
	rc, err := c.File.SyscallConn()
	if err != nil {
		c.File.Close()
		return -1, err
	}
	fd := -1
	// Untracked, c is not Shutdown's to close any more; one that closed
	// it before makes Control fail.
	cerr := rc.Control(func(s uintptr) {
		fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	})
	c.File.Close()
	if cerr != nil {
		return -1, cerr
	}
	if err != nil {
		return -1, os.NewSyscallError("fcntl", err)
	}
	return fd, nil
}

// LocalAddr is nil: crypto/tls does not ask for it.
func (c *Conn) LocalAddr() net.Addr { return nil }

// RemoteAddr is nil: crypto/tls does not ask for it.
func (c *Conn) RemoteAddr() net.Addr { return nil }

// Shutdown closes the connections of the handshakes in progress (they
// fail), waits for their goroutines, makes later Conns fail, and puts a
// percent its burst raised back.
func (g *Group) Shutdown() {
	g.mu.Lock()
	g.closed = true
	for c := range g.active {
		c.File.Close() // Close would take mu
	}
	g.mu.Unlock()
	g.wg.Wait()
	g.lowerGC() // a burst's check may go on; it finds this done
}
