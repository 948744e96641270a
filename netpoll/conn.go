package netpoll

import (
	"errors"
	"net/netip"
	"time"
)

// Conn is one connection's record in its loop's slab: 32 bytes, no pointers
// (the slab adds 4 bytes of generation and the timer wheel 24 bytes of node,
// so the engine's whole per-connection cost is 60 bytes plus the kernel's
// socket). An idle connection owns no buffer: pend and out are set only while
// a partial input frame or unwritten output exists.
//
// A *Conn is owned by its loop and is valid only inside the Handler callback
// that passed it (or the Loop.Conn call that returned it); use Handle to name
// the connection elsewhere.
type Conn struct {
	fd    int32
	slot  uint32
	gen   uint32
	loop  uint16 // index in loopTable
	flags uint16
	pend  uint32 // index+1 of the partial-input buffer in the loop's table, 0 = none
	out   uint32 // index+1 of the output buffer, 0 = none
	user  uint64
}

const (
	flagClosing    uint16 = 1 << iota // close requested: no more reads or writes
	flagDirty                         // on the loop's flush list
	flagWriteArmed                    // writability is being watched
	flagLinger                        // closing, waiting for output to drain
)

// errConnClosing is returned by Write on a connection that is closing.
var errConnClosing = errors.New("netpoll: connection is closing")

func (c *Conn) l() *Loop { return loopTable[c.loop].Load() }

// Handle returns the connection's concurrency-safe name.
func (c *Conn) Handle() Handle {
	return Handle(uint64(c.l().id)<<56 | uint64(c.gen)<<32 | uint64(c.slot))
}

// Slot returns the connection's slot in its loop's slab.
func (c *Conn) Slot() uint32 { return c.slot }

// LoopID returns the index of the connection's loop in its engine.
func (c *Conn) LoopID() int { return c.l().id }

// Loop returns the connection's loop.
func (c *Conn) Loop() *Loop { return c.l() }

// Fd returns the socket's file descriptor (for socket options; never close it).
func (c *Conn) Fd() int { return int(c.fd) }

// User and SetUser keep one word of handler state per connection.
func (c *Conn) User() uint64 { return c.user }

// SetUser sets the handler's word of state.
func (c *Conn) SetUser(v uint64) { c.user = v }

// RemoteAddr returns the peer's address (one getpeername call; the record does
// not keep it, to stay small).
func (c *Conn) RemoteAddr() netip.AddrPort { return peerAddr(int(c.fd)) }

// Closing reports whether Close was called or the engine is closing it.
func (c *Conn) Closing() bool { return c.flags&flagClosing != 0 }

// Queued returns the bytes written but not yet taken by the kernel.
func (c *Conn) Queued() int {
	if c.out == 0 {
		return 0
	}
	b := &c.l().bufs[c.out-1]
	return len(b.b) - b.off
}

// Write copies p to the connection's output. Writes made during one loop
// iteration are coalesced and flushed with one write at its end; what the
// kernel does not take stays queued, with writability watched, until it
// drains. Past Config.MaxQueued the connection is closed with ErrBacklog,
// which Write also returns.
func (c *Conn) Write(p []byte) error {
	if c.flags&flagClosing != 0 {
		return errConnClosing
	}
	l := c.l()
	if c.out == 0 {
		c.out = l.takeBuf(len(p)) + 1
	}
	b := &l.bufs[c.out-1]
	b.b = l.grow(b, len(p))
	b.b = append(b.b, p...)
	if c.flags&flagTransport != 0 {
		b.plain += len(p) // wrapped at the flush (Loop.wrapPending)
	}
	queued := len(b.b) - b.off
	l.queuedBytes.Add(int64(len(p)))
	if int64(queued) > l.e.maxQueued.Load() {
		// The peer is not reading: its queued output is dropped, not
		// lingered over.
		c.flags |= flagClosing
		l.closes = append(l.closes, closeReq{slot: c.slot, gen: c.gen, reason: ErrBacklog, now: true})
		return ErrBacklog
	}
	if c.flags&(flagDirty|flagWriteArmed) == 0 {
		c.flags |= flagDirty
		l.dirty = append(l.dirty, c.slot)
	}
	return nil
}

// Close closes the connection after flushing what the kernel takes (waiting
// up to the linger time for the rest). OnClose receives reason. Calling it
// again has no effect.
func (c *Conn) Close(reason error) {
	if c.flags&flagClosing != 0 {
		return
	}
	l := c.l()
	if c.flags&flagTransport != 0 {
		l.e.cfg.Transport.Close(c, reason) // may still write (close_notify)
	}
	c.flags |= flagClosing
	l.closes = append(l.closes, closeReq{slot: c.slot, gen: c.gen, reason: reason})
}

// SetDeadline arms the connection's timer to fire OnTimer after d (0 or less
// cancels it). One timer per connection; setting it again replaces it.
func (c *Conn) SetDeadline(d time.Duration) {
	if c.flags&flagClosing != 0 {
		return // the linger timer owns the wheel entry now
	}
	l := c.l()
	if d <= 0 {
		l.wheel.Cancel(c.slot)
		return
	}
	ticks := int64((d + l.tick - 1) / l.tick)
	l.wheel.Add(c.slot, l.tickOf(l.now)+ticks)
}

// Backlogged reports whether the kernel pushed back on the connection's
// output: writability is watched, so the loop runs again when it drains.
func (c *Conn) Backlogged() bool { return c.flags&flagWriteArmed != 0 }
