package edgetls

import (
	"crypto/cipher"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/edgedhq/edged/internal/slots"
	"github.com/edgedhq/edged/netpoll"
)

// half is one direction of a connection's record protection: only what
// the key and IV are made from, not the key and IV themselves (built with
// the AEAD on a cache miss), so an idle session keeps 64 bytes per
// direction.
type half struct {
	seq       uint64
	epoch     uint32 // bumps with every key change: the AEAD cache's tag
	secretLen uint8
	// secret is, in TLS 1.3, the current traffic secret (the key and IV
	// derive from it; KeyUpdate makes the next one); in TLS 1.2 the write
	// key at [0:keyLen] and the implicit nonce at [ivAt12:ivAt12+4].
	secret [48]byte
}

// ivAt12 is where a TLS 1.2 direction keeps its implicit nonce in secret.
const ivAt12 = 32

// connState is a connection's TLS record state after the handshake, in its
// loop's table: pointer-free, so the garbage collector never scans it.
type connState struct {
	vers  uint16
	suite uint16
	flags uint8
	in    half // the client's direction
	out   half // ours
}

const (
	stLive      uint8 = 1 << iota // attached to a connection
	stAlertSent                   // a fatal alert went out: send nothing more
)

// Record content types and limits (RFC 8446 5.1, 5.2; RFC 5246 6.2).
const (
	recAlert     = 21
	recHandshake = 22
	recAppData   = 23

	recHeader     = 5
	maxPlaintext  = 16384
	maxCiphertext = maxPlaintext + 2048 // TLS 1.2's bound, looser than 1.3's +256
	tagLen        = 16
	explicitNonce = 8 // TLS 1.2 AES-GCM

	hsKeyUpdate = 24

	alertCloseNotify       = 0
	alertUnexpectedMessage = 10
	alertBadRecordMAC      = 20
	alertRecordOverflow    = 22
	alertDecodeError       = 50
	alertNoRenegotiation   = 100
)

// Errors of the record layer, the close reasons of a connection whose
// peer broke the protocol. ErrRecord covers records that do not decrypt or
// parse; ErrAlert a fatal alert from the peer.
var (
	ErrRecord = errors.New("edgetls: bad record")
	ErrAlert  = errors.New("edgetls: alert from peer")
	errSuite  = errors.New("unsupported parameters")
)

// recordError is a protocol error with the alert we answer it with.
type recordError struct {
	alert byte
	msg   string
}

func (e *recordError) Error() string { return "edgetls: bad record: " + e.msg }
func (e *recordError) Unwrap() error { return ErrRecord }

// Preallocated: a bad record costs no allocation.
var (
	errBadMAC     = &recordError{alertBadRecordMAC, "authentication failed"}
	errOverflow   = &recordError{alertRecordOverflow, "record too long"}
	errShort      = &recordError{alertDecodeError, "record too short"}
	errType       = &recordError{alertUnexpectedMessage, "unexpected record type"}
	errHandshake  = &recordError{alertUnexpectedMessage, "unexpected handshake message"}
	errFragmented = &recordError{alertUnexpectedMessage, "handshake message split across records"}
	errRenego     = &recordError{alertNoRenegotiation, "renegotiation refused"}
)

// alertError is a fatal alert the peer sent.
type alertError struct{ desc byte }

func (e *alertError) Error() string {
	return fmt.Sprintf("edgetls: alert from peer: %v", tls.AlertError(e.desc))
}
func (e *alertError) Unwrap() error { return ErrAlert }

// aeadCacheSize is how many AEADs a loop keeps built (per direction, by
// slot): an AES-GCM object is about 800 bytes, so keeping one per idle
// session would cost more than the whole session budget; the busy
// connections of a loop hit the cache, an idle one rebuilds its AEAD
// (about a microsecond) when it next speaks.
const aeadCacheSize = 128

type aeadEntry struct {
	h     netpoll.Handle
	epoch uint32
	iv    [12]byte // TLS 1.3: the whole per-record nonce base; 1.2: [0:4]
	a     cipher.AEAD
}

// loopState is one loop's tables; only that loop touches it.
type loopState struct {
	conns slots.Table[connState]
	cache [2][aeadCacheSize]aeadEntry // [0] in, [1] out
	nonce [12]byte
	ad    [13]byte
	hdr   [recHeader]byte
	inner []byte // TLS 1.3 inner plaintext: payload + content type
	rec   []byte // a record built by the transport itself (alert, KeyUpdate)
}

// get returns slot's record state (the table grows in chunks of 256
// records, 59 KB, so a loop with few sessions does not pay for 4,096: 950
// KB, 95 B per session at 10,000 over two loops).
func (ls *loopState) get(slot uint32) *connState { return ls.conns.Get(slot) }

func (s *Server) loopOf(c *netpoll.Conn) *loopState {
	i := c.LoopID()
	if s.loops[i] == nil {
		s.loops[i] = &loopState{} // by loop i only: no other goroutine reads s.loops[i]
	}
	return s.loops[i]
}

// aead returns direction dir's AEAD and IV for c, from the cache or built.
func (ls *loopState) aead(c *netpoll.Conn, st *connState, dir int) (*aeadEntry, error) {
	hf := &st.in
	if dir == 1 {
		hf = &st.out
	}
	e := &ls.cache[dir][c.Slot()%aeadCacheSize]
	h := c.Handle()
	if e.a != nil && e.h == h && e.epoch == hf.epoch {
		return e, nil
	}
	p, err := paramsOf(st.vers, st.suite)
	if err != nil {
		return nil, err
	}
	ne := aeadEntry{h: h, epoch: hf.epoch}
	var key []byte
	if st.vers == tls.VersionTLS13 {
		if key, err = hf.traffic13(p, ne.iv[:]); err != nil {
			return nil, err
		}
	} else {
		key = hf.secret[:p.keyLen]
		copy(ne.iv[:4], hf.secret[ivAt12:])
	}
	if ne.a, err = newAEAD(p, key); err != nil {
		return nil, err
	}
	*e = ne
	return e, nil
}

// Attach implements netpoll.Transport: state is the *connState the
// handshake built, or the *Layered of a handshake with an Upgrade.
func (s *Server) Attach(c *netpoll.Conn, state any) error {
	if l, ok := state.(*Layered); ok {
		state = l.rec // the upper layer's state is its own transport's
	}
	st, ok := state.(*connState)
	if !ok {
		return fmt.Errorf("edgetls: attach: state %T is not a handshake's", state)
	}
	ls := s.loopOf(c)
	*ls.get(c.Slot()) = *st
	ls.get(c.Slot()).flags |= stLive
	s.sessions.Add(1)
	return nil
}

// Closed implements netpoll.Transport.
func (s *Server) Closed(c *netpoll.Conn) {
	ls := s.loopOf(c)
	st := ls.get(c.Slot())
	if st.flags&stLive != 0 {
		s.sessions.Add(-1)
	}
	*st = connState{} // the keys do not outlive the connection
	for dir := range ls.cache {
		if e := &ls.cache[dir][c.Slot()%aeadCacheSize]; e.h == c.Handle() {
			*e = aeadEntry{}
		}
	}
}

// Close implements netpoll.Transport: a fatal alert for our own protocol
// errors, else close_notify.
func (s *Server) Close(c *netpoll.Conn, reason error) {
	ls := s.loopOf(c)
	st := ls.get(c.Slot())
	if st.flags&stAlertSent != 0 {
		return
	}
	level, desc := byte(1), byte(alertCloseNotify)
	var re *recordError
	if errors.As(reason, &re) {
		level, desc = 2, re.alert
	}
	st.flags |= stAlertSent
	s.writeRecord(c, ls, st, recAlert, []byte{level, desc})
}

// writeRecord sends one record of type typ that the transport makes
// itself, after the payload the handler wrote before it.
func (s *Server) writeRecord(c *netpoll.Conn, ls *loopState, st *connState, typ byte, body []byte) {
	if c.WriteWire(nil) != nil { // wrap what was written before: the sequence numbers follow the wire order
		return
	}
	var err error
	ls.rec, err = s.seal(c, ls, st, ls.rec[:0], typ, body)
	if err == nil {
		c.WriteWire(ls.rec)
	}
}

// Wrap implements netpoll.Transport: p becomes application-data records.
func (s *Server) Wrap(c *netpoll.Conn, dst, p []byte) ([]byte, error) {
	ls := s.loopOf(c)
	st := ls.get(c.Slot())
	for len(p) > 0 {
		n := min(len(p), maxPlaintext)
		var err error
		if dst, err = s.seal(c, ls, st, dst, recAppData, p[:n]); err != nil {
			return dst, err
		}
		p = p[n:]
		if st.vers == tls.VersionTLS13 && st.out.seq >= s.conf.KeyUpdateAfter {
			if dst, err = s.updateOut(c, ls, st, dst); err != nil {
				return dst, err
			}
		}
	}
	return dst, nil
}

// seal appends one protected record holding body (at most maxPlaintext).
func (s *Server) seal(c *netpoll.Conn, ls *loopState, st *connState, dst []byte, typ byte, body []byte) ([]byte, error) {
	e, err := ls.aead(c, st, 1)
	if err != nil {
		return dst, err
	}
	a := e.a
	hf := &st.out
	if st.vers == tls.VersionTLS13 {
		ls.inner = append(append(ls.inner[:0], body...), typ)
		ls.hdr = [recHeader]byte{recAppData, 3, 3}
		binary.BigEndian.PutUint16(ls.hdr[3:], uint16(len(ls.inner)+tagLen))
		dst = append(dst, ls.hdr[:]...)
		dst = a.Seal(dst, ls.nonce13(e, hf.seq), ls.inner, ls.hdr[:])
		hf.seq++
		return dst, nil
	}
	dst = append(dst, typ, 3, 3)
	dst = binary.BigEndian.AppendUint16(dst, uint16(explicitNonce+len(body)+tagLen))
	dst = binary.BigEndian.AppendUint64(dst, hf.seq) // the explicit nonce: the sequence number, as crypto/tls does
	dst = a.Seal(dst, ls.nonce12(e, dst[len(dst)-explicitNonce:]), body, ls.ad12(hf.seq, typ, len(body)))
	hf.seq++
	return dst, nil
}

func (ls *loopState) nonce13(e *aeadEntry, n uint64) []byte {
	ls.nonce = e.iv
	var seq [8]byte
	binary.BigEndian.PutUint64(seq[:], n)
	for i := range seq {
		ls.nonce[4+i] ^= seq[i]
	}
	return ls.nonce[:]
}

func (ls *loopState) nonce12(e *aeadEntry, explicit []byte) []byte {
	copy(ls.nonce[:4], e.iv[:4])
	copy(ls.nonce[4:], explicit)
	return ls.nonce[:]
}

func (ls *loopState) ad12(seq uint64, typ byte, n int) []byte {
	binary.BigEndian.PutUint64(ls.ad[:8], seq)
	ls.ad[8], ls.ad[9], ls.ad[10] = typ, 3, 3
	binary.BigEndian.PutUint16(ls.ad[11:], uint16(n))
	return ls.ad[:]
}

// Unwrap implements netpoll.Transport: it opens the complete records at
// the start of in, in place, and handles the ones that are not application
// data (alerts, KeyUpdate).
func (s *Server) Unwrap(c *netpoll.Conn, in []byte) (n, consumed int, err error) {
	ls := s.loopOf(c)
	st := ls.get(c.Slot())
	for len(in)-consumed >= recHeader {
		rec := in[consumed:]
		size := int(binary.BigEndian.Uint16(rec[3:5]))
		if size > maxCiphertext {
			return n, consumed, errOverflow
		}
		if len(rec) < recHeader+size {
			break
		}
		typ, payload, err := s.open(c, ls, st, rec[:recHeader], rec[recHeader:recHeader+size])
		if err != nil {
			return n, consumed, err
		}
		consumed += recHeader + size
		switch typ {
		case recAppData:
			n += copy(in[n:], payload) // moves left: n <= consumed
		case recAlert:
			if len(payload) != 2 {
				return n, consumed, errShort
			}
			if payload[1] == alertCloseNotify {
				return n, consumed, io.EOF
			}
			if payload[0] == 1 && st.vers == tls.VersionTLS12 {
				continue // a TLS 1.2 warning alert: nothing to do
			}
			return n, consumed, alertErrs[payload[1]]
		case recHandshake:
			if err := s.postHandshake(c, ls, st, payload); err != nil {
				return n, consumed, err
			}
		default:
			return n, consumed, errType
		}
	}
	return n, consumed, nil
}

// keyUpdateMsg is a KeyUpdate with update_not_requested.
var keyUpdateMsg = []byte{hsKeyUpdate, 0, 0, 1, 0}

// updateOut appends a KeyUpdate record under the current key and moves our
// direction to the next one.
func (s *Server) updateOut(c *netpoll.Conn, ls *loopState, st *connState, dst []byte) ([]byte, error) {
	p, err := paramsOf(st.vers, st.suite)
	if err != nil {
		return dst, err
	}
	if dst, err = s.seal(c, ls, st, dst, recHandshake, keyUpdateMsg); err != nil {
		return dst, err
	}
	s.keyUpdates.Add(1)
	return dst, st.out.update13(p)
}

// alertErrs are the preallocated close reasons for each alert.
var alertErrs = func() (a [256]*alertError) {
	for i := range a {
		a[i] = &alertError{byte(i)}
	}
	return a
}()

// open authenticates and decrypts one record in place and returns its
// content type and payload.
func (s *Server) open(c *netpoll.Conn, ls *loopState, st *connState, hdr, body []byte) (byte, []byte, error) {
	e, err := ls.aead(c, st, 0)
	if err != nil {
		return 0, nil, err
	}
	a := e.a
	hf := &st.in
	if st.vers == tls.VersionTLS13 {
		if hdr[0] != recAppData {
			return 0, nil, errType
		}
		if len(body) < tagLen+1 {
			return 0, nil, errShort
		}
		pt, err := a.Open(body[:0], ls.nonce13(e, hf.seq), body, hdr)
		if err != nil {
			return 0, nil, errBadMAC
		}
		hf.seq++
		i := len(pt) - 1
		for i >= 0 && pt[i] == 0 {
			i-- // padding (RFC 8446 5.4)
		}
		if i < 0 {
			return 0, nil, errType
		}
		return pt[i], pt[:i], nil
	}
	typ := hdr[0]
	if typ != recAppData && typ != recAlert && typ != recHandshake {
		return 0, nil, errType
	}
	if len(body) < explicitNonce+tagLen {
		return 0, nil, errShort
	}
	ct := body[explicitNonce:]
	pt, err := a.Open(ct[:0], ls.nonce12(e, body[:explicitNonce]), ct, ls.ad12(hf.seq, typ, len(ct)-tagLen))
	if err != nil {
		return 0, nil, errBadMAC
	}
	hf.seq++
	return typ, pt, nil
}

// postHandshake handles handshake messages after the handshake: in TLS
// 1.3 a client may send KeyUpdate; anything else (a TLS 1.2
// renegotiation, a message split across records) closes the connection.
func (s *Server) postHandshake(c *netpoll.Conn, ls *loopState, st *connState, msgs []byte) error {
	if st.vers != tls.VersionTLS13 {
		return errRenego
	}
	p, err := paramsOf(st.vers, st.suite)
	if err != nil {
		return err
	}
	for len(msgs) > 0 {
		if len(msgs) < 4 {
			return errFragmented
		}
		typ, size := msgs[0], int(msgs[1])<<16|int(msgs[2])<<8|int(msgs[3])
		if len(msgs) < 4+size {
			return errFragmented
		}
		body := msgs[4 : 4+size]
		msgs = msgs[4+size:]
		if typ != hsKeyUpdate || size != 1 || body[0] > 1 {
			return errHandshake
		}
		if err := st.in.update13(p); err != nil {
			return err
		}
		s.keyUpdates.Add(1)
		if body[0] == 1 { // update_requested: answer with ours, then switch (RFC 8446 4.6.3)
			if c.WriteWire(nil) != nil { // wrap what was written before, under the old key
				return nil
			}
			var err error
			if ls.rec, err = s.updateOut(c, ls, st, ls.rec[:0]); err != nil {
				return err
			}
			c.WriteWire(ls.rec)
		}
	}
	return nil
}
