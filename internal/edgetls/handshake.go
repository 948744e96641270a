package edgetls

import (
	"bytes"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime/debug"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// StateBytes is the record state an established session holds (the
// connState in its loop's table), for capacity estimates.
const StateBytes = int(unsafe.Sizeof(connState{}))

// Accept takes over fd, a socket just accepted on a TLS listener of loop,
// and runs its handshake off the loop; it is netpoll.Config.Handoff's body
// and never blocks. Over Config.MaxHandshakes the socket is closed at once.
func (s *Server) Accept(loop, fd int) {
	if s.inProgress.Add(1) > int64(s.conf.MaxHandshakes) {
		s.inProgress.Add(-1)
		s.fail(FailBusy) // counted before the client can see the close
		unix.Close(fd)
		return
	}
	s.wg.Add(1)
	go s.handshake(loop, fd)
}

// handshake runs crypto/tls's server handshake on a duplicate of fd in Go's
// own poller, then hands fd and the negotiated keys to loop.
func (s *Server) handshake(loop, fd int) {
	defer s.wg.Done()
	defer s.burstDone()
	f, err := s.handshakeOn(loop, fd)
	if err == nil {
		return
	}
	s.fail(f) // counted before the client can see the close
	if !errors.Is(err, errAdopted) {
		unix.Close(fd)
	}
}

// A handshake allocates some 50-100 KB (crypto/tls's buffers, the key
// shares, the certificate chain) that is garbage once it ends. With the
// default GOGC the heap keeps room for twice the live data, so after a
// burst of handshakes the process would hold its peak (measured: 51 MB of
// RSS for 23 MB in use after 10,000) until the background scavenger slowly
// returns it. So once at least scavengeAfter handshakes ended since the
// last time, a check is armed: when no handshake has ended for
// scavengeQuiet (the burst is over), the heap is returned at once
// (debug.FreeOSMemory: one GC, cheap over the pointer-free slabs). Under
// steady churn, which never pauses, the runtime's own pacing stays in charge.
const (
	scavengeAfter = 1000
	scavengeQuiet = 2 * time.Second
)

func (s *Server) burstDone() {
	s.inProgress.Add(-1)
	s.lastEnd.Store(time.Now().UnixNano())
	if s.sinceScavenge.Add(1) >= scavengeAfter && s.scavengeArmed.CompareAndSwap(false, true) {
		time.AfterFunc(scavengeQuiet, s.scavenge)
	}
}

func (s *Server) scavenge() {
	if quiet := time.Duration(time.Now().UnixNano() - s.lastEnd.Load()); quiet < scavengeQuiet || s.inProgress.Load() != 0 {
		time.AfterFunc(scavengeQuiet-min(quiet, scavengeQuiet/2), s.scavenge) // the burst goes on
		return
	}
	s.sinceScavenge.Store(0)
	s.scavengeArmed.Store(false)
	s.scavenges.Add(1)
	debug.FreeOSMemory()
}

// errAdopted marks a failure after fd was handed to Engine.Adopt, which
// closes it on failure itself.
var errAdopted = errors.New("edgetls: adopt")

func (s *Server) handshakeOn(loop, fd int) (Fail, error) {
	// net.FileConn dups the descriptor it is given and os.File owns
	// (and finalizes) its own: so give it a dup, and keep fd for the loop.
	dup, err := unix.Dup(fd)
	if err != nil {
		return FailHandshake, os.NewSyscallError("dup", err)
	}
	file := os.NewFile(uintptr(dup), "tls-handshake")
	nc, err := net.FileConn(file)
	file.Close()
	if err != nil {
		return FailHandshake, fmt.Errorf("edgetls: handshake socket: %w", err)
	}
	defer nc.Close() // the duplicate only; closing it removes it from Go's poller
	if !s.track(nc, true) {
		return FailHandshake, errors.New("edgetls: server closed")
	}
	defer s.track(nc, false)
	nc.SetDeadline(time.Now().Add(s.conf.HandshakeTimeout))
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
	err = conn.Handshake()
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
	var initial []byte
	if len(w.buf) > 0 {
		initial = bytes.Clone(w.buf) // what the client sent after its Finished
	}
	eng := s.eng.Load()
	if eng == nil {
		return FailHandshake, errors.New("edgetls: no engine bound")
	}
	if err := eng.Adopt(loop, fd, st, initial); err != nil {
		return FailHandshake, fmt.Errorf("%w: %w", errAdopted, err)
	}
	return 0, nil
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
	if len(w.outHead) < headKeep {
		w.outHead = append(w.outHead, p[:min(len(p), headKeep-len(w.outHead))]...)
	}
	return w.nc.Write(p)
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
