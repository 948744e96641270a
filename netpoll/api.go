package netpoll

import (
	"errors"
	"time"

	"github.com/edgedhq/edged/internal/unsupported"
)

// Handler receives a loop's events. Every method is called on the loop that
// owns the connection, never concurrently for the same loop, so a handler may
// keep per-loop state without locks. A *Conn is valid only during the call
// that passes it: keep c.Handle() to reach the connection later.
type Handler interface {
	// OnOpen is called once for each accepted connection, before any data.
	OnOpen(c *Conn)
	// OnData is called with the bytes read so far that were not consumed
	// before. data is valid only during the call (it usually points into
	// the loop's shared read buffer). The handler returns how many bytes it
	// consumed; the rest is kept and passed again, with more, on the next
	// call. A non-nil error closes the connection with that reason.
	OnData(c *Conn, data []byte) (consumed int, err error)
	// OnTimer is called when the connection's deadline set with
	// c.SetDeadline passes.
	OnTimer(c *Conn)
	// OnMessage is called for a Message posted with Engine.Post to this
	// connection's handle; the handle's generation was checked, so c is the
	// connection the poster named, never a reused slot.
	OnMessage(c *Conn, m *Message)
	// OnClose is called once when the connection closes, with the reason
	// (io.EOF for an orderly close by the peer). After it returns the slot
	// is released and then the file descriptor is closed.
	OnClose(c *Conn, reason error)
}

// LoopHandler is implemented by handlers that also want loop-level events.
type LoopHandler interface {
	// OnLoopMessage is called for a Message posted with Engine.PostLoop.
	OnLoopMessage(l *Loop, m *Message)
	// OnTick is called once per loop iteration after the events and the
	// queued messages were handled, before buffered writes are flushed.
	OnTick(l *Loop)
}

// Message is a unit of cross-loop work. It is copied into the target loop's
// queue; Data and Ref are handed over, the poster must not touch them again.
type Message struct {
	Kind uint32
	Arg  uint64
	Data []byte
	Ref  any
}

// Handle names a connection from anywhere: loop (8 bits), generation (24
// bits), slot (32 bits). The zero Handle names no connection.
type Handle uint64

// Config tunes an Engine. The zero value of each field picks its default.
type Config struct {
	// Addr is the TCP listen address, "host:port".
	Addr string
	// ExtraAddrs are more listen addresses, each its own listener group
	// (one listener per loop) served by the same loops: e.g. a public
	// and a private NIC's service addresses, steered apart with eBPF.
	ExtraAddrs []string
	// Loops is the number of event loops (default GOMAXPROCS).
	Loops int
	// DisableReusePort turns off the default of one listening socket per
	// loop in a SO_REUSEPORT group; then (and where the option is missing)
	// one shared listener is accepted from by loop 0, which hands the
	// connections round-robin to the loops.
	DisableReusePort bool
	// ReadBufferSize is the per-loop read buffer (default 64 KiB).
	ReadBufferSize int
	// MaxPending caps the partial-frame bytes a connection may hold
	// (default 1 MiB); past it the connection is closed with ErrPendingFull.
	MaxPending int
	// PartialTimeout is how long a connection may hold an incomplete frame
	// (bytes OnData left unconsumed) before it is closed with
	// ErrPartialTimeout, whatever the handler's own deadlines (default 30 s;
	// negative: no limit). It is measured from the first byte of the frame
	// that is still incomplete, so trickling bytes do not extend it, and
	// checked every PartialTimeout/8 (at least one TimerTick, at most 1 s).
	PartialTimeout time.Duration
	// MaxPartialBytes caps the memory (buffer capacity, bytes) held for
	// incomplete frames by all connections of the engine together (default
	// 256 MiB; negative: no cap). A connection whose partial frame would push
	// the total past it is closed with ErrPartialBudget and its bytes are
	// dropped; other connections are not touched.
	MaxPartialBytes int64
	// MaxQueued caps a connection's unwritten output (default 4 MiB);
	// past it the connection is closed with ErrBacklog.
	MaxQueued int
	// SndBuf and RcvBuf set SO_SNDBUF/SO_RCVBUF on accepted sockets if > 0.
	SndBuf, RcvBuf int
	// Backlog is the listen backlog (default 4096).
	Backlog int
	// TimerTick is the timer wheel resolution (default 10ms).
	TimerTick time.Duration
	// Wait is how an idle loop waits for its next event (see wait.go):
	// WaitPark parks the loop's goroutine on the Go runtime's poller,
	// WaitBlock holds a locked OS thread blocked in the poller's own wait.
	// Empty: the EDGED_LOOP_WAIT environment variable ("park" or "block"),
	// else DefaultWait. WaitPark falls back to WaitBlock where the
	// platform's poller cannot be parked on (kqueue, for now).
	Wait WaitMode
	// Listeners, if set, are inherited listening sockets to serve instead
	// of binding Addr and ExtraAddrs: Listeners[g][i] is address group g's
	// socket for loop i (one per loop with SO_REUSEPORT, else one), as
	// Engine.GroupFDs of the engine that handed them over returned them.
	// The engine owns them from New on.
	Listeners [][]int
	// Handler receives the events; required.
	Handler Handler
	// LiveHook, if set, is called on the loop's thread at the end of each
	// iteration in which the loop's number of connections changed (after an
	// accept batch and after closes), e.g. to keep eBPF steering's
	// live-connection map current. It must be cheap and must not block.
	LiveHook func(loop int, live int)
	// Handoff, if set, is offered each accepted socket with the loop that
	// would own it and its listener group (0 = Addr, i = ExtraAddrs[i-1])
	// before it becomes a connection. Returning true takes the fd over (the
	// engine forgets it): e.g. a TLS handshake off the loop, after which
	// Engine.Adopt brings it back. Called on the accepting loop: it must
	// not block.
	Handoff func(loop, group, fd int) bool
	// Transport wraps the bytes of connections adopted with Engine.Adopt
	// (see Transport); others bypass it.
	Transport Transport
	// Logf receives the engine's rare log lines (default log.Printf).
	Logf func(format string, args ...any)
}

// Sentinel errors. Close reasons passed to OnClose wrap one of these or are
// io.EOF / a syscall error.
var (
	ErrClosed          = errors.New("netpoll: engine closed")
	ErrStaleHandle     = errors.New("netpoll: stale handle")
	ErrBacklog         = errors.New("netpoll: output queue over its cap")
	ErrPendingFull     = errors.New("netpoll: partial frame over its cap")
	ErrPartialTimeout  = errors.New("netpoll: partial frame not completed in time")
	ErrPartialBudget   = errors.New("netpoll: partial frames of all connections over their cap")
	ErrShutdown        = errors.New("netpoll: shutting down")
	ErrUnsupported     = unsupported.New("netpoll: not supported on this platform") // wraps errors.ErrUnsupported
	ErrClosedByHandler = errors.New("netpoll: closed by handler")
	ErrAddrInUse       = errors.New("netpoll: address in use by another listener")
	errNoTransport     = errors.New("netpoll: adopt: the engine has no Transport")
)
