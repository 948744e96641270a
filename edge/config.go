package edge

import (
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// AuthMode says which clients need a token.
type AuthMode uint8

// Authentication modes.
const (
	// AuthToken: every client presents a token (username = client id =
	// user id, password = token).
	AuthToken AuthMode = iota
	// AuthLoopbackAnonymous: clients from loopback addresses may connect
	// without a token; others need one. edged's default on 127.0.0.1.
	AuthLoopbackAnonymous
	// AuthAnonymous: anyone may connect without a token (edged --insecure).
	AuthAnonymous
)

func (m AuthMode) String() string {
	switch m {
	case AuthToken:
		return "token"
	case AuthLoopbackAnonymous:
		return "loopback-anonymous"
	case AuthAnonymous:
		return "anonymous"
	}
	return "unknown"
}

// Defaults of Config.
const (
	DefaultAddr             = "127.0.0.1:1883"
	DefaultMaxPacketSize    = 256 << 10
	DefaultInboxMessages    = 10000
	DefaultInboxBytes       = 16 << 20
	DefaultInflight         = 32
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultPublishRate      = 10000
	DefaultMaxQueued        = 4 << 20
	DefaultMaxRetained      = 1_000_000
	DefaultPartialTimeout   = 30 * time.Second
	DefaultMaxPartialBytes  = 256 << 20
)

// Config configures a Server. The zero value of each field picks its default.
type Config struct {
	// Addr is the client listener, host:port (default 127.0.0.1:1883).
	Addr string
	// Loops is the number of event loops (default GOMAXPROCS).
	Loops int
	// AdminAddr is the admin HTTP listener; empty disables it.
	AdminAddr string
	// AdminRoutes, if set, adds routes to the admin mux before it serves
	// (edged mounts its activity reporter: pprof, /metrics, /stats, /knobs).
	// The server's own counters then stay at GET /server/stats.
	AdminRoutes func(mux *http.ServeMux) error
	// ExtraAddrs are more client listen addresses (netpoll listener
	// groups served by the same loops), e.g. one per NIC.
	ExtraAddrs []string
	// LiveHook, if set, is told each loop's connection count when it
	// changes (netpoll.Config.LiveHook), e.g. for eBPF least-loaded steering.
	LiveHook func(loop, live int)
	// Auth selects which clients need a token; Secret is the HMAC key.
	// AuthToken without a Secret is a configuration error.
	Auth   AuthMode
	Secret []byte
	// MaxPacketSize caps an incoming packet (default 256 KiB).
	MaxPacketSize int
	// InboxMessages and InboxBytes bound each user's inbox
	// (default 10,000 messages, 16 MiB).
	InboxMessages int
	InboxBytes    int
	// Inflight is the per-connection in-flight window of unacknowledged
	// QoS 1/2 deliveries (default 32).
	Inflight int
	// HandshakeTimeout is how long a connection may take to send CONNECT
	// (default 10 s).
	HandshakeTimeout time.Duration
	// MaxConnections caps concurrent client connections (0: no cap); a
	// CONNECT over the cap gets CONNACK 0x03.
	MaxConnections int
	// MaxQueued caps a connection's unwritten output (default 4 MiB): a
	// client that never reads is closed past it.
	MaxQueued int
	// PublishRate and PublishBurst limit PUBLISH packets per connection per
	// second (token bucket; default 10,000/s, burst 2 x rate); a client over
	// the limit is closed (publish_flood). A negative rate disables it.
	PublishRate  float64
	PublishBurst float64
	// PartialTimeout is how long a connection may hold an incomplete packet
	// before it is closed (partial_timeout), whatever its keepalive, even 0
	// (default 30 s; negative: no limit). It runs from the packet's first
	// byte, so trickling the rest does not extend it.
	PartialTimeout time.Duration
	// MaxPartialBytes caps the memory all connections together hold for
	// incomplete packets (default 256 MiB; negative: no cap; else at least
	// 4 x MaxPacketSize, the buffer one largest packet may need). The
	// connection whose partial packet would push the total past it is
	// closed (partial_budget); the others are not touched.
	MaxPartialBytes int64
	// MaxRetained caps the number of retained topics (default 1,000,000);
	// a retained PUBLISH to a new topic over the cap is delivered but not
	// retained.
	MaxRetained int
	// Logger receives start-up lines and rate-limited debug lines for
	// closed connections (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock for token expiry and presence (default time.Now).
	Now func() time.Time
}

func (c *Config) setDefaults() error {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.MaxPacketSize == 0 {
		c.MaxPacketSize = DefaultMaxPacketSize
	}
	if c.InboxMessages == 0 {
		c.InboxMessages = DefaultInboxMessages
	}
	if c.InboxBytes == 0 {
		c.InboxBytes = DefaultInboxBytes
	}
	if c.Inflight == 0 {
		c.Inflight = DefaultInflight
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.MaxQueued == 0 {
		c.MaxQueued = DefaultMaxQueued
	}
	if c.PublishRate == 0 {
		c.PublishRate = DefaultPublishRate
	}
	if c.PublishBurst == 0 {
		c.PublishBurst = 2 * c.PublishRate
	}
	if c.MaxRetained == 0 {
		c.MaxRetained = DefaultMaxRetained
	}
	if c.PartialTimeout == 0 {
		c.PartialTimeout = DefaultPartialTimeout
	}
	if c.MaxPartialBytes == 0 {
		c.MaxPartialBytes = DefaultMaxPartialBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	switch {
	case c.Auth == AuthToken && len(c.Secret) == 0:
		return fmt.Errorf("check config: token auth without a secret: %w", ErrBadConfig)
	case c.MaxPacketSize < 64 || c.MaxPacketSize > 64<<20:
		return fmt.Errorf("check config: max packet size %d outside [64, 64 MiB]: %w", c.MaxPacketSize, ErrBadConfig)
	case c.InboxMessages < 1, c.InboxBytes < c.MaxPacketSize:
		return fmt.Errorf("check config: inbox bounds %d messages / %d bytes (bytes must be >= max packet size): %w", c.InboxMessages, c.InboxBytes, ErrBadConfig)
	case c.Inflight < 1 || c.Inflight > 1024:
		return fmt.Errorf("check config: in-flight window %d outside [1, 1024]: %w", c.Inflight, ErrBadConfig)
	case c.HandshakeTimeout < 0 || c.MaxConnections < 0 || c.Loops < 0 || c.MaxRetained < 0:
		return fmt.Errorf("check config: negative handshake timeout, max connections, loops or max retained: %w", ErrBadConfig)
	case c.MaxQueued < 2*c.MaxPacketSize:
		return fmt.Errorf("check config: max queued %d below twice the max packet size: %w", c.MaxQueued, ErrBadConfig)
	case c.MaxPartialBytes > 0 && c.MaxPartialBytes < 4*int64(c.MaxPacketSize):
		return fmt.Errorf("check config: max partial bytes %d below 4 x the max packet size: %w", c.MaxPartialBytes, ErrBadConfig)
	}
	return nil
}
