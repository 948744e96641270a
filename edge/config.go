package edge

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/internal/edgetls"
	"github.com/edgedhq/edged/internal/edgews"
	"github.com/edgedhq/edged/internal/wal"
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
	DefaultNewInboxRate     = 100
	DefaultNewInboxBurst    = 1000
	DefaultInboxExpiry      = 7 * 24 * time.Hour
	// DefaultMaxFiltersPerSubscribe and DefaultMaxSubscriptions: a
	// device or app subscribes to a handful of filters; these leave two
	// orders of magnitude of room and keep one client's subscriptions
	// (about 100 bytes each) under 1 MB.
	DefaultMaxFiltersPerSubscribe = 128
	DefaultMaxSubscriptions       = 10_000
	DefaultPartialTimeout         = 30 * time.Second
	DefaultMaxPartialBytes        = 256 << 20
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
	// AdminToken, if set, is the bearer token every admin request but
	// GET /healthz must carry (at least MinAdminToken bytes). Without it
	// the admin address must be loopback. See AdminGuard for the policy.
	AdminToken []byte
	// ExtraAddrs are more client listen addresses (netpoll listener
	// groups served by the same loops), e.g. one per NIC.
	ExtraAddrs []string
	// TLS, if set, terminates TLS on the listener groups named in
	// TLSGroups (0 = Addr, i = ExtraAddrs[i-1]); the others stay plain
	// TCP. Its handshake failures are counted as close reasons.
	TLS       *edgetls.Server
	TLSGroups []int
	// WS, if set, serves MQTT over WebSocket on the listener groups named
	// in WSGroups, each with its path; a group also in TLSGroups is wss://
	// (TLS, then WebSocket inside it). Its upgrade failures are counted
	// as close reasons.
	WS       *edgews.Server
	WSGroups []WSGroup
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
	// connection over the cap is sent CONNACK 0x03 and closed as soon as
	// it is accepted (close reason max_connections).
	MaxConnections int
	// MaxQueued caps a connection's unwritten output (default 4 MiB): a
	// client that never reads is closed past it.
	MaxQueued int
	// PublishRate and PublishBurst limit PUBLISH packets per connection per
	// second (token bucket; default 10,000/s, burst 2 x rate); a client over
	// the limit is closed (publish_flood). A negative rate disables it.
	PublishRate  float64
	PublishBurst float64
	// MaxKeepAlive bounds the keepalive of MQTT 5.0 clients (whole
	// seconds, at most 65,535 s; 0: no bound): a v5 CONNECT with a longer
	// one, or none (0), gets this as Server Keep Alive in CONNACK and is
	// held to it (3.2.2.3.14). A 3.1.1 client cannot be told: its own
	// keepalive stays in force.
	MaxKeepAlive time.Duration
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
	// StoreMaxBytes caps the memory held by every inbox (direct and group
	// messages, receipts, notices, persistent sessions' queued messages),
	// the retained store, client ids over 64 bytes (idCharged) and persistent sessions
	// (a CONNECT over the cap gets 0x03) together, counted as bytes held: buffer
	// capacity plus a per-entry and per-inbox overhead (default
	// DefaultStoreMaxBytes: half of GOMEMLIMIT if set, else a quarter of
	// physical memory). The last eighth is kept for connected recipients
	// whose inbox holds less than the in-flight window, so that live
	// conversations go on while offline inboxes fill the rest.
	StoreMaxBytes int64
	// RetainedMaxBytes caps the bytes held by retained messages (default
	// StoreMaxBytes/4, at most StoreMaxBytes); they count in StoreMaxBytes
	// too.
	RetainedMaxBytes int64
	// NewInboxRate and NewInboxBurst limit how many inboxes direct
	// messages and read receipts may create per second for users never
	// seen (no record and no last-seen time): token buckets per connection
	// and per source address (IPv4 address, IPv6 /64), default 100/s with a
	// burst of max(1,000, rate) each. A PUBLISH over the limit closes the connection
	// (new_inbox_rate) without PUBACK. A negative rate disables the limit.
	NewInboxRate  float64
	NewInboxBurst float64
	// InboxExpiry is how long an inbox created for a user who never
	// connects is kept (default 7 days, at least 1 s); its direct
	// messages' senders then get an "expired" notice. The last-seen time
	// of users who left is forgotten between InboxExpiry and twice that.
	// Negative: never.
	InboxExpiry time.Duration
	// MaxFiltersPerSubscribe caps the filters of one SUBSCRIBE packet
	// that are considered (default 128): the filters past it get SUBACK
	// return code 0x80 (failure) and are counted (Stats.FiltersOverPacket);
	// the connection stays open.
	MaxFiltersPerSubscribe int
	// MaxSubscriptions caps a client's generic subscriptions (default
	// 10,000): a new filter past it gets SUBACK return code 0x80 and is
	// counted (Stats.FiltersOverClient); a filter it already holds may be
	// subscribed again (a QoS change). Subscriptions to one's own u/
	// inbox are implicit and do not count.
	MaxSubscriptions int
	// DataDir is the durable store's directory (internal/wal): every
	// acknowledged message, persistent session, retained message, group
	// and last-seen time is logged there before it is acknowledged, and
	// recovered by Start. Empty: nothing is kept across a restart.
	DataDir string
	// Fsync says when the store fsyncs (wal.SyncAlways, the zero value:
	// before acknowledging; SyncInterval every FsyncInterval; SyncNever).
	// Every mode writes before acknowledging, so a killed process loses
	// nothing; the mode bounds what a power loss may take.
	Fsync         wal.SyncMode
	FsyncInterval time.Duration
	// Repair makes recovery drop corrupt records (logged) instead of
	// refusing to start.
	Repair bool
	// Handoff, if set, is the state and descriptors of a process that
	// hands its connections over (a zero-downtime upgrade, handoff.go):
	// Start serves them instead of binding and recovering.
	Handoff *Handoff
	// storeSegment and storeCompact override wal's segment and
	// compaction sizes (tests).
	storeSegment, storeCompact int64
	// Logger receives start-up lines and rate-limited debug lines for
	// closed connections (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock for token expiry and presence (default time.Now).
	Now func() time.Time
	// SysInterval is how often the $SYS/broker/ statistics are published
	// (sys.go); 0 or negative: never (edged's --sys-interval defaults to
	// DefaultSysInterval). Off by default here, unlike the other fields:
	// the $SYS values are retained messages and count in the retained
	// store (MaxRetained, RetainedMaxBytes and the store total), as in
	// mosquitto, which an embedding program may not want.
	SysInterval time.Duration
	// Version is the server version $SYS/broker/version reports.
	Version string
	// Push configures push notifications for offline users (push.go);
	// off without a Webhook.
	Push PushConfig
	// Cluster, if set, routes profile messages, generic publishes and
	// group changes to the other nodes of a cluster (docs/CLUSTER.md,
	// internal/cluster). Nil: a single node, no cluster code runs.
	Cluster Cluster
}

// Cluster is what a node needs from the cluster transport
// (internal/cluster implements it over NATS). Its methods are safe for
// concurrent use and never block a loop for long: Send and Broadcast only
// queue.
type Cluster interface {
	// Node is this node's name.
	Node() string
	// Home returns the node the directory names for user (the node the
	// user last connected to); ok false if none.
	Home(user []byte) (node string, ok bool)
	// Claim records, asynchronously, that user connected to this node.
	Claim(user string)
	// Users is the number of users in the directory.
	Users() int
	// Send queues batch for node dest and calls done once with nil when
	// it is durable (stored by dest, per its --fsync, or in the
	// cluster's stream), or an error (timeout, no quorum). lane orders
	// batches (the loop's id): dest stores those of one lane in the
	// order sent, each once (Batch.Link, Batch.Seq). done runs on a
	// cluster goroutine.
	Send(dest string, lane int, batch []byte, done func(error))
	// SendSync is Send waiting for the outcome; id, if not empty, lets
	// the transport drop a repeat of the same batch (a move retried
	// after a restart).
	SendSync(dest string, batch []byte, id string) error
	// Broadcast sends batch to every other node, at most once (core NATS).
	Broadcast(batch []byte)
	// SetGroup records a membership change cluster-wide.
	SetGroup(add bool, group, user string) error
	// Run starts delivering to hooks: it returns once the directory and
	// the groups were loaded (Moved and Group called for each entry).
	Run(hooks ClusterHooks) error
	// Close stops the deliveries.
	Close() error
}

// ClusterHooks are the Server's entry points for the cluster transport,
// called on its goroutines.
type ClusterHooks struct {
	// Deliver stores batches sent to this node and returns once they are
	// durable here (or forwarded durably); the transport then acks them
	// (Batch.Refused: refuses them). It is called on one goroutine at a
	// time.
	Deliver func(batches []Batch) error
	// Generic routes a broadcast batch of generic publishes locally.
	Generic func(batch []byte)
	// Moved says the directory now names node for user.
	Moved func(user, node string)
	// Group applies a membership change made on any node.
	Group func(add bool, group, user string)
}

// A Batch is one batch sent to this node (ClusterHooks.Deliver). A batch
// sent with Cluster.Send is on a link, its sender's (node, boot, lane) to
// this node, and numbered on it from 1: Deliver drops one whose Seq it
// stored already (a duplicate: acked), stores the others and logs the
// Seqs it stored with the records (docs/CLUSTER.md).
type Batch struct {
	Data []byte
	// Link names the batch's link ("" for a batch on none: a move, a
	// forward; always stored); Seq is its number there.
	Link string
	Seq  uint64
	// Prev is the Seq it follows: Seq-1, or lower if the sender's
	// batches in between failed on both paths (their PUBACKs never
	// went): a fast-path batch is stored if Prev is (or is 0) and no
	// later Seq is.
	Prev uint64
	// Fast: it came over core NATS (the fast path), not the stream: it
	// is stored only if it follows its link's last (Seq = the highest
	// stored + 1); else Deliver sets Refused and the sender sends it to
	// the stream (behind its predecessor).
	Fast    bool
	Refused bool
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
	if c.StoreMaxBytes == 0 {
		c.StoreMaxBytes = DefaultStoreMaxBytes()
	}
	if c.RetainedMaxBytes == 0 {
		c.RetainedMaxBytes = c.StoreMaxBytes / 4
	}
	if c.NewInboxRate == 0 {
		c.NewInboxRate = DefaultNewInboxRate
	}
	if c.NewInboxBurst == 0 {
		c.NewInboxBurst = max(DefaultNewInboxBurst, c.NewInboxRate)
	}
	if c.InboxExpiry == 0 {
		c.InboxExpiry = DefaultInboxExpiry
	}
	if c.MaxFiltersPerSubscribe == 0 {
		c.MaxFiltersPerSubscribe = DefaultMaxFiltersPerSubscribe
	}
	if c.MaxSubscriptions == 0 {
		c.MaxSubscriptions = DefaultMaxSubscriptions
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
	if c.Version == "" {
		c.Version = "dev"
	}
	for _, g := range c.TLSGroups {
		if c.TLS == nil || g < 0 || g > len(c.ExtraAddrs) {
			return fmt.Errorf("check config: TLS listener group %d (of %d listeners, TLS set: %v): %w", g, 1+len(c.ExtraAddrs), c.TLS != nil, ErrBadConfig)
		}
	}
	for _, g := range c.WSGroups {
		if c.WS == nil || g.Group < 0 || g.Group > len(c.ExtraAddrs) || !strings.HasPrefix(g.Path, "/") {
			return fmt.Errorf("check config: WebSocket listener group %d path %q (of %d listeners, WS set: %v): %w", g.Group, g.Path, 1+len(c.ExtraAddrs), c.WS != nil, ErrBadConfig)
		}
	}
	switch {
	case c.Auth == AuthToken && len(c.Secret) == 0:
		return fmt.Errorf("check config: token auth without a secret: %w", ErrBadConfig)

	case c.MaxPacketSize < 64 || c.MaxPacketSize > 64<<20:
		return fmt.Errorf("check config: max packet size %d outside [64, 64 MiB]: %w", c.MaxPacketSize, ErrBadConfig)
	case c.InboxMessages < 1, c.InboxBytes < heldSize(c.MaxPacketSize)+inboxOverhead:
		return fmt.Errorf("check config: inbox bounds %d messages / %d bytes (bytes must hold one max-size packet, %d): %w", c.InboxMessages, c.InboxBytes, heldSize(c.MaxPacketSize)+inboxOverhead, ErrBadConfig)
	case c.Inflight < 1 || c.Inflight > 1024:
		return fmt.Errorf("check config: in-flight window %d outside [1, 1024]: %w", c.Inflight, ErrBadConfig)
	case c.HandshakeTimeout < 0 || c.MaxConnections < 0 || c.Loops < 0 || c.MaxRetained < 0:
		return fmt.Errorf("check config: negative handshake timeout, max connections, loops or max retained: %w", ErrBadConfig)
	case c.StoreMaxBytes < int64(8*heldSize(c.MaxPacketSize+mqtt.MaxHeaderLen)) || c.RetainedMaxBytes < 0:
		return fmt.Errorf("check config: store cap %d bytes below 8 maximum-size messages, or negative retained cap: %w", c.StoreMaxBytes, ErrBadConfig)
	case c.RetainedMaxBytes > c.StoreMaxBytes:
		return fmt.Errorf("check config: retained cap %d bytes above the store cap %d: %w", c.RetainedMaxBytes, c.StoreMaxBytes, ErrBadConfig)
	case c.InboxExpiry > 0 && c.InboxExpiry < time.Second:
		// The sweep works in whole seconds: a period of 0 would expire
		// every inbox at its first pass.
		return fmt.Errorf("check config: inbox expiry %v below 1 s (negative: never): %w", c.InboxExpiry, ErrBadConfig)
	case c.NewInboxRate > 0 && c.NewInboxBurst < 1:
		return fmt.Errorf("check config: new-inbox burst %g below 1: %w", c.NewInboxBurst, ErrBadConfig)
	case c.MaxKeepAlive < 0 || c.MaxKeepAlive > 65535*time.Second || c.MaxKeepAlive%time.Second != 0:
		return fmt.Errorf("check config: max keepalive %v not whole seconds in [0, 65535 s]: %w", c.MaxKeepAlive, ErrBadConfig)
	case c.MaxFiltersPerSubscribe < 0 || c.MaxSubscriptions < 0:
		return fmt.Errorf("check config: negative max filters per subscribe or max subscriptions: %w", ErrBadConfig)
	case c.MaxQueued < 2*c.MaxPacketSize:
		return fmt.Errorf("check config: max queued %d below twice the max packet size: %w", c.MaxQueued, ErrBadConfig)
	case c.MaxPartialBytes > 0 && c.MaxPartialBytes < 4*int64(c.MaxPacketSize):
		return fmt.Errorf("check config: max partial bytes %d below 4 x the max packet size: %w", c.MaxPartialBytes, ErrBadConfig)
	}
	if err := c.Push.setDefaults(); err != nil {
		return err
	}
	return c.checkAdmin()
}

// WSGroup is one WebSocket listener group: its index (as in TLSGroups) and
// the HTTP path its upgrade requests must name (e.g. "/mqtt").
type WSGroup struct {
	Group int
	Path  string
}
