package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"
)

// relayDialer connects the engine's connections over TLS, or WebSocket
// over TLS (Setup.TLS, with Setup.WS). The engine keeps its epoll loop and its
// plaintext MQTT codec: each connection's engine side is one end of a
// socketpair, and a relay (two goroutines, and a crypto/tls client or a
// gorilla/websocket client) carries its bytes to and from the server. That
// costs the load generator more per connection than its plain TCP path
// (about 3 descriptors, 2 goroutines and 8-16 KiB of relay buffers), which
// is why workers hold at most 5,000 such connections; the server's side,
// what is measured, is unchanged. The connect latency includes the
// handshakes. Over WebSocket each chunk the engine writes is one binary
// frame.
type relayDialer struct {
	cfg     *tls.Config // nil: no TLS
	ws      string      // the WebSocket URL, "" for none
	target  string
	timeout time.Duration

	mu   sync.Mutex // guards errs
	errs map[string]int64
}

func newRelayDialer(s Setup) (*relayDialer, error) {
	host, _, err := net.SplitHostPort(s.Target)
	if err != nil {
		return nil, fmt.Errorf("parse target %q: %w", s.Target, ErrBadOption)
	}
	timeout := time.Duration(s.ConnectTimeout)
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	d := &relayDialer{target: s.Target, timeout: timeout, errs: map[string]int64{}}
	if s.WS != "" {
		scheme := "ws://"
		if s.TLS {
			scheme = "wss://"
		}
		d.ws = scheme + s.Target + s.WS
	}
	if !s.TLS {
		return d, nil
	}
	cfg := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if s.CAFile != "" {
		pem, err := os.ReadFile(s.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read --cafile: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("read --cafile %s: no PEM certificate: %w", s.CAFile, ErrBadOption)
		}
	}
	if s.TLSResume {
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(256)
	} else {
		cfg.SessionTicketsDisabled = true // every handshake full
	}
	d.cfg = cfg
	return d, nil
}

func (d *relayDialer) count(kind string) {
	d.mu.Lock()
	d.errs[kind]++
	d.mu.Unlock()
}

// addErrors adds the relays' error counts (cumulative) to a tick's.
func (d *relayDialer) addErrors(m map[string]int64) {
	d.mu.Lock()
	for k, v := range d.errs {
		m[k] += v
	}
	d.mu.Unlock()
}

// dialRelay is dial for a TLS or WebSocket run: the engine's descriptor is
// a socketpair end, connected at once; the relay dials the server.
func (e *engine) dialRelay(i int, now int64) {
	c := &e.conns[i]
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		e.errorf(errKind(err))
		c.st = stFailed
		return
	}
	var src netip.Addr
	if len(e.src) > 0 {
		src = e.src[e.srcNext%len(e.src)]
		e.srcNext++
	}
	c.gen++
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(i), Pad: c.gen}
	if err := unix.EpollCtl(e.ep, unix.EPOLL_CTL_ADD, fds[0], &ev); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		e.errorf("epoll_ctl")
		c.st = stFailed
		return
	}
	c.fd, c.st, c.started, c.lastSend = fds[0], stConnecting, now, now
	c.in, c.out = c.in[:0], c.out[:0]
	e.pending++
	go e.relay.relay(fds[1], src)
}

// relayBuf is each relay direction's buffer: MQTT packets here are small.
const relayBuf = 4 << 10

// relay dials the server and copies between it and the engine's
// socketpair end until either side closes.
func (d *relayDialer) relay(fd int, src netip.Addr) {
	f := os.NewFile(uintptr(fd), "relay")
	pc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		d.count("relay")
		return
	}
	defer pc.Close()
	dl := net.Dialer{Timeout: d.timeout}
	if src.IsValid() {
		dl.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
	}
	if d.ws != "" {
		d.relayWS(pc, &dl)
		return
	}
	raw, err := dl.Dial("tcp4", d.target)
	if err != nil {
		d.count(errKind(err))
		return
	}
	tc := tls.Client(raw, d.cfg)
	tc.SetDeadline(time.Now().Add(d.timeout))
	if err := tc.Handshake(); err != nil {
		raw.Close()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			d.count("tls_handshake_timeout")
		} else {
			d.count("tls_handshake")
		}
		return
	}
	tc.SetDeadline(time.Time{})
	done := make(chan struct{})
	go func() {
		io.CopyBuffer(struct{ io.Writer }{tc}, struct{ io.Reader }{pc}, make([]byte, relayBuf))
		tc.Close() // close_notify, then the socket: the server's side ends too
		close(done)
	}()
	io.CopyBuffer(struct{ io.Writer }{pc}, struct{ io.Reader }{tc}, make([]byte, relayBuf))
	pc.Close()
	<-done
}

// relayWS is relay over WebSocket (inside TLS with d.cfg): subprotocol
// mqtt, each chunk read from the engine sent as one binary frame.
func (d *relayDialer) relayWS(pc net.Conn, dl *net.Dialer) {
	wd := websocket.Dialer{NetDialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
		return dl.DialContext(ctx, "tcp4", addr)
	}, TLSClientConfig: d.cfg, HandshakeTimeout: d.timeout, Subprotocols: []string{"mqtt"},
		ReadBufferSize: relayBuf, WriteBufferSize: relayBuf}
	wc, resp, err := wd.Dial(d.ws, nil)
	if err != nil {
		switch {
		case resp != nil:
			d.count(fmt.Sprint("ws_status_", resp.StatusCode))
		case errors.Is(err, websocket.ErrBadHandshake):
			d.count("ws_handshake")
		default:
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				d.count("ws_handshake_timeout")
			} else {
				d.count(errKind(err))
			}
		}
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, relayBuf)
		for {
			n, err := pc.Read(buf)
			if n > 0 && wc.WriteMessage(websocket.BinaryMessage, buf[:n]) != nil {
				break
			}
			if err != nil {
				break
			}
		}
		wc.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		wc.Close()
	}()
	for {
		typ, r, err := wc.NextReader()
		if err != nil {
			break
		}
		if typ != websocket.BinaryMessage {
			d.count("ws_not_binary")
			break
		}
		if _, err := io.Copy(pc, r); err != nil {
			break
		}
	}
	pc.Close()
	<-done
}
