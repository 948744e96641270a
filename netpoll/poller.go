package netpoll

// The poller contract. Every platform file provides:
//
//	func openPoller() (*poller, error)
//	    a new poller with a wake-up source already registered.
//	func (p *poller) addListener(fd, group int) error
//	    level-triggered readability of a listening socket (cookie
//	    cookieListener|group).
//	func (p *poller) addConn(fd int, cookie uint64) error
//	    edge-triggered readability and peer-hangup of a connection.
//	func (p *poller) armWrite(fd int, cookie uint64, on bool) error
//	    adds (on) or removes edge-triggered writability for a connection.
//	func (p *poller) wait(evs []event, timeoutMs int) (int, error)
//	    blocks up to timeoutMs (-1 forever) and fills evs; EINTR returns 0, nil.
//	func (p *poller) wake() error
//	    makes a concurrent or later wait return; safe from any goroutine.
//	func (p *poller) drainWake()
//	    consumes pending wake-ups after wait reported cookieWake.
//	func (p *poller) close() error
//
// A connection's registration disappears when its fd is closed, so there is
// no explicit delete.

// event is one readiness report, platform-neutral.
type event struct {
	cookie   uint64
	readable bool
	writable bool
	hangup   bool // peer closed its write side or the socket errored
}

// Cookies: connections use gen<<32|slot (gen is 24 bits and never 0), so
// values with the top bit set cannot collide with them. A listener's cookie
// carries its group index in the low bits.
const (
	cookieWake     uint64 = 1 << 63
	cookieListener uint64 = 1<<63 | 1<<62
)

// maxEvents is the size of each loop's reused event buffer: large enough to
// take a burst of readiness in one syscall, small enough to keep a loop
// responsive to its queue and timers between batches.
const maxEvents = 256

// Also: func (p *poller) delListener(fd int) error stops watching a listener
// (accepting pauses, e.g. on EMFILE, until addListener is called again).

// For WaitPark (wait.go), every platform file also provides:
//
//	const canPark bool
//	    whether park works; if not, WaitPark runs as WaitBlock.
//	func (p *poller) park(evs []event, deadline time.Time) (int, error)
//	    wait's counterpart for a goroutine that does not hold its thread:
//	    parks on the Go runtime's poller until events are ready (and
//	    fills evs), the deadline passes (0, nil; zero: no deadline) or
//	    the poller is closed. A wake (or any readiness) that happens
//	    after the call starts makes it return: no lost wake-up.
//	func (p *poller) pending() bool
//	    whether events are ready, without taking them; safe from any
//	    goroutine (false where park is not supported).
