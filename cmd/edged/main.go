// Command edged is the MQTT 3.1.1 messaging edge server.
//
// With no arguments it listens on 127.0.0.1:1883 and lets anonymous clients
// in from loopback only. On any other address it requires tokens
// (--secret-file) unless --insecure is given. SIGTERM and SIGINT shut it down
// cleanly.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/edgedhq/edged/edge"
	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/internal/buildinfo"
	"github.com/edgedhq/edged/internal/cluster"
	"github.com/edgedhq/edged/internal/edgetls"
	"github.com/edgedhq/edged/internal/edgews"
	"github.com/edgedhq/edged/internal/wal"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil))
}

// options are the command-line settings.
type options struct {
	admin, secretFile, config, logLevel  string
	adminTokenFile                       string
	tlsCert, tlsKey, tlsClientCA         string
	tlsMaxHandshakes, wsMaxHandshakes    int
	drainRate                            int
	listen                               listenFlag
	insecure, version                    bool
	maxPacket, inboxMessages, inboxBytes int
	inflight, maxConns, maxQueued, loops int
	maxRetained, maxSubs, maxSubFilters  int
	storeMax, retainedMax                int64
	publishRate, newInboxRate            float64
	newInboxBurst                        float64
	handshake, inboxExpiry               time.Duration
	tlsTicketRotate                      time.Duration
	partialTimeout, maxKeepAlive         time.Duration
	maxPartial                           int64
	dataDir, fsync                       string
	inMemory, repair                     bool
	pushWebhook                          string
	node, clusterListen, clusterPeers    string
	natsURL                              string
	pushInterval, sysInterval            time.Duration
	ops                                  opsOptions
}

// defaultFsync is --fsync's default, chosen from the figures in
// BENCHMARKS.md ("Durable state: fsync modes").
const defaultFsync = "always"

func newFlagSet(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("edged", flag.ContinueOnError)
	o.listen.list = []listener{{addr: edge.DefaultAddr}}
	fs.Var(&o.listen, "listen", "client `address` host:port (MQTT over TCP), tls://host:port (MQTT over TLS, see --tls-cert), ws://host:port/path (MQTT over WebSocket, subprotocol mqtt; path default /mqtt) or wss://host:port/path (WebSocket over TLS); repeat or comma-separate for several, tcp://, tls://, ws:// and wss:// mixed; NAME=ADDR%IFACE makes a NIC group reached only through eBPF SK_LOOKUP from IFACE (e.g. public=198.18.0.1:1883%eth0)")
	fs.StringVar(&o.admin, "admin", "127.0.0.1:9090", "admin HTTP `address` (groups, stats, knobs, pprof); \"off\" disables it; off loopback it needs --admin-token-file")
	fs.StringVar(&o.adminTokenFile, "admin-token-file", "", "`file` holding the admin API bearer token (at least 16 bytes); with it every admin request but /healthz needs \"Authorization: Bearer TOKEN\"")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate chain `file` for the tls:// and wss:// listeners (ECDSA or RSA); SIGHUP reloads it, --tls-key and --tls-client-ca")
	fs.StringVar(&o.tlsKey, "tls-key", "", "PEM private key `file` of --tls-cert")
	fs.StringVar(&o.tlsClientCA, "tls-client-ca", "", "PEM `file` of CAs: with it, TLS clients must present a certificate one of them signed")
	fs.IntVar(&o.wsMaxHandshakes, "ws-max-handshakes", 1024, "WebSocket upgrades in progress at most (`n`) on ws:// listeners; past it new connections are closed (ws_handshakes_busy); a wss:// upgrade counts under --tls-max-handshakes")
	fs.IntVar(&o.tlsMaxHandshakes, "tls-max-handshakes", 1024, "TLS handshakes in progress at most (`n`); past it new TLS connections are closed (tls_handshakes_busy)")
	fs.StringVar(&o.secretFile, "secret-file", "", "`file` holding the token HMAC secret (required off loopback unless --insecure)")
	fs.BoolVar(&o.insecure, "insecure", false, "let clients in without a token on any address")
	fs.StringVar(&o.config, "config", "", "key=value config `file`; keys are the flag names, flags override it")
	fs.DurationVar(&o.tlsTicketRotate, "tls-ticket-rotate", 24*time.Hour, "how often a new TLS session ticket key replaces the current one (`duration`); tickets of the two keys before it still resume; 0 keeps one key for the process's life (an upgrade hands the keys over)")
	fs.IntVar(&o.drainRate, "upgrade-drain-rate", defaultDrainRate, "at an upgrade, connections the new binary does not take over (all of them when its handoff format differs; WebSocket connections) are closed at most this many per `second`, so their clients reconnect to it gradually; 0 closes them at once")
	fs.IntVar(&o.maxPacket, "max-packet-size", edge.DefaultMaxPacketSize, "largest accepted packet in `bytes`")
	fs.DurationVar(&o.maxKeepAlive, "max-keepalive", 0, "longest keepalive (`duration`, whole seconds) an MQTT 5.0 client is held to: a longer one, or none, gets this as Server Keep Alive in CONNACK; 0 for no bound (3.1.1 clients keep their own)")
	fs.IntVar(&o.inboxMessages, "inbox-messages", edge.DefaultInboxMessages, "inbox bound per user in `messages`")
	fs.IntVar(&o.inboxBytes, "inbox-bytes", edge.DefaultInboxBytes, "inbox bound per user in `bytes`")
	fs.IntVar(&o.inflight, "inflight", edge.DefaultInflight, "in-flight `window`: unacknowledged deliveries per connection")
	fs.DurationVar(&o.handshake, "handshake-timeout", edge.DefaultHandshakeTimeout, "`duration` a new connection has to send CONNECT (and, on a tls://, ws:// or wss:// listener, to complete the TLS handshake and the WebSocket upgrade before that)")
	fs.IntVar(&o.maxConns, "max-connections", 0, "cap on client connections (`n`), 0 for none")
	fs.IntVar(&o.maxQueued, "max-queued", edge.DefaultMaxQueued, "unread output (`bytes`) after which a client that does not read is closed")
	fs.Float64Var(&o.publishRate, "publish-rate", edge.DefaultPublishRate, "PUBLISH packets per second per connection (`rate`), -1 for no limit")
	fs.IntVar(&o.maxRetained, "max-retained", edge.DefaultMaxRetained, "retained topics kept at most (`n`)")
	fs.Int64Var(&o.storeMax, "store-max-bytes", 0, "cap on the memory held by all inboxes and retained messages (`bytes` held: buffer capacity plus overheads); 0 for half of GOMEMLIMIT if set, else a quarter of physical memory")
	fs.Int64Var(&o.retainedMax, "retained-max-bytes", 0, "cap on the `bytes` held by retained messages (part of the store cap); 0 for a quarter of --store-max-bytes")
	fs.Float64Var(&o.newInboxRate, "new-inbox-rate", edge.DefaultNewInboxRate, "inboxes per second that each connection, and each source address (IPv4 address, IPv6 /64), may create for never-seen users (`rate`); over it the connection is closed (new_inbox_rate); -1 for no limit")
	fs.Float64Var(&o.newInboxBurst, "new-inbox-burst", 0, "burst of --new-inbox-rate (`n` inboxes); 0 for the larger of 1000 and the rate")
	fs.DurationVar(&o.inboxExpiry, "inbox-expiry", edge.DefaultInboxExpiry, "`duration` after which the inbox of a user who never connected is deleted (senders get an \"expired\" notice); 0 for never")
	fs.IntVar(&o.maxSubs, "max-subscriptions", edge.DefaultMaxSubscriptions, "subscriptions per client (`n`); a new filter past it gets SUBACK 0x80")
	fs.IntVar(&o.maxSubFilters, "max-subscribe-filters", edge.DefaultMaxFiltersPerSubscribe, "filters considered per SUBSCRIBE packet (`n`); the rest get SUBACK 0x80")
	fs.DurationVar(&o.partialTimeout, "partial-timeout", edge.DefaultPartialTimeout, "`duration` an incomplete packet may take to complete, whatever the keepalive (then closed: partial_timeout); -1s for no limit")
	fs.Int64Var(&o.maxPartial, "max-partial-bytes", 0, "memory (`bytes`) all connections together may hold for incomplete packets; the one that would pass it is closed (partial_budget); 0 for 256 MiB or a quarter of GOMEMLIMIT if lower, -1 for no cap")
	fs.StringVar(&o.dataDir, "data-dir", "edged-data", "`directory` of the durable store: inboxes, persistent sessions, retained messages, groups and last-seen survive a restart (created if missing; one edged per directory)")
	fs.BoolVar(&o.inMemory, "in-memory", false, "keep nothing across a restart: no --data-dir (e.g. for benchmarks)")
	fs.StringVar(&o.fsync, "fsync", defaultFsync, "when the store fsyncs: `mode` always (before each batch of PUBACKs: survives a power loss), interval=D (every D: a power loss loses at most D), never (the kernel's writeback); every mode writes before PUBACK, so a killed edged loses nothing")
	fs.BoolVar(&o.repair, "repair", false, "start even if the store has corrupt records: drop them (each is logged) and compact")
	fs.StringVar(&o.pushWebhook, "push-webhook", "", "`URL` (http or https) that gets batched JSON push notifications when a message lands in the inbox of a user with no live connection")
	fs.DurationVar(&o.pushInterval, "push-interval", edge.DefaultPushInterval, "at most one push notification per user per `duration` (later ones are collapsed)")
	fs.DurationVar(&o.sysInterval, "sys-interval", edge.DefaultSysInterval, "`duration` between updates of the retained $SYS/broker/ statistics (subscribable from loopback only); 0 for none")
	fs.StringVar(&o.node, "node", "", "this node's `name` in a cluster ([A-Za-z0-9_-]); with --cluster-listen or --nats, users connected to other nodes are reached through NATS (docs/CLUSTER.md)")
	fs.StringVar(&o.clusterListen, "cluster-listen", "", "`host:port` (the private NIC) where this node's embedded NATS server listens for routes from the other nodes")
	fs.StringVar(&o.clusterPeers, "cluster-peers", "", "comma-separated `host:port` route addresses of the other nodes (this node's own may be listed; it is skipped)")
	fs.StringVar(&o.natsURL, "nats", "", "`URL` of an existing NATS cluster with JetStream to use instead of an embedded server")
	fs.IntVar(&o.loops, "loops", 0, "number of event loops (`n`), 0 for GOMAXPROCS")
	fs.StringVar(&o.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	addOpsFlags(fs, &o.ops)
	fs.SetOutput(io.Discard)
	return fs
}

const usageHead = `Usage: edged [flags]

edged is the MQTT 3.1.1 messaging edge server. With no flags it listens on
127.0.0.1:1883 and admits anonymous clients from loopback only; on any other
address clients need a token (edgectl token issue) unless --insecure is set.

Flags:
`

func usage(w io.Writer, fs *flag.FlagSet) {
	io.WriteString(w, usageHead)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the server failed
	exitUsage = 2 // bad flags or config
)

// run is edged's main; ready, if not nil, receives the server once it
// listens (tests use it).
func run(ctx context.Context, args []string, stdout, stderr io.Writer, ready func(*edge.Server)) int {
	var o options
	fs := newFlagSet(&o)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout, fs)
			return exitOK
		}
		fmt.Fprintf(stderr, "edged: %v\nRun 'edged --help' for usage.\n", explainFlagErr(fs, err))
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "edged: unexpected argument %q\nRun 'edged --help' for usage.\n", fs.Arg(0))
		return exitUsage
	}
	if o.version {
		fmt.Fprintf(stdout, "edged %s\n", buildinfo.String(version))
		return exitOK
	}
	if o.config != "" {
		if err := loadConfig(fs, o.config); err != nil {
			fmt.Fprintf(stderr, "edged: %v\n", err)
			return exitUsage
		}
	}
	cfg, note, err := buildConfig(&o, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "edged: %v\n", err)
		return exitUsage
	}
	o.ops.listeners = o.listen.list
	ops, err := newOps(&o.ops, &cfg)
	if err != nil {
		fmt.Fprintf(stderr, "edged: %v\n", err)
		if errors.Is(err, errOpsUsage) {
			return exitUsage
		}
		return exitError
	}
	defer ops.close()
	// The binary to start on an upgrade: this one's path as it was at
	// start (a package manager replaces the file at the same path).
	exe, _ := os.Executable()
	upgradeReq := make(chan struct{}, 1)
	var ust upgradeStatus
	if cfg.AdminRoutes != nil {
		routes := cfg.AdminRoutes
		cfg.AdminRoutes = func(mux *http.ServeMux) error {
			mux.HandleFunc("POST /upgrade", func(w http.ResponseWriter, r *http.Request) {
				select {
				case upgradeReq <- struct{}{}:
				default: // one is on its way
				}
				ust.write(w, http.StatusAccepted)
			})
			mux.HandleFunc("GET /upgrade", func(w http.ResponseWriter, r *http.Request) { ust.write(w, http.StatusOK) })
			return routes(mux)
		}
	}
	var handoffReply func(error)
	if v := os.Getenv(handoffEnv); v != "" {
		os.Unsetenv(handoffEnv)
		h, reply, err := takeHandoff(v)
		if err != nil {
			fmt.Fprintf(stderr, "edged: %v\n", err)
			return exitError
		}
		cfg.Handoff, handoffReply = h, reply
	}
	node, err := startCluster(&o, &cfg)
	if err != nil {
		fmt.Fprintf(stderr, "edged: %v\n", err)
		if errors.Is(err, cluster.ErrBadOptions) {
			return exitUsage
		}
		return exitError
	}
	if node != nil {
		defer node.Close()
	}
	s, err := edge.New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "edged: %v\n", err)
		if handoffReply != nil {
			handoffReply(err)
		}
		if errors.Is(err, edge.ErrBadConfig) {
			return exitUsage
		}
		return exitError
	}
	if err := ops.attach(s); err != nil {
		s.Close()
		fmt.Fprintf(stderr, "edged: %v\n", err)
		if handoffReply != nil {
			handoffReply(err)
		}
		return exitError
	}
	if err := s.Start(); err != nil {
		fmt.Fprintf(stderr, "edged: %v\n", err)
		if handoffReply != nil {
			handoffReply(err)
		}
		return exitError
	}
	if handoffReply != nil {
		handoffReply(nil)
	}
	log := cfg.Logger
	attrs := []any{"listen", s.Addr().String(), "auth", cfg.Auth.String(), "loops", cfg.Loops,
		"store_max_bytes", s.Stats().StoreMaxBytes, "version", version}
	if cfg.DataDir != "" {
		attrs = append(attrs, "data_dir", cfg.DataDir, "fsync", o.fsync)
	} else {
		attrs = append(attrs, "data_dir", "none (--in-memory)")
	}
	if a := s.AdminAddr(); a != nil {
		attrs = append(attrs, "admin", a.String())
	}
	if len(cfg.TLSGroups) > 0 {
		var tl []string
		for _, g := range cfg.TLSGroups {
			tl = append(tl, s.Addrs()[g].String())
		}
		attrs = append(attrs, "tls", strings.Join(tl, ","))
	}
	if len(cfg.WSGroups) > 0 {
		var wl []string
		for _, g := range cfg.WSGroups {
			wl = append(wl, s.Addrs()[g.Group].String()+g.Path)
		}
		attrs = append(attrs, "ws", strings.Join(wl, ","))
	}
	log.Info("edged started", attrs...)
	if note != "" {
		log.Warn(note)
	}
	if cfg.AdminAddr != "" && !edge.LoopbackAddr(cfg.AdminAddr) {
		log.Warn("the admin API listens off loopback over plain HTTP: its bearer token travels in clear text; keep it on a private network", "admin", cfg.AdminAddr)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP) // before ready: a test's SIGHUP must not kill the process
	defer signal.Stop(hup)
	if ready != nil {
		ready(s)
	}
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(usr2)
	for waitReload(ctx, hup, usr2, upgradeReq, cfg.TLS, log) {
		if node != nil {
			log.Error("upgrade: not supported on a cluster node (restart it: its users reconnect to the others); still serving")
			continue
		}
		log.Info("upgrade: starting the new binary", "exe", exe)
		ust.begin()
		pid, err := upgrade(s, ops, exe, args, o.drainRate, log)
		ust.end(err)
		if err != nil {
			log.Error("upgrade failed; still serving", "err", err)
			continue
		}
		ops.detach()
		log.Info("edged handed over", "new_pid", pid)
		return exitOK
	}
	log.Info("edged shutting down", "connections", s.Stats().Connections)
	ops.detach()
	if err := s.Close(); err != nil {
		fmt.Fprintf(stderr, "edged: %v\n", err)
		return exitError
	}
	log.Info("edged stopped")
	return exitOK
}

// waitReload waits for ctx; meanwhile each SIGHUP reloads the TLS
// certificate, key and client CAs (new handshakes use them; established
// sessions are not touched; a failed reload keeps the old ones).
func waitReload(ctx context.Context, hup, usr2 <-chan os.Signal, upgradeReq <-chan struct{}, t *edgetls.Server, log *slog.Logger) (upgrade bool) {
	for {
		select {
		case <-ctx.Done():
			return false
		case <-usr2:
			return true
		case <-upgradeReq:
			return true
		case <-hup:
			if t == nil {
				log.Info("SIGHUP: no TLS listener, nothing to reload")
				continue
			}
			if err := t.Reload(); err != nil {
				log.Error("SIGHUP: TLS reload failed; the previous certificate stays in use", "err", err)
				continue
			}
			log.Info("SIGHUP: TLS certificate reloaded")
		}
	}
}

// maxPartialBytes resolves --max-partial-bytes: 0 picks the default, 256
// MiB, lowered to a quarter of the Go memory limit (GOMEMLIMIT) when one is
// set below 1 GiB (but never below the 4 x max packet size edge requires),
// so stalled partial packets cannot take the heap the limit leaves; other
// values pass through.
func maxPartialBytes(flag, memLimit int64, maxPacket int) int64 {
	if flag != 0 {
		return flag
	}
	return max(min(edge.DefaultMaxPartialBytes, memLimit/4), 4*int64(maxPacket))
}

// buildConfig turns the options into an edge.Config; note is a start-up
// warning about the auth mode.
func buildConfig(o *options, stderr io.Writer) (cfg edge.Config, note string, err error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return cfg, "", fmt.Errorf("parse --log-level %q: want debug, info, warn or error", o.logLevel)
	}
	o.ops.level = new(slog.LevelVar) // the log_level knob turns it on a live server
	o.ops.level.Set(level)
	cfg = edge.Config{
		Addr:             o.listen.list[0].bindAddr(),
		Loops:            o.loops,
		MaxPacketSize:    o.maxPacket,
		MaxKeepAlive:     o.maxKeepAlive,
		InboxMessages:    o.inboxMessages,
		InboxBytes:       o.inboxBytes,
		Inflight:         o.inflight,
		HandshakeTimeout: o.handshake,
		MaxConnections:   o.maxConns,
		MaxQueued:        o.maxQueued,
		MaxRetained:      o.maxRetained,
		StoreMaxBytes:    o.storeMax,
		RetainedMaxBytes: o.retainedMax,
		NewInboxRate:     o.newInboxRate,
		NewInboxBurst:    o.newInboxBurst,
		InboxExpiry:      o.inboxExpiry,
		PublishRate:      o.publishRate,
		PartialTimeout:   o.partialTimeout,
		MaxPartialBytes:  maxPartialBytes(o.maxPartial, debug.SetMemoryLimit(-1), o.maxPacket),
		Logger:           slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.ops.level})),
	}
	cfg.MaxSubscriptions, cfg.MaxFiltersPerSubscribe = o.maxSubs, o.maxSubFilters
	if !o.inMemory {
		if o.dataDir == "" {
			return cfg, "", fmt.Errorf("parse --data-dir: empty; give a directory, or --in-memory to keep nothing")
		}
		cfg.DataDir = o.dataDir
		if cfg.Fsync, cfg.FsyncInterval, err = wal.ParseSync(o.fsync); err != nil {
			return cfg, "", fmt.Errorf("parse --fsync: %w", err)
		}
		cfg.Repair = o.repair
	}
	cfg.Version = version
	switch {
	case o.sysInterval < 0:
		return cfg, "", fmt.Errorf("parse --sys-interval %v: want a duration >= 0 (0 for none)", o.sysInterval)
	case o.pushInterval <= 0:
		return cfg, "", fmt.Errorf("parse --push-interval %v: want a duration > 0", o.pushInterval)
	}
	cfg.SysInterval = o.sysInterval
	if o.pushWebhook != "" {
		if err := edge.CheckWebhook(o.pushWebhook); err != nil {
			return cfg, "", fmt.Errorf("parse --push-webhook %q: want an http:// or https:// URL with a host", o.pushWebhook)
		}
		cfg.Push = edge.PushConfig{Webhook: o.pushWebhook, Interval: o.pushInterval}
	}
	if o.admin != "off" {
		cfg.AdminAddr = o.admin
	}
	if o.inboxExpiry == 0 {
		cfg.InboxExpiry = -1 // never
	}
	if o.adminTokenFile != "" {
		b, err := os.ReadFile(o.adminTokenFile)
		if err != nil {
			return cfg, "", fmt.Errorf("read admin token file: %w", err)
		}
		cfg.AdminToken = []byte(strings.TrimSpace(string(b)))
		if len(cfg.AdminToken) < edge.MinAdminToken {
			return cfg, "", fmt.Errorf("read admin token file %s: token shorter than %d bytes", o.adminTokenFile, edge.MinAdminToken)
		}
	}
	if cfg.AdminAddr != "" && cfg.AdminToken == nil && !edge.LoopbackAddr(cfg.AdminAddr) {
		return cfg, "", fmt.Errorf("serve admin on %s: the admin API is off loopback without authentication: give --admin-token-file (or --admin 127.0.0.1:PORT, or --admin off)", cfg.AdminAddr)
	}
	if cfg.Loops == 0 {
		cfg.Loops = runtime.GOMAXPROCS(0)
	}
	if o.secretFile != "" {
		b, err := os.ReadFile(o.secretFile)
		if err != nil {
			return cfg, "", fmt.Errorf("read secret file: %w", err)
		}
		cfg.Secret = []byte(strings.TrimSpace(string(b)))
		if len(cfg.Secret) < 16 {
			return cfg, "", fmt.Errorf("read secret file %s: secret shorter than 16 bytes", o.secretFile)
		}
	}
	for _, l := range o.listen.list[1:] {
		cfg.ExtraAddrs = append(cfg.ExtraAddrs, l.bindAddr())
	}
	for g, l := range o.listen.list {
		if l.tls {
			cfg.TLSGroups = append(cfg.TLSGroups, g)
		}
		if l.path != "" {
			cfg.WSGroups = append(cfg.WSGroups, edge.WSGroup{Group: g, Path: l.path})
		}
	}
	if len(cfg.WSGroups) > 0 {
		cfg.WS = edgews.New(edgews.Config{HandshakeTimeout: o.handshake, MaxHandshakes: o.wsMaxHandshakes,
			MaxFrame: cfg.MaxPacketSize + mqtt.MaxHeaderLen})
	}
	if len(cfg.TLSGroups) > 0 {
		if o.tlsCert == "" || o.tlsKey == "" {
			return cfg, "", fmt.Errorf("listen on %s: a tls:// or wss:// listener needs --tls-cert and --tls-key", o.listen.String())
		}
		t, err := edgetls.New(edgetls.Config{
			CertFile: o.tlsCert, KeyFile: o.tlsKey, ClientCAFile: o.tlsClientCA,
			HandshakeTimeout: o.handshake, MaxHandshakes: o.tlsMaxHandshakes,
			TicketRotate: o.tlsTicketRotate,
		})
		if err != nil {
			return cfg, "", err
		}
		cfg.TLS = t
	} else if o.tlsCert != "" || o.tlsKey != "" || o.tlsClientCA != "" {
		return cfg, "", errors.New("--tls-cert, --tls-key and --tls-client-ca need a tls:// or wss:// --listen")
	}
	loopback := true
	for _, l := range o.listen.list {
		lb, err := isLoopback(l.addr)
		if err != nil {
			return cfg, "", err
		}
		loopback = loopback && lb && l.iface == ""
	}
	switch {
	case o.insecure:
		cfg.Auth = edge.AuthAnonymous
		note = "--insecure: clients connect without a token from any address"
	case cfg.Secret != nil:
		cfg.Auth = edge.AuthToken
	case loopback:
		cfg.Auth = edge.AuthLoopbackAnonymous
		note = "no --secret-file: anonymous clients are let in from loopback only"
	default:
		return cfg, "", fmt.Errorf("listen on %s: clients need tokens off loopback: give --secret-file (or --insecure)", o.listen.String())
	}
	return cfg, note, nil
}

func isLoopback(addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("parse --listen %q: %w", addr, err)
	}
	if host == "localhost" {
		return true, nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false, nil // a host name: treat as not loopback
	}
	return ip.IsLoopback(), nil
}

// loadConfig applies a key=value file (keys are flag names; '#' starts a
// comment) to fs, without overriding flags set on the command line.
func loadConfig(fs *flag.FlagSet, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open config: %w", err)
	}
	defer f.Close()
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" {
			return fmt.Errorf("read config %s:%d: want key=value", path, n)
		}
		if k == "config" || k == "version" || fs.Lookup(k) == nil {
			return fmt.Errorf("read config %s:%d: unknown key %q", path, n, k)
		}
		if set[k] {
			continue
		}
		if err := fs.Set(k, v); err != nil {
			return fmt.Errorf("read config %s:%d: %w", path, n, explainValue(fs, k, v, err))
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	return nil
}

// startCluster joins the cluster the flags name (nil without --node): the
// embedded NATS server's JetStream lives under the data directory (a
// temporary one with --in-memory).
func startCluster(o *options, cfg *edge.Config) (*cluster.Node, error) {
	if o.node == "" {
		if o.clusterListen != "" || o.clusterPeers != "" || o.natsURL != "" {
			return nil, fmt.Errorf("--cluster-listen, --cluster-peers and --nats need --node: %w", cluster.ErrBadOptions)
		}
		return nil, nil
	}
	if o.clusterListen == "" && o.natsURL == "" {
		return nil, fmt.Errorf("--node needs --cluster-listen or --nats: %w", cluster.ErrBadOptions)
	}
	co := cluster.Options{Node: o.node, Listen: o.clusterListen, URL: o.natsURL, Logger: cfg.Logger,
		NATSLog: os.Getenv("EDGED_NATS_LOG") == "1"} // the embedded server's own log, for debugging
	for _, p := range strings.Split(o.clusterPeers, ",") {
		if p = strings.TrimSpace(p); p != "" && p != o.clusterListen {
			co.Peers = append(co.Peers, p)
		}
	}
	if o.natsURL == "" {
		if cfg.DataDir != "" {
			co.StoreDir = filepath.Join(cfg.DataDir, "nats")
		} else {
			dir, err := os.MkdirTemp("", "edged-nats-")
			if err != nil {
				return nil, fmt.Errorf("make jetstream dir: %w", err)
			}
			co.StoreDir = dir
		}
	}
	n, err := cluster.Start(co)
	if err != nil {
		return nil, fmt.Errorf("start cluster node %s: %w", o.node, err)
	}
	cfg.Cluster = n
	return n, nil
}
