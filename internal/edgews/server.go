package edgews

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgedhq/edged/internal/burst"
	"github.com/edgedhq/edged/internal/edgetls"
	"github.com/edgedhq/edged/netpoll"
)

// Config configures a Server.
type Config struct {
	// HandshakeTimeout bounds the HTTP upgrade (default 10 s).
	HandshakeTimeout time.Duration
	// MaxHandshakes caps the ws:// upgrades in progress (default 1024):
	// past it a new connection is closed at once (FailBusy), so a flood
	// holds at most this many goroutines and their buffers. (A wss://
	// upgrade runs on its TLS handshake's goroutine, under edgetls's cap.)
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
	// upgrade, with the reason (edge counts them as close reasons).
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

// Server serves MQTT over WebSocket for a netpoll engine: its Accept runs
// ws:// upgrades (from the engine's Config.Handoff), Upgrader gives edgetls
// the second stage of a wss:// handshake, and it is the engine's Transport,
// passing the connections that are not WebSocket ones to Lower.
type Server struct {
	conf  Config
	lower netpoll.Transport
	eng   atomic.Pointer[netpoll.Engine]
	loops [256]*loopState // by loop index; each written and read by its loop only

	burst    burst.Group // upgrades in progress; the heap returned after a burst
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

// Shutdown ends the upgrades in progress (their sockets are closed) and
// waits for their goroutines; later Accepts close their socket at once.
func (s *Server) Shutdown() { s.burst.Shutdown() }

// Accept takes over fd, a socket just accepted on a ws:// listener of loop
// whose path is path, and runs its upgrade off the loop; it is
// netpoll.Config.Handoff's body and never blocks. Over
// Config.MaxHandshakes the socket is closed at once.
func (s *Server) Accept(loop, fd int, path string) {
	if !s.burst.Go(s.conf.MaxHandshakes, func() {
		if err := s.acceptOn(loop, fd, path); err != nil && !errors.Is(err, errAdopted) {
			unix.Close(fd)
		}
	}) {
		s.fail(FailBusy) // counted before the client can see the close
		unix.Close(fd)
	}
}

// errAdopted marks a failure after fd was handed to Engine.Adopt, which
// closes it on failure itself.
var errAdopted = errors.New("edgews: adopt")

func (s *Server) acceptOn(loop, fd int, path string) error {
	nc, done, err := s.burst.Conn(fd, "edgews: upgrade")
	if err != nil {
		s.fail(FailRequest)
		return err
	}
	defer done()
	state, err := s.upgrade(nc, path)
	if err != nil {
		return err
	}
	eng := s.eng.Load()
	if eng == nil {
		return errors.New("edgews: no engine bound")
	}
	if err := eng.Adopt(loop, fd, state, nil); err != nil {
		return fmt.Errorf("%w: %w", errAdopted, err)
	}
	return nil
}

// Upgrader returns the second stage of a wss:// listener's handshake, for
// edgetls.Server.AcceptUpgrade: the HTTP upgrade over the TLS session.
func (s *Server) Upgrader(path string) edgetls.Upgrade {
	return func(nc net.Conn) (any, error) { return s.upgrade(nc, path) }
}

// maxRequest caps an upgrade request's head: browsers send well under 2 KB.
const maxRequest = 8 << 10

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
	key, f, err := check(head, path)
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
	sum := sha1.Sum([]byte(key + wsGUID)) // RFC 6455 4.2.2: SHA-1 is the protocol's, not a security choice here
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		base64.StdEncoding.EncodeToString(sum[:]) + "\r\nSec-WebSocket-Protocol: " + Subprotocol + "\r\n\r\n"
	if _, err := nc.Write([]byte(resp)); err != nil {
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
	var buf [maxRequest]byte
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
func refuse(nc net.Conn, status, extra string) {
	nc.Write([]byte("HTTP/1.1 " + status + "\r\nConnection: close\r\n" + extra + "Content-Length: 0\r\n\r\n"))
}

// check validates an upgrade request (RFC 6455 4.2.1) and returns its key.
func check(head []byte, path string) (string, Fail, error) {
	// A reader the size of the head (not bufio's 4 KB default): less
	// garbage per upgrade.
	req, err := http.ReadRequest(bufio.NewReaderSize(bytes.NewReader(head), len(head)))
	if err != nil {
		return "", FailRequest, fmt.Errorf("edgews: parse request: %w", err)
	}
	switch {
	case req.Method != http.MethodGet:
		return "", FailRequest, fmt.Errorf("edgews: method %s, want GET", req.Method)
	case !req.ProtoAtLeast(1, 1):
		return "", FailRequest, fmt.Errorf("edgews: %s, want HTTP/1.1", req.Proto)
	case !hasToken(req.Header, "Upgrade", "websocket"):
		return "", FailRequest, errors.New("edgews: no Upgrade: websocket")
	case !hasToken(req.Header, "Connection", "upgrade"):
		return "", FailRequest, errors.New("edgews: no Connection: Upgrade")
	case req.URL.Path != path:
		return "", FailPath, fmt.Errorf("edgews: path %q, want %q", req.URL.Path, path)
	case req.Header.Get("Sec-WebSocket-Version") != "13":
		return "", FailVersion, fmt.Errorf("edgews: Sec-WebSocket-Version %q, want 13", req.Header.Get("Sec-WebSocket-Version"))
	}
	key := req.Header.Get("Sec-WebSocket-Key")
	if k, err := base64.StdEncoding.DecodeString(key); err != nil || len(k) != 16 {
		return "", FailRequest, fmt.Errorf("edgews: Sec-WebSocket-Key %q is not 16 bytes in base64", key)
	}
	if !hasToken(req.Header, "Sec-WebSocket-Protocol", Subprotocol) {
		return "", FailSubprotocol, fmt.Errorf("edgews: subprotocols %q do not include %s", req.Header.Values("Sec-WebSocket-Protocol"), Subprotocol)
	}
	return key, 0, nil
}

// hasToken reports whether header name's comma-separated values include
// token, case-insensitively.
func hasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// InProgress is the upgrades in progress (ws:// only: a wss:// upgrade
// counts under edgetls's), for a handoff's wait.
func (s *Server) InProgress() int64 { return s.burst.InProgress() }
