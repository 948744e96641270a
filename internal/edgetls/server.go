package edgetls

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgedhq/edged/internal/burst"
	"github.com/edgedhq/edged/netpoll"
)

// Config configures a Server.
type Config struct {
	// CertFile and KeyFile are the PEM certificate chain and private key
	// (ECDSA, RSA or Ed25519); required. Reload reads them again.
	CertFile, KeyFile string
	// ClientCAFile, if set, is a PEM bundle of CAs: every client must then
	// present a certificate that one of them signed (and that is valid now).
	ClientCAFile string
	// HandshakeTimeout bounds a handshake (default 10 s).
	HandshakeTimeout time.Duration
	// MaxHandshakes caps the handshakes in progress (default 1024): past
	// it a new connection is closed at once (FailBusy), so a flood holds
	// at most this many goroutines and their buffers.
	MaxHandshakes int
	// CryptoWorkers caps the handshakes computing at once (default
	// GOMAXPROCS/2, at least 1): a handshake waiting for its client holds
	// no slot, and the loops keep the rest of the CPUs under a flood.
	CryptoWorkers int
	// KeyUpdateAfter is how many records the server sends under one TLS
	// 1.3 key before it updates it with a KeyUpdate (default 2^24, under
	// AES-GCM's limit of 2^24.5 full records: RFC 8446 5.5).
	KeyUpdateAfter uint64
	// TicketRotate, if positive, is how often a new session ticket key
	// replaces the current one; the previous keysKept-1 keys still open
	// tickets, so a ticket resumes for at least (keysKept-1)*TicketRotate
	// (and crypto/tls's own 7-day limit).
	TicketRotate time.Duration
	// BurstHeadroom is the heap room over the live data that the
	// collector leaves during a burst of handshakes (burst.Counter's
	// Headroom; default DefaultBurstHeadroom; negative: none).
	BurstHeadroom int64
	// OnFail, if set, is told of each connection closed during its
	// handshake, with the reason (edge counts them as close reasons).
	OnFail func(Fail)
}

// Fail is why a connection was closed before its handshake completed.
type Fail uint8

// Handshake failures.
const (
	FailNotTLS     Fail = iota // the first bytes were not a TLS record (e.g. plain MQTT on the TLS port)
	FailHandshake              // the handshake failed: truncated, malformed, refused by the client (our certificate), no common parameters
	FailTimeout                // not completed within Config.HandshakeTimeout
	FailClientCert             // the client's certificate was missing, expired or not signed by a client CA
	FailBusy                   // Config.MaxHandshakes handshakes were already in progress
	NumFails
)

var failNames = [NumFails]string{"tls_not_tls", "tls_handshake", "tls_handshake_timeout", "tls_client_cert", "tls_handshakes_busy"}

func (f Fail) String() string {
	if f < NumFails {
		return failNames[f]
	}
	return "unknown"
}

// DefaultBurstHeadroom is Config.BurstHeadroom's default. Measured
// (BENCHMARKS.md, "GC headroom during a handshake burst"): with 1,000
// clients churning, 16 MiB cut edged's CPU per full handshake by 10% and
// per resumed one by 5%, and 32-64 MiB by 13%, to the crypto/tls floor's;
// but the bigger heap a connect storm grows leaves runtime metadata and
// fragmentation behind after the scavenge, which 10,000 idle sessions
// connected in that storm pay for: +0-130 B each with 16 MiB, +184 B with
// 32 and +460-680 B with 64, against a budget of 1,536.
const DefaultBurstHeadroom = 16 << 20

// Server terminates TLS for a netpoll engine: its Accept runs handshakes
// (as the engine's Config.Handoff), and it is the engine's Transport.
type Server struct {
	conf       Config
	tlsConf    atomic.Pointer[tls.Config] // the current certificates; swapped by Reload
	ticketKeys [][32]byte                 // the current key first; guarded by reloadMu
	rotate     *time.Timer                // TicketRotate's; guarded by reloadMu
	sem        chan struct{}              // CryptoWorkers tokens
	eng        atomic.Pointer[netpoll.Engine]
	loops      [256]*loopState // by loop index; each written and read by its loop only

	reloadMu sync.Mutex // serializes Reload

	burst      burst.Group  // handshakes in progress; the heap returned after a burst
	sessions   atomic.Int64 // connections with record state on the loops
	full       atomic.Uint64
	resumed    atomic.Uint64
	fails      [NumFails]atomic.Uint64
	keyUpdates atomic.Uint64
}

// New loads the certificates and returns a Server; Bind gives it its engine.
func New(conf Config) (*Server, error) {
	if conf.CertFile == "" || conf.KeyFile == "" {
		return nil, errors.New("edgetls: a certificate file and a key file are required")
	}
	if conf.HandshakeTimeout <= 0 {
		conf.HandshakeTimeout = 10 * time.Second
	}
	if conf.MaxHandshakes <= 0 {
		conf.MaxHandshakes = 1024
	}
	if conf.KeyUpdateAfter == 0 {
		conf.KeyUpdateAfter = 1 << 24
	}
	if conf.CryptoWorkers <= 0 {
		conf.CryptoWorkers = max(1, runtime.GOMAXPROCS(0)/2)
	}
	if conf.BurstHeadroom == 0 {
		conf.BurstHeadroom = DefaultBurstHeadroom
	}
	s := &Server{conf: conf, sem: make(chan struct{}, conf.CryptoWorkers)}
	if conf.BurstHeadroom > 0 {
		s.burst.Headroom = conf.BurstHeadroom
	}
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return nil, fmt.Errorf("edgetls: ticket key: %w", err)
	}
	s.ticketKeys = [][32]byte{k}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	if conf.TicketRotate > 0 {
		s.reloadMu.Lock()
		s.rotate = time.AfterFunc(conf.TicketRotate, s.rotateTick)
		s.reloadMu.Unlock()
	}
	return s, nil
}

// Reload reads the certificate, key and client CA files again; handshakes
// that start afterwards use them, established sessions are not touched. On
// error the old ones stay in use.
func (s *Server) Reload() error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	cert, err := tls.LoadX509KeyPair(s.conf.CertFile, s.conf.KeyFile)
	if err != nil {
		return fmt.Errorf("edgetls: load certificate: %w", err)
	}
	tc := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		CipherSuites: suites12,
	}
	if s.conf.ClientCAFile != "" {
		pem, err := os.ReadFile(s.conf.ClientCAFile)
		if err != nil {
			return fmt.Errorf("edgetls: read client CAs: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("edgetls: read client CAs %s: no PEM certificate in it", s.conf.ClientCAFile)
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	tc.SetSessionTicketKeys(s.ticketKeys)
	s.tlsConf.Store(tc)
	return nil
}

// Shutdown ends the handshakes in progress (their sockets are closed, counted
// as failed handshakes) and waits for their goroutines; later Accepts close
// their socket at once. Established sessions belong to the engine.
func (s *Server) Shutdown() {
	s.reloadMu.Lock()
	if s.rotate != nil {
		s.rotate.Stop()
		s.rotate = nil
	}
	s.reloadMu.Unlock()
	s.burst.Shutdown()
}

// SetFailHook sets Config.OnFail; call it before the engine starts.
func (s *Server) SetFailHook(fn func(Fail)) { s.conf.OnFail = fn }

// Bind sets the engine that handshaken connections are adopted into; call
// it before the engine starts.
func (s *Server) Bind(e *netpoll.Engine) { s.eng.Store(e) }

// Stats are a Server's counters.
type Stats struct {
	Handshakes     uint64 // completed, full
	Resumed        uint64 // completed, resumed from a ticket
	InProgress     int64
	Sessions       int64 // established sessions on the loops
	KeyUpdates     uint64
	Scavenges      uint64 // heap returned to the OS after a handshake burst
	Fails          map[string]uint64
	MaxHandshakes  int
	CryptoWorkers  int
	StateBytes     int // record state per session (bytes)
	HandshakeLimit time.Duration
}

// Stats returns the counters; safe from any goroutine.
func (s *Server) Stats() Stats {
	st := Stats{
		Handshakes: s.full.Load(), Resumed: s.resumed.Load(), InProgress: s.burst.InProgress(),
		Sessions: s.sessions.Load(), KeyUpdates: s.keyUpdates.Load(), Scavenges: s.burst.Scavenges(), Fails: map[string]uint64{},
		MaxHandshakes: s.conf.MaxHandshakes, CryptoWorkers: s.conf.CryptoWorkers,
		StateBytes: StateBytes, HandshakeLimit: s.conf.HandshakeTimeout,
	}
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
