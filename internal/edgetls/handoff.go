package edgetls

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/edgedhq/edged/netpoll"
)

// A zero-downtime upgrade carries established TLS sessions: their record
// state is the connState in the loop's table (the traffic secrets and
// sequence numbers, no expanded keys), which goes to the new process as
// bytes and comes back as the state of netpoll.Engine.RestoreTransport.
// The session ticket key goes too, so that tickets issued before the
// upgrade still resume after it.

// exportLen is the size of an exported connState: versions, flags, and per
// direction the sequence number, epoch, secret length and secret.
const exportLen = 2 + 2 + 1 + 2*(8+4+1+48)

// ErrBadState is returned by ImportState for bytes ExportState did not make.
var ErrBadState = errors.New("edgetls: bad exported session state")

// ExportState returns c's record state as bytes, for a handoff (the
// engine frozen: called off the loop, which is parked).
func (s *Server) ExportState(c *netpoll.Conn) []byte {
	st := s.loopOf(c).get(c.Slot())
	b := make([]byte, 0, exportLen)
	b = binary.LittleEndian.AppendUint16(b, st.vers)
	b = binary.LittleEndian.AppendUint16(b, st.suite)
	b = append(b, st.flags&^stLive)
	for _, h := range [2]*half{&st.in, &st.out} {
		b = binary.LittleEndian.AppendUint64(b, h.seq)
		b = binary.LittleEndian.AppendUint32(b, h.epoch)
		b = append(b, h.secretLen)
		b = append(b, h.secret[:]...)
	}
	return b
}

// ImportState turns ExportState's bytes back into a record state for
// netpoll.Engine.RestoreTransport.
func (s *Server) ImportState(b []byte) (any, error) {
	if len(b) != exportLen {
		return nil, ErrBadState
	}
	st := &connState{vers: binary.LittleEndian.Uint16(b), suite: binary.LittleEndian.Uint16(b[2:]), flags: b[4] &^ stLive}
	if _, err := paramsOf(st.vers, st.suite); err != nil {
		return nil, ErrBadState
	}
	b = b[5:]
	for _, h := range [2]*half{&st.in, &st.out} {
		h.seq = binary.LittleEndian.Uint64(b)
		h.epoch = binary.LittleEndian.Uint32(b[8:])
		h.secretLen = b[12]
		copy(h.secret[:], b[13:13+48])
		if int(h.secretLen) > len(h.secret) {
			return nil, ErrBadState
		}
		b = b[13+48:]
	}
	return st, nil
}

// keysKept is how many session ticket keys open tickets: the current one
// and those it replaced most recently.
const keysKept = 3

// TicketKeys returns the session ticket keys, the current one first.
func (s *Server) TicketKeys() [][32]byte {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	return append([][32]byte(nil), s.ticketKeys...)
}

// SetTicketKeys makes keys (the current one first, as TicketKeys gives
// them: those of the process before an upgrade) the session ticket keys,
// for the handshakes that start afterwards.
func (s *Server) SetTicketKeys(keys [][32]byte) {
	if len(keys) == 0 {
		return
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	s.setKeysLocked(append([][32]byte(nil), keys[:min(len(keys), keysKept)]...))
}

// RotateTicketKey seals new tickets with a new random key; tickets sealed
// with the previous keysKept-1 keys still resume. Config.TicketRotate
// calls it on a timer.
func (s *Server) RotateTicketKey() error {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return fmt.Errorf("edgetls: ticket key: %w", err)
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	keys := append([][32]byte{k}, s.ticketKeys...)
	s.setKeysLocked(keys[:min(len(keys), keysKept)])
	return nil
}

func (s *Server) rotateTick() {
	s.RotateTicketKey() // on an error (no randomness) the keys stay: tickets still work
	s.reloadMu.Lock()
	if s.rotate != nil {
		s.rotate.Reset(s.conf.TicketRotate)
	}
	s.reloadMu.Unlock()
}

func (s *Server) setKeysLocked(keys [][32]byte) {
	s.ticketKeys = keys
	tc := s.tlsConf.Load().Clone()
	tc.SetSessionTicketKeys(keys)
	s.tlsConf.Store(tc)
}

// InProgress returns the number of handshakes running now.
func (s *Server) InProgress() int64 { return s.burst.InProgress() }
