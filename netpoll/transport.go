package netpoll

// Transport sits between a connection's socket and the Handler, for the
// connections adopted with Engine.Adopt: TLS record protection today, a
// WebSocket framing layer could take the same place. The Handler sees only
// the Transport's payload bytes (OnData) and writes only payload bytes
// (Conn.Write); the Transport sees the wire.
//
// Every method is called on the connection's loop, like the Handler's, so a
// Transport keeps its per-connection state in its own per-loop tables indexed
// by c.Slot() without locks. A Transport must not block.
type Transport interface {
	// Attach is called once when Engine.Adopt's connection becomes c,
	// before Handler.OnOpen, with the state Adopt was given. An error
	// closes the connection (OnOpen and OnClose are not called).
	Attach(c *Conn, state any) error
	// Unwrap decodes the complete units (records, frames) at the start of
	// in, in place: their payload goes to in[:n] in order, and consumed
	// (>= n) is how many bytes of in they took. The bytes after consumed
	// are an incomplete unit, kept and passed again with more. On error
	// the first n bytes are still delivered, then the connection closes
	// with err as its reason. Unwrap may answer the peer (Conn.WriteWire).
	Unwrap(c *Conn, in []byte) (n, consumed int, err error)
	// Wrap appends the wire form of the payload p (the output the handler
	// wrote since the last flush, coalesced) to dst and returns it.
	Wrap(c *Conn, dst, p []byte) ([]byte, error)
	// Close is called when the connection starts to close (Conn.Close,
	// and for every connection at engine shutdown), while it can still
	// write: e.g. to send a TLS close_notify with Conn.WriteWire. It is
	// not called for a close on a socket error or a poller failure.
	Close(c *Conn, reason error)
	// Closed is called after Handler.OnClose, to release c's state.
	Closed(c *Conn)
}

// flagTransport marks a connection whose bytes pass through
// Config.Transport (it was adopted with a transport state).
const flagTransport = flagLinger << 1

// WriteWire appends p, already in wire form, to the connection's output
// after the payload written before it (which is wrapped first, so the
// order on the wire is the order of the calls). It is for Transports (a
// TLS alert or KeyUpdate); on a connection without a transport it is Write.
func (c *Conn) WriteWire(p []byte) error {
	if c.flags&flagTransport == 0 {
		return c.Write(p)
	}
	if c.flags&flagClosing != 0 {
		return errConnClosing
	}
	l := c.l()
	if c.out != 0 {
		if err := l.wrapPending(c); err != nil {
			return err
		}
	}
	if err := c.Write(p); err != nil {
		return err
	}
	l.bufs[c.out-1].plain = 0 // p is wire bytes: nothing to wrap
	return nil
}

// wrapPending replaces the connection's unwrapped output (the last
// b.plain bytes of its output buffer) with its wire form.
func (l *Loop) wrapPending(c *Conn) error {
	b := &l.bufs[c.out-1]
	if b.plain == 0 {
		return nil
	}
	start := len(b.b) - b.plain
	var err error
	l.wrapBuf, err = l.e.cfg.Transport.Wrap(c, l.wrapBuf[:0], b.b[start:])
	if err != nil {
		return err
	}
	b.b = b.b[:start]
	b.b = l.grow(b, len(l.wrapBuf))
	b.b = append(b.b, l.wrapBuf...)
	l.queuedBytes.Add(int64(len(l.wrapBuf) - b.plain))
	b.plain = 0
	if cap(l.wrapBuf) > wrapKeep {
		l.wrapBuf = nil // one large burst does not pin its buffer for ever
	}
	return nil
}

// wrapKeep is the largest wrap scratch buffer a loop keeps between
// flushes: a few full TLS records.
const wrapKeep = 64 << 10

// Adopt makes fd, a connected socket that the Handoff hook took, a
// connection of loop i whose bytes pass through Config.Transport:
// Transport.Attach gets state, then Handler.OnOpen runs, then initial
// (wire bytes already read from the socket, may be nil) is delivered as if
// just read. Safe from any goroutine. On ErrClosed or a bad loop index the
// fd is closed here.
func (e *Engine) Adopt(i int, fd int, state any, initial []byte) error {
	if e.cfg.Transport == nil {
		sysClose(fd)
		return errNoTransport
	}
	if i < 0 || i >= len(e.loops) {
		sysClose(fd)
		return ErrStaleHandle
	}
	l := e.loops[i]
	l.posters.Add(1)
	defer l.posters.Add(-1)
	if e.closing.Load() {
		sysClose(fd)
		return ErrClosed
	}
	if state == nil {
		state = noState{}
	}
	l.post(item{kind: kindAdopt, msg: Message{Arg: uint64(fd), Data: initial, Ref: state}})
	return nil
}

// noState stands for a nil Adopt state: a nil Ref means "no transport".
type noState struct{}
