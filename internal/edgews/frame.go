package edgews

import (
	"encoding/binary"
	"errors"
	"unicode/utf8"
	"unsafe"

	"github.com/edgedhq/edged/internal/edgetls"
	"github.com/edgedhq/edged/internal/slots"
	"github.com/edgedhq/edged/netpoll"
)

// connState is a WebSocket connection's framing state in its loop's table:
// 12 pointer-free bytes. A data frame's payload is unmasked as it arrives
// (the handler sees MQTT bytes before the frame is complete), so the state
// is only what the rest of the current frame needs: how much is left and
// its masking key.
type connState struct {
	remain uint32  // payload bytes of the current data frame still to come (upgrading: the listener's path index)
	mask   [4]byte // its masking key, rotated so that mask[0] applies to the next byte
	flags  uint8
}

const (
	stLive      uint8 = 1 << iota // attached to a WebSocket connection
	stTLS                         // wss: the frames travel inside Server.lower's records
	stFragment                    // inside a fragmented message: the next data frame must be a continuation
	stCloseSent                   // our close frame went out: send nothing more
	stUpgrading                   // ws:// on its loop: the HTTP upgrade has not completed (no frames yet)
)

// StateBytes is the framing state one WebSocket connection holds (its
// connState), for capacity estimates.
const StateBytes = int(unsafe.Sizeof(connState{}))

// Opcodes (RFC 6455 5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

// Close status codes (RFC 6455 7.4.1).
const (
	CloseNormal      uint16 = 1000
	CloseGoingAway   uint16 = 1001
	CloseProtocol    uint16 = 1002
	CloseUnsupported uint16 = 1003
	CloseBadData     uint16 = 1007
	ClosePolicy      uint16 = 1008
	CloseTooBig      uint16 = 1009
)

// maxControl is the largest control frame payload (RFC 6455 5.5), and
// maxControlFrame the largest control frame from a client: header, mask,
// payload. An incomplete frame that the decoder leaves for later is at most
// this long (data frames are streamed).
const (
	maxControl      = 125
	maxControlFrame = 2 + 4 + maxControl
)

// Errors of the framing layer: the close reasons of a connection whose
// client broke RFC 6455 or this server's rules. ErrBadFrame covers reserved
// bits, unknown opcodes, fragmented or long control frames, stray
// continuations, non-minimal lengths and bad close frames.
var (
	ErrBadFrame  = errors.New("edgews: bad frame")
	ErrTextFrame = errors.New("edgews: text frame (MQTT travels in binary frames)")
	ErrUnmasked  = errors.New("edgews: unmasked frame from the client")
	ErrTooBig    = errors.New("edgews: frame over the size limit")
	ErrPeerClose = errors.New("edgews: close frame from the client")

	errBusy = errors.New("edgews: too many upgrades in progress")
)

// frameError is a framing error with the status code our close frame carries.
type frameError struct {
	code uint16
	kind error
	msg  string
}

func (e *frameError) Error() string { return e.kind.Error() + ": " + e.msg }
func (e *frameError) Unwrap() error { return e.kind }

// Preallocated: a bad frame costs no allocation.
var (
	errReserved     = &frameError{CloseProtocol, ErrBadFrame, "reserved bits set"}
	errOpcode       = &frameError{CloseProtocol, ErrBadFrame, "unknown opcode"}
	errCtlFragment  = &frameError{CloseProtocol, ErrBadFrame, "fragmented control frame"}
	errCtlLong      = &frameError{CloseProtocol, ErrBadFrame, "control frame over 125 bytes"}
	errContinuation = &frameError{CloseProtocol, ErrBadFrame, "continuation frame outside a fragmented message"}
	errInterleaved  = &frameError{CloseProtocol, ErrBadFrame, "new data frame inside a fragmented message"}
	errLength       = &frameError{CloseProtocol, ErrBadFrame, "length not in its minimal form"}
	errCloseBody    = &frameError{CloseProtocol, ErrBadFrame, "close frame with a 1-byte body or an invalid status code"}
	errCloseUTF8    = &frameError{CloseBadData, ErrBadFrame, "close reason not UTF-8"}
	errText         = &frameError{CloseUnsupported, ErrTextFrame, "text frame"}
	errUnmasked     = &frameError{CloseProtocol, ErrUnmasked, "unmasked frame"}
	errTooBig       = &frameError{CloseTooBig, ErrTooBig, "data frame too long"}
	errPeerClose    = &frameError{CloseNormal, ErrPeerClose, "close frame"}
)

// loopState is one loop's tables; only that loop touches it.
type loopState struct {
	conns slots.Table[connState]
	// carry holds, for a wss connection, the decrypted bytes of a frame
	// header or control frame that is not complete yet (at most
	// maxControlFrame): the TLS records that brought them are consumed,
	// so the engine cannot keep them as wire bytes the way it does for ws.
	// Present only while such a fragment waits.
	carry map[uint32][]byte
	join  []byte // carry + new plaintext, while one is completed
	frame []byte // a frame built by the transport itself (pong, close)
	low   []byte // its TLS records, for wss
	ctl   [maxControl]byte
}

// get returns slot's framing state (the table grows in chunks of 256
// records, 3 KB).
func (ls *loopState) get(slot uint32) *connState { return ls.conns.Get(slot) }

func (s *Server) loopOf(c *netpoll.Conn) *loopState {
	i := c.LoopID()
	if s.loops[i] == nil {
		s.loops[i] = &loopState{} // by loop i only: no other goroutine reads s.loops[i]
	}
	return s.loops[i]
}

// state returns c's framing state, or nil if c is not a WebSocket
// connection (its bytes are Lower's alone).
func (s *Server) state(c *netpoll.Conn) (*loopState, *connState) {
	ls := s.loopOf(c)
	st := ls.get(c.Slot())
	if st.flags&stLive == 0 {
		return ls, nil
	}
	return ls, st
}

// adopted is the Engine.Adopt state of a ws:// connection.
type adopted struct{}

// Attach implements netpoll.Transport: a ws:// connection's state comes
// from Accept, a wss:// one's from edgetls (an *edgetls.Layered whose
// upper layer is ours); anything else is Lower's.
func (s *Server) Attach(c *netpoll.Conn, state any) error {
	ls := s.loopOf(c)
	switch st := state.(type) {
	case *pending:
		if !s.burst.Start(s.conf.MaxHandshakes) {
			s.fail(FailBusy) // the engine closes the socket; no OnClose counts it
			return errBusy
		}
		*ls.get(c.Slot()) = connState{flags: stLive | stUpgrading, remain: st.path}
		return nil // a session once upgraded
	case *adopted:
		*ls.get(c.Slot()) = connState{flags: stLive}
	case *edgetls.Layered:
		if _, ok := st.Upper.(*adopted); !ok || s.lower == nil {
			return s.lowerAttach(c, state)
		}
		if err := s.lower.Attach(c, state); err != nil {
			return err
		}
		*ls.get(c.Slot()) = connState{flags: stLive | stTLS}
	default:
		return s.lowerAttach(c, state)
	}
	s.sessions.Add(1)
	return nil
}

func (s *Server) lowerAttach(c *netpoll.Conn, state any) error {
	if s.lower == nil {
		return errors.New("edgews: attach: a state that is not a WebSocket's and no lower transport")
	}
	return s.lower.Attach(c, state)
}

// Closed implements netpoll.Transport.
func (s *Server) Closed(c *netpoll.Conn) {
	ls, st := s.state(c)
	if st == nil {
		if s.lower != nil {
			s.lower.Closed(c)
		}
		return
	}
	if st.flags&stUpgrading != 0 {
		s.burst.Done() // closed before its upgrade completed
	} else {
		s.sessions.Add(-1)
	}
	if st.flags&stTLS != 0 {
		s.lower.Closed(c)
		delete(ls.carry, c.Slot())
	}
	*st = connState{}
}

// Close implements netpoll.Transport: a close frame with the status code
// of the reason (then, for wss, TLS's close_notify or alert). After a TLS
// record error nothing more can be sent inside TLS, so no close frame.
func (s *Server) Close(c *netpoll.Conn, reason error) {
	ls, st := s.state(c)
	if st == nil {
		if s.lower != nil {
			s.lower.Close(c, reason)
		}
		return
	}
	if st.flags&stUpgrading != 0 {
		return // no WebSocket yet: nothing to close but the socket
	}
	if st.flags&stCloseSent == 0 && !(st.flags&stTLS != 0 && (errors.Is(reason, edgetls.ErrRecord) || errors.Is(reason, edgetls.ErrAlert))) {
		st.flags |= stCloseSent
		code := CloseNormal
		var fe *frameError
		switch {
		case errors.As(reason, &fe):
			code = fe.code
		case errors.Is(reason, netpoll.ErrShutdown):
			code = CloseGoingAway
		case s.conf.CloseCode != nil:
			code = s.conf.CloseCode(reason)
		}
		s.control(c, ls, st, opClose, binary.BigEndian.AppendUint16(ls.ctl[:0], code))
	}
	if st.flags&stTLS != 0 {
		s.lower.Close(c, reason)
	}
}

// control sends one control frame that the transport makes itself, after
// the payload the handler wrote before it.
func (s *Server) control(c *netpoll.Conn, ls *loopState, st *connState, op byte, body []byte) {
	if st.flags&stTLS == 0 {
		ls.frame = append(appendHeader(ls.frame[:0], op, len(body)), body...)
		c.WriteWire(ls.frame)
		return
	}
	// First wrap what was written before (TLS's sequence numbers follow
	// the wire order); that runs Wrap, which uses ls.frame too.
	if c.WriteWire(nil) != nil {
		return
	}
	ls.frame = append(appendHeader(ls.frame[:0], op, len(body)), body...)
	var err error
	if ls.low, err = s.lower.Wrap(c, ls.low[:0], ls.frame); err == nil {
		c.WriteWire(ls.low)
	}
}

// appendHeader appends a server frame header (FIN set, no mask: RFC 6455
// 5.1, a server never masks).
func appendHeader(dst []byte, op byte, n int) []byte {
	switch {
	case n < 126:
		return append(dst, 0x80|op, byte(n))
	case n <= 0xFFFF:
		return binary.BigEndian.AppendUint16(append(dst, 0x80|op, 126), uint16(n))
	}
	return binary.BigEndian.AppendUint64(append(dst, 0x80|op, 127), uint64(n))
}

// Wrap implements netpoll.Transport: p becomes one binary frame (inside
// TLS records for wss). One flush of a connection's output is one frame.
func (s *Server) Wrap(c *netpoll.Conn, dst, p []byte) ([]byte, error) {
	ls, st := s.state(c)
	if st == nil {
		return s.lower.Wrap(c, dst, p)
	}
	if st.flags&stUpgrading != 0 {
		return dst, nil // nothing of MQTT goes before the 101 (e.g. a refusal at the connection cap): dropped
	}
	if st.flags&stTLS == 0 {
		dst = appendHeader(dst, opBinary, len(p))
		return append(dst, p...), nil
	}
	ls.frame = appendHeader(ls.frame[:0], opBinary, len(p))
	ls.frame = append(ls.frame, p...)
	dst, err := s.lower.Wrap(c, dst, ls.frame)
	if cap(ls.frame) > frameKeep {
		ls.frame = nil // one large burst does not pin its buffer for ever
	}
	return dst, err
}

// frameKeep is the largest frame scratch buffer a loop keeps.
const frameKeep = 64 << 10

// Unwrap implements netpoll.Transport. For ws the frames are decoded in
// place in the wire bytes; for wss the TLS records are opened first (by
// Lower, in place) and the frames decoded in their plaintext.
func (s *Server) Unwrap(c *netpoll.Conn, in []byte) (n, consumed int, err error) {
	ls, st := s.state(c)
	if st == nil {
		return s.lower.Unwrap(c, in)
	}
	if st.flags&stUpgrading != 0 {
		return s.upgradeOnLoop(c, ls, st, in)
	}
	if st.flags&stTLS == 0 {
		return s.decode(c, ls, st, in)
	}
	plain, consumed, lerr := s.lower.Unwrap(c, in)
	p := in[:plain]
	slot := c.Slot()
	rest := p
	if carry := ls.carry[slot]; len(carry) > 0 {
		// The carried bytes are a header or a control frame: no payload,
		// so the payload decoded from carry+p fits in p.
		ls.join = append(append(ls.join[:0], carry...), p...)
		var used int
		n, used, err = s.decode(c, ls, st, ls.join)
		copy(in, ls.join[:n])
		rest = ls.join[used:]
	} else {
		var used int
		n, used, err = s.decode(c, ls, st, p)
		rest = p[used:]
	}
	switch {
	case err != nil || len(rest) == 0:
		delete(ls.carry, slot)
	case len(rest) > maxControlFrame:
		panic("edgews: decoder invariant broken: it left more than a control frame undecoded")
	default:
		if ls.carry == nil {
			ls.carry = make(map[uint32][]byte)
		}
		ls.carry[slot] = append(ls.carry[slot][:0], rest...)
	}
	if err == nil {
		err = lerr
	}
	return n, consumed, err
}

// decode unmasks the client frames at the start of in, in place: the
// payload of data frames goes to in[:n] as it arrives, control frames are
// answered (ping) or end the connection (close). It stops at a frame
// header or control frame that is not complete: in[consumed:] waits for
// more. A frame's payload never moves right (n <= consumed), so the
// in-place copy is safe.
func (s *Server) decode(c *netpoll.Conn, ls *loopState, st *connState, in []byte) (n, consumed int, err error) {
	for {
		if st.remain > 0 {
			k := min(int(st.remain), len(in)-consumed)
			if k == 0 {
				return n, consumed, nil
			}
			copy(in[n:], in[consumed:consumed+k])
			unmask(in[n:n+k], &st.mask)
			n += k
			consumed += k
			st.remain -= uint32(k)
			continue
		}
		h := in[consumed:]
		if len(h) < 2 {
			return n, consumed, nil
		}
		b0, b1 := h[0], h[1]
		op := b0 & 0x0F
		switch {
		case b0&0x70 != 0:
			return n, consumed, errReserved // no extension negotiated (RFC 6455 5.2)
		case op == opText:
			return n, consumed, errText
		case op != opContinuation && op != opBinary && op != opClose && op != opPing && op != opPong:
			return n, consumed, errOpcode
		case b1&0x80 == 0:
			return n, consumed, errUnmasked // RFC 6455 5.1: the server MUST close
		}
		size, hl := uint64(b1&0x7F), 2
		switch size {
		case 126:
			if len(h) < 4 {
				return n, consumed, nil
			}
			size, hl = uint64(binary.BigEndian.Uint16(h[2:])), 4
			if size < 126 {
				return n, consumed, errLength
			}
		case 127:
			if len(h) < 10 {
				return n, consumed, nil
			}
			size, hl = binary.BigEndian.Uint64(h[2:]), 10
			if size <= 0xFFFF || size>>63 != 0 {
				return n, consumed, errLength
			}
		}
		hl += 4 // the masking key
		if op >= opClose {
			if b0&0x80 == 0 {
				return n, consumed, errCtlFragment
			}
			if size > maxControl {
				return n, consumed, errCtlLong
			}
			if len(h) < hl+int(size) {
				return n, consumed, nil
			}
			mask := [4]byte(h[hl-4 : hl])
			body := h[hl : hl+int(size)]
			unmask(body, &mask)
			consumed += hl + int(size)
			if err := s.onControl(c, ls, st, op, body); err != nil {
				return n, consumed, err
			}
			continue
		}
		if size > uint64(s.conf.MaxFrame) {
			return n, consumed, errTooBig
		}
		if len(h) < hl {
			return n, consumed, nil
		}
		switch {
		case op == opContinuation && st.flags&stFragment == 0:
			return n, consumed, errContinuation
		case op == opBinary && st.flags&stFragment != 0:
			return n, consumed, errInterleaved
		}
		if b0&0x80 == 0 {
			st.flags |= stFragment
		} else {
			st.flags &^= stFragment
		}
		st.mask = [4]byte(h[hl-4 : hl])
		st.remain = uint32(size)
		consumed += hl
	}
}

// onControl handles a complete control frame from the client.
func (s *Server) onControl(c *netpoll.Conn, ls *loopState, st *connState, op byte, body []byte) error {
	switch op {
	case opPing:
		if st.flags&stCloseSent == 0 {
			s.control(c, ls, st, opPong, body)
		}
		s.pings.Add(1)
	case opClose:
		if len(body) == 1 {
			return errCloseBody
		}
		if len(body) >= 2 {
			if !validCode(binary.BigEndian.Uint16(body)) {
				return errCloseBody
			}
			if !utf8.Valid(body[2:]) {
				return errCloseUTF8
			}
		}
		return errPeerClose
	}
	return nil // a pong: nothing to do
}

// validCode reports whether a client may send status code v in a close
// frame (RFC 6455 7.4.1 and 7.4.2; 1004-1006 and 1015 are never sent).
func validCode(v uint16) bool {
	switch {
	case v >= 1000 && v <= 1003, v >= 1007 && v <= 1011:
		return true
	}
	return v >= 3000 && v <= 4999
}

// unmask XORs p with the masking key, 8 bytes at a time, and rotates the
// key so that it continues where p ends.
func unmask(p []byte, key *[4]byte) {
	k32 := binary.LittleEndian.Uint32(key[:])
	k64 := uint64(k32) | uint64(k32)<<32
	i := 0
	for ; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], binary.LittleEndian.Uint64(p[i:])^k64)
	}
	for ; i < len(p); i++ {
		p[i] ^= key[i&3]
	}
	if r := len(p) & 3; r != 0 {
		*key = [4]byte{key[r&3], key[(r+1)&3], key[(r+2)&3], key[(r+3)&3]}
	}
}

// Owns reports whether c is a WebSocket connection (ws:// or wss://).
func (s *Server) Owns(c *netpoll.Conn) bool {
	_, st := s.state(c)
	return st != nil
}

// Goodbye appends to dst, for a frozen engine's connection c that a
// zero-downtime upgrade does not carry, the close frame (1001, going away)
// its client is to read after the output already queued: for wss, in the
// TLS record that follows that output (the session's sequence number moves
// on: the connection is not to be written again). Nothing is appended if c
// is not a WebSocket connection or its close frame went out already.
func (s *Server) Goodbye(c *netpoll.Conn, dst []byte) []byte {
	ls, st := s.state(c)
	if st == nil || st.flags&(stCloseSent|stUpgrading) != 0 {
		return dst
	}
	st.flags |= stCloseSent
	ls.frame = binary.BigEndian.AppendUint16(appendHeader(ls.frame[:0], opClose, 2), CloseGoingAway)
	if st.flags&stTLS == 0 {
		return append(dst, ls.frame...)
	}
	out, err := s.lower.Wrap(c, dst, ls.frame)
	if err != nil {
		return dst // the TLS session failed: its client sees the stream end
	}
	return out
}
