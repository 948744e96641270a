package edgews

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgedhq/edged/internal/burst"
	"github.com/edgedhq/edged/internal/edgetls"
	"github.com/edgedhq/edged/netpoll"
)

// Config configures a Server.
type Config struct {
	// HandshakeTimeout bounds a wss:// upgrade, on its TLS handshake's
	// goroutine (default 10 s); a ws:// upgrade runs on its loop, within
	// the handler's own deadline for the connection (see Upgrading).
	HandshakeTimeout time.Duration
	// MaxHandshakes caps the ws:// upgrades in progress on the loops
	// (default 1024): past it a new connection is closed at once
	// (FailBusy). Each holds at most an 8 KiB request head in the
	// engine's partial buffer. (A wss:// upgrade runs on its TLS
	// handshake's goroutine, under edgetls's cap.)
	MaxHandshakes int
	// MaxFrame caps a data frame's payload (default 256 KiB + 5, one
	// MQTT packet of the default maximum size); a longer frame closes the
	// connection (ErrTooBig). Payload is streamed to the handler, so the
	// cap bounds no buffer: MQTT's own limits do.
	MaxFrame int
	// CloseCode, if set, gives the status code of the close frame sent
	// when the handler closes a connection with reason (default 1000).
	CloseCode func(reason error) uint16
	// OnFail, if set, is told of each connection closed during its
	// upgrade before it reached a loop (a wss:// upgrade, or one over
	// MaxHandshakes), with the reason (edge counts them as close reasons;
	// one closed on its loop has an *UpgradeError as its close reason).
	OnFail func(Fail)
}

// Fail is why a connection was closed before its upgrade completed.
type Fail uint8

// Upgrade failures.
const (
	FailRequest     Fail = iota // not an HTTP/1.1 GET upgrade to websocket: malformed, a missing or bad Sec-WebSocket-Key, data sent before the 101, too long
	FailPath                    // the request's path is not the listener's (404)
	FailVersion                 // Sec-WebSocket-Version is not 13 (426)
	FailSubprotocol             // the client does not offer the subprotocol "mqtt"
	FailTimeout                 // not completed within Config.HandshakeTimeout
	FailBusy                    // Config.MaxHandshakes upgrades were already in progress
	NumFails
)

var failNames = [NumFails]string{"ws_bad_handshake", "ws_bad_path", "ws_bad_version", "ws_no_subprotocol", "ws_handshake_timeout", "ws_handshakes_busy"}

func (f Fail) String() string {
	if f < NumFails {
		return failNames[f]
	}
	return "unknown"
}

// Server serves MQTT over WebSocket for a netpoll engine: its Accept hands
// a ws:// socket to its loop, where Unwrap runs the upgrade (from the
// engine's Config.Handoff), Upgrader gives edgetls the second stage of a
// wss:// handshake, and it is the engine's Transport, passing the
// connections that are not WebSocket ones to Lower.
type Server struct {
	conf  Config
	lower netpoll.Transport
	eng   atomic.Pointer[netpoll.Engine]
	loops [256]*loopState // by loop index; each written and read by its loop only

	burst    burst.Counter       // ws:// upgrades in progress; the heap returned after a burst
	pending  map[string]*pending // by path: the Adopt state of a ws:// listener's sockets
	paths    []string            // by pending.path
	upgrades atomic.Uint64
	sessions atomic.Int64
	pings    atomic.Uint64
	fails    [NumFails]atomic.Uint64
}

// New returns a Server; SetLower and Bind complete it before the engine starts.
func New(conf Config) *Server {
	if conf.HandshakeTimeout <= 0 {
		conf.HandshakeTimeout = 10 * time.Second
	}
	if conf.MaxHandshakes <= 0 {
		conf.MaxHandshakes = 1024
	}
	if conf.MaxFrame <= 0 {
		conf.MaxFrame = 256<<10 + 5
	}
	conf.MaxFrame = min(conf.MaxFrame, 1<<31)
	return &Server{conf: conf}
}

// SetLower sets the transport of the engine's other adopted connections
// (TLS): the one wss:// frames travel in, and the one a connection that is
// not a WebSocket one is passed to. Call it before the engine starts.
func (s *Server) SetLower(t netpoll.Transport) { s.lower = t }

// SetCloseCode sets Config.CloseCode; call it before the engine starts.
func (s *Server) SetCloseCode(fn func(reason error) uint16) { s.conf.CloseCode = fn }

// SetFailHook sets Config.OnFail; call it before the engine starts.
func (s *Server) SetFailHook(fn func(Fail)) { s.conf.OnFail = fn }

// Bind sets the engine that upgraded connections are adopted into.
func (s *Server) Bind(e *netpoll.Engine) { s.eng.Store(e) }

// Stats are a Server's counters.
type Stats struct {
	Upgrades      uint64 // completed
	InProgress    int64
	Sessions      int64 // WebSocket connections on the loops
	Pings         uint64
	Scavenges     uint64 // heap returned to the OS after an upgrade burst
	Fails         map[string]uint64
	MaxHandshakes int
	StateBytes    int // framing state per connection (bytes)
}

// Stats returns the counters; safe from any goroutine.
func (s *Server) Stats() Stats {
	st := Stats{Upgrades: s.upgrades.Load(), InProgress: s.burst.InProgress(), Sessions: s.sessions.Load(),
		Pings: s.pings.Load(), Scavenges: s.burst.Scavenges(), Fails: map[string]uint64{}, MaxHandshakes: s.conf.MaxHandshakes, StateBytes: StateBytes}
	for i := range s.fails {
		st.Fails[Fail(i).String()] = s.fails[i].Load()
	}
	return st
}

func (s *Server) fail(f Fail) {
	s.fails[f].Add(1)
	if s.conf.OnFail != nil {
		s.conf.OnFail(f)
	}
}

// pending is the Engine.Adopt state of a socket accepted on a ws://
// listener: its upgrade is still to run, on its loop.
type pending struct{ path uint32 } // index in Server.paths

// Listen registers path as a ws:// listener's; call it for each before
// the engine starts.
func (s *Server) Listen(path string) {
	if _, ok := s.pending[path]; ok {
		return
	}
	if s.pending == nil {
		s.pending = make(map[string]*pending)
	}
	s.pending[path] = &pending{path: uint32(len(s.paths))}
	s.paths = append(s.paths, path)
}

// Accept takes fd, a socket just accepted on loop from a ws:// listener
// whose path is path (registered with Listen), and gives it back to the
// loop as a connection whose HTTP upgrade runs in Unwrap: no goroutine,
// no duplicate socket. It is netpoll.Config.Handoff's body, called on the
// loop, and never blocks. Over Config.MaxHandshakes upgrades in progress
// the socket is closed when it is attached (Attach counts them, so that
// one the engine drops before, e.g. at shutdown, is never counted).
func (s *Server) Accept(loop, fd int, path string) {
	p, eng := s.pending[path], s.eng.Load()
	if p == nil || eng == nil {
		s.fail(FailRequest) // no such listener here: a bug, refused
		unix.Close(fd)
		return
	}
	eng.Adopt(loop, fd, p, nil) // on a failure it closed fd (the engine is closing)
}

// Upgrading reports whether c is a ws:// connection whose upgrade has not
// completed: the handler's handshake deadline for it is the upgrade's.
func (s *Server) Upgrading(c *netpoll.Conn) bool {
	_, st := s.state(c)
	return st != nil && st.flags&stUpgrading != 0
}

// UpgradeError is the close reason of a ws:// connection whose upgrade
// failed on its loop.
type UpgradeError struct {
	Fail Fail
	Err  error
}

func (e *UpgradeError) Error() string { return e.Fail.String() + ": " + e.Err.Error() }
func (e *UpgradeError) Unwrap() error { return e.Err }

// ErrUpgradeTimeout is the handler's close reason for a connection still
// Upgrading at its handshake deadline (counted by TimedOut).
var ErrUpgradeTimeout = &UpgradeError{Fail: FailTimeout, Err: errors.New("edgews: upgrade not completed in time")}

// TimedOut counts an upgrade that timed out on its loop and returns the
// close reason to close it with.
func (s *Server) TimedOut() error {
	s.fails[FailTimeout].Add(1)
	return ErrUpgradeTimeout
}

// upgradeOnLoop runs a ws:// connection's upgrade on its loop (Unwrap):
// the request head waits in the engine's partial buffer until its blank
// line arrives; then it is checked and answered with the 101 (wire bytes:
// no frame) or an HTTP error and a close.
func (s *Server) upgradeOnLoop(c *netpoll.Conn, ls *loopState, st *connState, in []byte) (n, consumed int, err error) {
	end := bytes.Index(in, headEnd)
	switch {
	case end < 0 && len(in) < MaxRequest:
		return 0, 0, nil // more to come
	case end < 0 || end+len(headEnd) > MaxRequest:
		return 0, len(in), s.refuseOnLoop(c, FailRequest, errLong, "400 Bad Request", "")
	case end+len(headEnd) != len(in):
		return 0, len(in), s.refuseOnLoop(c, FailRequest, errPipelined, "400 Bad Request", "")
	}
	key, f, err := parseUpgrade(in, s.paths[st.remain])
	if err != nil {
		switch f {
		case FailPath:
			return 0, len(in), s.refuseOnLoop(c, f, err, "404 Not Found", "")
		case FailVersion:
			return 0, len(in), s.refuseOnLoop(c, f, err, "426 Upgrade Required", "Sec-WebSocket-Version: 13\r\n")
		}
		return 0, len(in), s.refuseOnLoop(c, f, err, "400 Bad Request", "")
	}
	ls.frame = appendAccept(ls.frame[:0], key)
	if err := c.WriteWire(ls.frame); err != nil {
		return 0, len(in), err
	}
	st.flags &^= stUpgrading
	st.remain = 0
	s.burst.Done()
	s.upgrades.Add(1)
	s.sessions.Add(1)
	return 0, len(in), nil
}

// headEnd ends an HTTP request head.
var headEnd = []byte("\r\n\r\n")

// refuseOnLoop answers a failed upgrade on the loop, counts it, and
// returns the close reason.
func (s *Server) refuseOnLoop(c *netpoll.Conn, f Fail, err error, status, extra string) error {
	s.fails[f].Add(1)
	c.WriteWire(appendRefusal(nil, status, extra))
	return &UpgradeError{Fail: f, Err: err}
}

// Upgrader returns the second stage of a wss:// listener's handshake, for
// edgetls.Server.AcceptUpgrade: the HTTP upgrade over the TLS session.
func (s *Server) Upgrader(path string) edgetls.Upgrade {
	return func(nc net.Conn) (any, error) { return s.upgrade(nc, path) }
}

// MaxRequest caps an upgrade request's head: browsers send well under 2 KB.
// A ws:// one waits in the engine's partial buffer until it is whole, so
// the engine's MaxPending must be at least this (edge sees to it).
const MaxRequest = 8 << 10

// wsGUID is RFC 6455's key suffix (section 1.3).
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// Subprotocol is the one WebSocket subprotocol served: MQTT (MQTT 3.1.1
// section 6, MQTT 5 section 6).
const Subprotocol = "mqtt"

// upgrade reads the client's HTTP upgrade request from nc and answers it:
// 101 and the state to adopt the connection with, or an HTTP error (the
// failure is counted here).
func (s *Server) upgrade(nc net.Conn, path string) (any, error) {
	nc.SetDeadline(time.Now().Add(s.conf.HandshakeTimeout))
	head, err := readHead(nc)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			s.fail(FailTimeout)
		} else {
			s.fail(FailRequest)
			if !errors.Is(err, errEOF) {
				refuse(nc, "400 Bad Request", "")
			}
		}
		return nil, err
	}
	key, f, err := parseUpgrade(head, path)
	if err != nil {
		s.fail(f)
		switch f {
		case FailPath:
			refuse(nc, "404 Not Found", "")
		case FailVersion:
			refuse(nc, "426 Upgrade Required", "Sec-WebSocket-Version: 13\r\n")
		default:
			refuse(nc, "400 Bad Request", "")
		}
		return nil, err
	}
	if _, err := nc.Write(appendAccept(nil, key)); err != nil {
		s.fail(FailRequest)
		return nil, fmt.Errorf("edgews: write 101: %w", err)
	}
	s.upgrades.Add(1)
	return &adopted{}, nil
}

var (
	errEOF       = errors.New("edgews: connection closed during the upgrade request")
	errLong      = errors.New("edgews: upgrade request over 8 KiB")
	errPipelined = errors.New("edgews: data after the upgrade request, before the 101 (RFC 6455 4.1: the client must wait)")
)

// readHead reads the request up to its blank line. It reads in chunks, so
// it may read past the head: bytes after it are data the client sent
// before our 101, which RFC 6455 4.1 forbids, and are refused (so nothing
// read here ever needs to reach the loop).
func readHead(nc net.Conn) ([]byte, error) {
	var buf [MaxRequest]byte
	n := 0
	for {
		if n == len(buf) {
			return nil, errLong
		}
		k, err := nc.Read(buf[n:])
		n += k
		if end := bytes.Index(buf[:n], []byte("\r\n\r\n")); end >= 0 {
			if end+4 != n {
				return nil, errPipelined
			}
			return bytes.Clone(buf[:n]), nil
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil, err
			}
			return nil, errEOF // closed by the client, or by Shutdown
		}
	}
}

// refuse answers a failed upgrade; the connection closes after it.
func refuse(nc net.Conn, status, extra string) { nc.Write(appendRefusal(nil, status, extra)) }

// appendRefusal appends the HTTP answer to a refused upgrade.
func appendRefusal(dst []byte, status, extra string) []byte {
	dst = append(append(append(dst, "HTTP/1.1 "...), status...), "\r\nConnection: close\r\n"...)
	return append(append(dst, extra...), "Content-Length: 0\r\n\r\n"...)
}

// appendAccept appends the 101 that completes an upgrade with key (24
// bytes: parseUpgrade checked it), allocating nothing.
func appendAccept(dst []byte, key []byte) []byte {
	var in [64]byte
	sum := sha1.Sum(append(append(in[:0], key...), wsGUID...)) // RFC 6455 4.2.2: SHA-1 is the protocol's, not a security choice here
	dst = append(dst, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	dst = base64.StdEncoding.AppendEncode(dst, sum[:])
	return append(append(append(dst, "\r\nSec-WebSocket-Protocol: "...), Subprotocol...), "\r\n\r\n"...)
}
