package edgetls

import (
	"bytes"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/edgedhq/edged/internal/burst"
)

// StateBytes is the record state an established session holds (the
// connState in its loop's table), for capacity estimates.
const StateBytes = int(unsafe.Sizeof(connState{}))

// Accept takes over fd, a socket just accepted on a TLS listener of loop,
// and runs its handshake off the loop; it is netpoll.Config.Handoff's body
// and never blocks. Over Config.MaxHandshakes the socket is closed at once.
func (s *Server) Accept(loop, fd int) { s.AcceptUpgrade(loop, fd, nil) }

// Upgrade is a second stage of a handshake, run on its goroutine after the
// TLS handshake over the session's plaintext (e.g. a WebSocket upgrade): it
// returns the upper layer's state, which the connection is adopted with in
// a Layered, or an error (counted by the upgrade itself; the socket is
// closed).
type Upgrade func(nc net.Conn) (state any, err error)

// Layered is the Engine.Adopt state of a connection whose handshake had an
// Upgrade: the record state (for Server.Attach) and the upper layer's.
type Layered struct {
	rec   *connState
	Upper any
}

// AcceptUpgrade is Accept with a second stage (nil: none). The upgrade
// shares the handshake's slot under Config.MaxHandshakes.
func (s *Server) AcceptUpgrade(loop, fd int, up Upgrade) {
	if !s.burst.Go(s.conf.MaxHandshakes, func() { s.handshake(loop, fd, up) }) {
		s.fail(FailBusy) // counted before the client can see the close
		unix.Close(fd)
	}
}

// handshake runs crypto/tls's server handshake on fd in Go's own poller,
// then hands a duplicate of fd (Detach) and the negotiated keys to loop.
func (s *Server) handshake(loop, fd int, up Upgrade) {
	nc, err := s.burst.Conn(fd, "edgetls: handshake")
	if err != nil {
		s.fail(FailHandshake)
		unix.Close(fd)
		return
	}
	f, err := s.handshakeOn(loop, nc, up)
	if err == nil {
		return
	}
	if !errors.Is(err, errUpgrade) {
		// Counted before the client can see the close, but for a
		// Shutdown's (which closes the socket to end the handshake)
		// and a Detach that failed (out of descriptors), which closed
		// it already.
		s.fail(f)
	}
	nc.Close() // after a Detach (adopted or not) a no-op
}

// errUpgrade marks a failure of the second stage, which counted it.
var errUpgrade = errors.New("edgetls: upgrade")

func (s *Server) handshakeOn(loop int, nc *burst.Conn, up Upgrade) (Fail, error) {
	if err := nc.SetDeadline(time.Now().Add(s.conf.HandshakeTimeout)); err != nil {
		// Only a socket Go's poller did not take has no deadlines
		// (os.ErrNoDeadline): its reads would block a thread.
		return FailHandshake, fmt.Errorf("edgetls: handshake deadline: %w", err)
	}
	w := &wire{nc: nc, sem: s.sem}
	tc := s.tlsConf.Load().Clone()
	tc.KeyLogWriter = keyLog{w}
	tc.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		w.tickets++ // each ticket is one record under our first application key
		return tc.EncryptTicket(cs, ss)
	}
	tc.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		ss, err := tc.DecryptTicket(identity, cs)
		if ss != nil && err == nil {
			w.resumed = sessionSecret(ss) // a resumed TLS 1.2 session logs no master secret
		}
		return ss, err
	}
	conn := tls.Server(w, tc)
	s.sem <- struct{}{}
	err := conn.Handshake()
	<-s.sem
	if err != nil {
		return classify(err), err
	}
	cs := conn.ConnectionState()
	st, err := w.state(cs)
	if err != nil {
		return FailHandshake, err
	}
	if w.remain != 0 {
		return FailHandshake, errors.New("edgetls: handshake ended inside a record")
	}
	if cs.DidResume {
		s.resumed.Add(1)
	} else {
		s.full.Add(1)
	}
	var state any = st
	if up != nil {
		// Held like the handshake's: wire.fill gives it up while it
		// waits for the client.
		s.sem <- struct{}{}
		upper, err := s.upgradeOn(conn, w, st, up)
		<-s.sem
		if err != nil {
			return FailHandshake, err
		}
		state = &Layered{rec: st, Upper: upper}
	}
	var initial []byte
	if len(w.buf) > 0 {
		initial = bytes.Clone(w.buf) // what the client sent after its Finished
	}
	eng := s.eng.Load()
	if eng == nil {
		return FailHandshake, errors.New("edgetls: no engine bound")
	}
	fd, err := nc.Detach()
	if err != nil {
		return FailHandshake, fmt.Errorf("edgetls: handing the socket to its loop: %w", err)
	}
	if err := eng.Adopt(loop, fd, state, initial); err != nil {
		return FailHandshake, err // Adopt closed fd
	}
	return 0, nil
}

// upgradeOn runs the second stage over conn, crypto/tls's session, and
// then moves the record state past the records it read and wrote. It only
// counts records, so it refuses an exchange in which a record carried
// anything but application data (a TLS 1.3 KeyUpdate, padding, an empty
// record), which would have changed crypto/tls's state in ways the count
// does not follow.
func (s *Server) upgradeOn(conn *tls.Conn, w *wire, st *connState, up Upgrade) (any, error) {
	w.counting = true
	cr := &countReader{Conn: conn}
	upper, err := up(cr)
	w.counting = false
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUpgrade, err)
	}
	if w.outBad || w.remain != 0 || w.inPlain(st.vers) != cr.n {
		return nil, errors.New("edgetls: a record other than application data during the upgrade")
	}
	st.in.seq += uint64(w.inRecs)
	st.out.seq += uint64(w.outRecs)
	conn.SetDeadline(time.Time{})
	return upper, nil
}

// countReader counts the plaintext crypto/tls returned to the upgrade.
type countReader struct {
	*tls.Conn
	n int
}

func (r *countReader) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.n += n
	return n, err
}

// classify names a handshake error.
func classify(err error) Fail {
	var rh tls.RecordHeaderError
	var ne net.Error
	var cv *tls.CertificateVerificationError
	switch {
	case errors.As(err, &rh):
		return FailNotTLS
	case errors.As(err, &ne) && ne.Timeout():
		return FailTimeout
	case errors.As(err, &cv):
		return FailClientCert
	case strings.Contains(err.Error(), "client didn't provide a certificate"):
		// crypto/tls makes this one with errors.New on the spot
		// (handshake_server.go, handshake_server_tls13.go): no value
		// to match with errors.Is.
		return FailClientCert
	}
	return FailHandshake
}

// wire is the socket as crypto/tls sees it during the handshake. Its Read
// never returns a byte past the end of the record being read, so when the
// handshake ends nothing the client sent afterwards is inside crypto/tls;
// it releases its crypto worker token while it waits for the client. It is
// also the connection's KeyLogWriter.
type wire struct {
	nc      net.Conn
	sem     chan struct{}
	buf     []byte // read from the socket, not yet given to crypto/tls
	remain  int    // bytes of the current record still to give
	inHead  []byte // the first bytes read: the ClientHello, for its random
	outHead []byte // the first bytes written: the ServerHello
	tmp     [4096]byte
	tickets int
	resumed []byte // the master secret of the session a ticket carried

	// While counting (an Upgrade runs), the records each way: how many,
	// and the body bytes of those read.
	counting         bool
	inRecs, inBodies int
	outRecs, outSkip int
	outBad           bool // a write did not start where a record header was due

	master, clientSecret, serverSecret []byte
}

const headKeep = 512

func (w *wire) fill() error {
	<-w.sem // waiting for the client: the token goes to a handshake that computes
	n, err := w.nc.Read(w.tmp[:])
	w.sem <- struct{}{}
	w.buf = append(w.buf, w.tmp[:n]...)
	if n > 0 {
		return nil
	}
	return err
}

func (w *wire) Read(p []byte) (int, error) {
	for w.remain == 0 {
		if len(w.buf) >= recHeader {
			w.remain = recHeader + int(w.buf[3])<<8 + int(w.buf[4])
			if w.counting {
				w.inRecs++
				w.inBodies += w.remain - recHeader
			}
			break
		}
		if err := w.fill(); err != nil {
			return 0, err
		}
	}
	if len(w.buf) == 0 {
		if err := w.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p[:min(len(p), w.remain)], w.buf)
	if len(w.inHead) < headKeep {
		w.inHead = append(w.inHead, p[:min(n, headKeep-len(w.inHead))]...)
	}
	w.buf = w.buf[:copy(w.buf, w.buf[n:])]
	w.remain -= n
	return n, nil
}

func (w *wire) Write(p []byte) (int, error) {
	if w.counting {
		w.countOut(p)
	}
	if len(w.outHead) < headKeep {
		w.outHead = append(w.outHead, p[:min(len(p), headKeep-len(w.outHead))]...)
	}
	return w.nc.Write(p)
}

// countOut counts the records in p, the next bytes crypto/tls writes.
// crypto/tls writes each record with its header in one Write after the
// handshake (conn.go: writeRecordLocked), so a header split across writes
// is flagged rather than reassembled.
func (w *wire) countOut(p []byte) {
	for len(p) > 0 {
		if w.outSkip > 0 {
			k := min(w.outSkip, len(p))
			w.outSkip -= k
			p = p[k:]
			continue
		}
		if len(p) < recHeader {
			w.outBad = true
			return
		}
		w.outRecs++
		w.outSkip = recHeader + int(p[3])<<8 + int(p[4])
	}
}

// inPlain is how many plaintext bytes the records read while counting
// hold if each is application data without padding.
func (w *wire) inPlain(vers uint16) int {
	per := tagLen + 1 // TLS 1.3: the tag and the inner content type
	if vers == tls.VersionTLS12 {
		per = explicitNonce + tagLen
	}
	return w.inBodies - per*w.inRecs
}

func (w *wire) Close() error                       { return w.nc.Close() }
func (w *wire) LocalAddr() net.Addr                { return w.nc.LocalAddr() }
func (w *wire) RemoteAddr() net.Addr               { return w.nc.RemoteAddr() }
func (w *wire) SetDeadline(t time.Time) error      { return w.nc.SetDeadline(t) }
func (w *wire) SetReadDeadline(t time.Time) error  { return w.nc.SetReadDeadline(t) }
func (w *wire) SetWriteDeadline(t time.Time) error { return w.nc.SetWriteDeadline(t) }

// keyLog receives crypto/tls's key log lines for one connection
// (Config.KeyLogWriter: one Write per "LABEL <client random> <secret>\n").
type keyLog struct{ w *wire }

func (k keyLog) Write(line []byte) (int, error) {
	k.w.writeKeyLog(line)
	return len(line), nil
}

// writeKeyLog keeps the secrets of one key log line.
func (w *wire) writeKeyLog(line []byte) {
	f := bytes.Fields(line)
	if len(f) != 3 {
		return
	}
	secret, err := hex.DecodeString(string(f[2]))
	if err != nil {
		return
	}
	switch string(f[0]) {
	case "CLIENT_RANDOM":
		w.master = secret
	case "CLIENT_TRAFFIC_SECRET_0":
		w.clientSecret = secret
	case "SERVER_TRAFFIC_SECRET_0":
		w.serverSecret = secret
	}
}

// state builds the record state from what the handshake logged.
func (w *wire) state(cs tls.ConnectionState) (*connState, error) {
	p, err := paramsOf(cs.Version, cs.CipherSuite)
	if err != nil {
		return nil, err
	}
	st := &connState{vers: cs.Version, suite: cs.CipherSuite}
	switch cs.Version {
	case tls.VersionTLS13:
		if w.clientSecret == nil || w.serverSecret == nil {
			return nil, errors.New("edgetls: the handshake logged no TLS 1.3 traffic secrets")
		}
		if err := st.in.setTraffic13(p, w.clientSecret); err != nil {
			return nil, err
		}
		if err := st.out.setTraffic13(p, w.serverSecret); err != nil {
			return nil, err
		}
		st.out.seq = uint64(w.tickets)
	case tls.VersionTLS12:
		cr, ok1 := helloRandom(w.inHead)
		sr, ok2 := helloRandom(w.outHead)
		if cs.DidResume {
			w.master = w.resumed
		}
		if w.master == nil || !ok1 || !ok2 {
			return nil, errors.New("edgetls: the handshake logged no TLS 1.2 master secret or hello randoms")
		}
		st.keys12(p, w.master, cr, sr)
	default:
		return nil, fmt.Errorf("edgetls: TLS version %x: %w", cs.Version, errSuite)
	}
	return st, nil
}

// helloRandom finds the random of the first hello message in a stream of
// plaintext handshake records (a ClientHello may span records).
func helloRandom(stream []byte) ([]byte, bool) {
	var hs []byte
	for len(stream) >= recHeader && len(hs) < 38 {
		size := int(stream[3])<<8 | int(stream[4])
		if stream[0] != recHandshake {
			break
		}
		end := min(len(stream), recHeader+size) // the stream keeps only the first bytes
		hs = append(hs, stream[recHeader:end]...)
		stream = stream[end:]
	}
	if len(hs) < 38 {
		return nil, false
	}
	return hs[6:38], true // type(1) length(3) version(2), then the random
}

// sessionSecret returns the secret inside a session state, from the
// encoding SessionState.Bytes documents (crypto/tls ticket.go): version(2)
// type(1) cipher_suite(2) created_at(8) secret<1..2^8-1>.
func sessionSecret(ss *tls.SessionState) []byte {
	b, err := ss.Bytes()
	if err != nil || len(b) < 14 || len(b) < 14+int(b[13]) {
		return nil
	}
	return b[14 : 14+int(b[13])]
}
