package edge

import (
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/internal/edgetls"
	"github.com/edgedhq/edged/internal/edgews"
	"github.com/edgedhq/edged/internal/wal"
	"github.com/edgedhq/edged/netpoll"
)

// Server is an edged server. Its exported methods are safe for concurrent
// use; the engine calls its handler (handler.go).
type Server struct {
	cfg    Config
	eng    *netpoll.Engine
	reg    *registry
	tree   *topicTree
	groups *Groups
	loops  []*loopState

	closes   reasonCounters
	conns    atomic.Int64
	inflight atomic.Int64 // live in-flight window (Config.Inflight, a knob)
	// held is the memory held by every inbox and the retained store, in
	// bytes held (inbox.bytes, topicTree.bytes): what StoreMaxBytes caps.
	// storeSoft is the level past which only connected recipients with a
	// short inbox get more (Config.StoreMaxBytes).
	held      atomic.Int64
	entries   atomic.Int64 // entries in every inbox (inbox.cnt)
	storeSoft int64
	// src are the new-inbox buckets per source address: reconnecting
	// does not refill a sprayer's allowance.
	src srcBuckets

	// bigMu guards big: the clients whose inbox reached inboxWatchFloor,
	// for LongInboxes. Lock order: a client's mu, then bigMu.
	bigMu   sync.Mutex
	big     map[uint32]struct{}
	anonSeq atomic.Uint64
	stats   msgCounters
	clstats clusterCounters // edge/cluster.go
	links   linkTable       // edge/cluster.go: the last batch stored per link
	logs    logLimiter
	push    *pusher // nil without Config.Push.Webhook

	// rpMu guards rpres: the last presence payload heard from another
	// node per user (edge/cluster.go: remotePresence); nil on a single node.
	rpMu  sync.Mutex
	rpres map[string]string

	// sweepMu guards sweepAt, the next record the expiry sweep examines.
	sweepMu sync.Mutex
	sweepAt uint32

	// wal is the durable store (persist.go); nil without Config.DataDir.
	wal      *wal.Log
	storeLog logLimiter
	ctlSeq   atomic.Uint64 // seq of the last control record (persist.go: logClient)
	// moving holds the logged entries moveAway took out of an inbox and
	// has not yet logged the deletes of: a snapshot restates them
	// (writeSnapshot), or a compaction during the send would drop them
	// from the store before the other node has them.
	moving struct {
		mu sync.Mutex
		m  map[uint64]movingEntry // by seq
	}

	mu        sync.Mutex // guards admin, adminLn, started, closed, stopSweep, sweepDone, stopCompact, compactDone, stopSysC, sysDone
	stopSysC  chan struct{}
	sysDone   chan struct{}
	admin     *http.Server
	adminLn   net.Listener
	started   bool
	closed    bool
	stopSweep chan struct{}
	sweepDone chan struct{}

	stopCompact chan struct{}
	compactDone chan struct{}

	// handoffKicks are the connections adopted from a handoff, pumped
	// once the loops run.
	handoffKicks []netpoll.Handle
	// acceptsPaused is PauseAccepts' state before a Freeze paused
	// accepting, for Resume.
	acceptsPaused bool
}

// msgCounters count messages; the observability work exports them.
type msgCounters struct {
	published    atomic.Uint64 // PUBLISH packets accepted from clients
	stored       atomic.Uint64 // entries added to inboxes
	inboxFull    atomic.Uint64 // direct or group messages refused with inbox_full
	dropped      atomic.Uint64 // generic deliveries dropped (offline QoS 0, full inbox)
	retainedFull atomic.Uint64 // retained messages not stored: the store was full
	storeFull    atomic.Uint64 // messages refused because the store cap was reached
	newInboxRate atomic.Uint64 // messages refused by the new-inbox rate limit
	notices      atomic.Uint64 // receipts and notices dropped: over the recipient's allowance or the store cap
	expired      atomic.Uint64 // entries removed by inbox expiry
	purged       atomic.Uint64 // entries removed by an operator's purge
	overPacket   atomic.Uint64 // SUBSCRIBE filters refused (0x80): past Config.MaxFiltersPerSubscribe
	overClient   atomic.Uint64 // SUBSCRIBE filters refused (0x80): past Config.MaxSubscriptions
	tooBig       atomic.Uint64 // deliveries not sent: over a v5 client's Maximum Packet Size
	expired5     atomic.Uint64 // deliveries dropped: their v5 Message Expiry Interval passed
	sessions5    atomic.Uint64 // offline v5 sessions ended: their Session Expiry Interval passed
	aliasOut     atomic.Uint64 // v5 PUBLISHes sent with a known Topic Alias instead of the topic
}

// New validates cfg and builds a Server (not yet listening). It returns an
// error wrapping ErrBadConfig for an invalid configuration.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, reg: newRegistry(), tree: newTopicTree(), groups: newGroups()}
	s.tree.acct = &s.held
	s.reg.acct, s.reg.capBytes = &s.held, cfg.StoreMaxBytes
	s.storeSoft = cfg.StoreMaxBytes - cfg.StoreMaxBytes/8
	s.inflight.Store(int64(cfg.Inflight))
	if cfg.Push.Webhook != "" {
		s.push = newPusher(cfg.Push, cfg.Logger, cfg.Now)
	}
	maxPending := cfg.MaxPacketSize + mqtt.MaxHeaderLen
	if len(cfg.WSGroups) > 0 {
		// A ws:// upgrade request waits as partial input too: up to
		// edgews.MaxRequest, whatever the largest MQTT packet.
		maxPending = max(maxPending, edgews.MaxRequest)
	}
	ncfg := netpoll.Config{
		Addr:       cfg.Addr,
		Loops:      cfg.Loops,
		MaxPending: maxPending,
		MaxQueued:  cfg.MaxQueued,
		Handler:    handler{s},
		LiveHook:   cfg.LiveHook,
		ExtraAddrs: cfg.ExtraAddrs,

		PartialTimeout:  cfg.PartialTimeout,
		MaxPartialBytes: cfg.MaxPartialBytes,
		Listeners:       handoffListeners(cfg.Handoff),
	}
	if cfg.TLS != nil || cfg.WS != nil {
		s.useTransports(&ncfg)
	}
	eng, err := netpoll.New(ncfg)
	if err != nil {
		return nil, fmt.Errorf("create engine: %w", err)
	}
	s.eng = eng
	if cfg.TLS != nil {
		cfg.TLS.Bind(eng)
	}
	if cfg.WS != nil {
		cfg.WS.Bind(eng)
	}
	s.loops = make([]*loopState, eng.NumLoops())
	for i := range s.loops {
		s.loops[i] = &loopState{out: make([]byte, 0, 512), topic: make([]byte, 0, 256), rcpt: make([]byte, 0, 256)}
		if cfg.Cluster != nil {
			s.loops[i].cl = newClusterLoop(true)
		}
	}
	return s, nil
}

// useTransports routes the TLS and WebSocket listener groups' connections
// through cfg.TLS and cfg.WS: the handshakes (TLS, the HTTP upgrade, or
// both for wss) off the loops, then the record layer and the framing as
// the engine's Transport. With both, cfg.WS is the engine's Transport and
// passes what is not WebSocket to cfg.TLS.
func (s *Server) useTransports(ncfg *netpoll.Config) {
	t, ws := s.cfg.TLS, s.cfg.WS
	tlsOn := make([]bool, 1+len(s.cfg.ExtraAddrs))
	for _, g := range s.cfg.TLSGroups {
		tlsOn[g] = true // in range: checked by setDefaults
	}
	paths := make([]string, 1+len(s.cfg.ExtraAddrs)) // "" = not WebSocket
	for _, g := range s.cfg.WSGroups {
		paths[g.Group] = g.Path
		if !tlsOn[g.Group] {
			ws.Listen(g.Path) // its upgrades run on the loops
		}
	}
	var upgrades []edgetls.Upgrade // by group, for wss
	if t != nil {
		t.SetFailHook(func(f edgetls.Fail) { s.closes[tlsFailReason[f]].Add(1) })
		ncfg.Transport = t
	}
	if ws != nil {
		ws.SetFailHook(func(f edgews.Fail) { s.closes[wsFailReason[f]].Add(1) })
		ws.SetCloseCode(wsCloseCode)
		ws.SetLower(ncfg.Transport)
		ncfg.Transport = ws
		upgrades = make([]edgetls.Upgrade, len(paths))
		for g, p := range paths {
			if p != "" && tlsOn[g] {
				upgrades[g] = ws.Upgrader(p)
			}
		}
	}
	ncfg.Handoff = func(loop, group, fd int) bool {
		switch {
		case paths[group] == "" && !tlsOn[group]:
			return false
		case !tlsOn[group]:
			ws.Accept(loop, fd, paths[group])
		case paths[group] != "":
			t.AcceptUpgrade(loop, fd, upgrades[group])
		default:
			t.Accept(loop, fd)
		}
		return true
	}
}

// Start starts the event loops and, if configured, the admin listener.
func (s *Server) Start() (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.started {
		return nil
	}
	if err := s.openStore(); err != nil {
		return err
	}
	defer func() {
		if err != nil && s.wal != nil {
			s.wal.Close()
			s.wal = nil
		}
	}()
	if s.cfg.AdminAddr != "" {
		ln, err := net.Listen("tcp", s.cfg.AdminAddr)
		if err != nil {
			return fmt.Errorf("listen admin: %w", err)
		}
		mux := s.Mux()
		if s.cfg.AdminRoutes != nil {
			if err := s.cfg.AdminRoutes(mux); err != nil {
				ln.Close()
				return fmt.Errorf("add admin routes: %w", err)
			}
		}
		s.adminLn = ln
		s.admin = &http.Server{Handler: s.AdminGuard(mux), ReadHeaderTimeout: 10 * time.Second}
		go s.admin.Serve(ln)
		defer func() {
			if err != nil {
				s.admin.Close()
			}
		}()
	}
	if err := s.eng.Start(); err != nil {
		return fmt.Errorf("start engine: %w", err)
	}
	if s.cfg.Cluster != nil {
		// With the loops running: loading the directory may move inboxes
		// recovered from the log to the nodes their users went to.
		if err := s.runCluster(); err != nil {
			s.cfg.Cluster.Close()
			s.eng.Close()
			return fmt.Errorf("join cluster: %w", err)
		}
	}
	s.started = true
	s.startSys()
	if s.push != nil {
		s.push.start()
	}
	// Always: v5 Session Expiry too, whatever InboxExpiry says.
	s.stopSweep, s.sweepDone = make(chan struct{}), make(chan struct{})
	go s.sweeper(s.stopSweep, s.sweepDone)
	if s.wal != nil {
		s.stopCompact, s.compactDone = make(chan struct{}), make(chan struct{})
		go s.compactor(s.stopCompact, s.compactDone)
	}
	for _, h := range s.handoffKicks {
		s.kick(h) // what was queued or in flight at the handoff goes on
	}
	s.handoffKicks = nil
	return nil
}

// Addr returns the client listener's bound address.
func (s *Server) Addr() net.Addr { return s.eng.Addr() }

// Addrs returns every client listener's bound address: Config.Addr, then
// Config.ExtraAddrs in order.
func (s *Server) Addrs() []net.Addr { return s.eng.Addrs() }

// AdminAddr returns the admin listener's bound address (nil if none).
func (s *Server) AdminAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.adminLn == nil {
		return nil
	}
	return s.adminLn.Addr()
}

// Groups returns the group membership table.
func (s *Server) Groups() *Groups { return s.groups }

// Close stops the server: the admin listener, then every connection. The
// inboxes stay in memory until the Server is dropped.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	admin := s.admin
	s.mu.Unlock()
	if admin != nil {
		admin.Close()
	}
	if s.cfg.Cluster != nil {
		s.cfg.Cluster.Close() // no more deliveries from other nodes
	}
	s.stopSweeper()
	s.stopSys()
	if s.push != nil {
		s.push.close()
	}
	s.mu.Lock()
	stop, done := s.stopCompact, s.compactDone
	s.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	err := s.eng.Close()
	if s.cfg.TLS != nil {
		s.cfg.TLS.Shutdown() // after the engine: no accept hands it a socket any more
	}

	if err != nil {
		return fmt.Errorf("close engine: %w", err)
	}
	if s.wal != nil {
		// The loops have stopped: everything they logged is written and
		// fsynced whatever the mode (a clean stop loses nothing).
		if err := s.wal.Close(); err != nil {
			return fmt.Errorf("close store: %w", err)
		}
	}
	return nil
}
