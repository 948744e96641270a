package edge

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/internal/edgetls"
	"github.com/edgedhq/edged/internal/edgews"
	"github.com/edgedhq/edged/internal/wal"
	"github.com/edgedhq/edged/netpoll"
)

var inboxFull = []byte("inbox_full")

// Cross-loop message kinds.
const (
	msgKick     uint32 = iota + 1 // the client's inbox has something to send
	msgTakeover                   // a newer connection took the session over
	msgScanWake                   // (loop message) retained scans have work: do not block in the poller
)

// Server is an edged server. Its exported methods are safe for concurrent
// use; the netpoll.Handler methods are called by the engine only.
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

// loopState is a loop's private state: its session slab and scratch space.
type loopState struct {
	sess  sessions
	pkt   mqtt.Packet
	out   []byte
	topic []byte
	rcpt  []byte
	from  []byte
	subs  []tsub
	names []string
	codes []byte

	// scanning are the connections of this loop with retained scans
	// pending (session flag sScanning), served a slice per iteration by
	// OnTick; wakePosted: a msgScanWake is queued for this loop.
	scanning   []netpoll.Handle
	scanTail   []netpoll.Handle
	wakePosted bool
	// parked are scanning connections that must wait (the inbox holds
	// two windows' worth, or the socket is backlogged): only an ack or a
	// drained socket, both events on this loop, lets them go on, so they
	// cost no wake-up; OnTick looks at parkChecks of them per iteration
	// (parkNext is the round-robin cursor) and moves the ready ones back.
	parked   []netpoll.Handle
	parkNext int
	// scanWakes counts the wake-ups the loop posted itself for scans.
	scanWakes atomic.Int64
	// longestSlice is the longest OnTick serving scans, in nanoseconds
	// (written by the loop only; benchmarks read it).
	longestSlice atomic.Int64
	// acks are the PUBACKs and PUBRECs waiting for the store (persist.go);
	// storeWake: a msgStoreWake is queued for this loop.
	acks      []heldAck
	storeWake bool
	// v5 are the MQTT 5.0 connections' states by slot (v5.go); props and
	// pub5 are scratch for v5 properties and PUBLISH headers; discSent: a
	// DISCONNECT went out for the packet being handled; noNotice: the
	// publisher speaks v5, so a full inbox is PUBACK 0x97 rather than a
	// notice, and quota says that happened.
	v5       map[uint32]*conn5
	alias5   map[uint32]*aliases5
	aliasOut map[uint32]*aliasesOut5
	props    []byte
	pub5     []byte
	// scanProps is scratch for a retained delivery's properties (runScans).
	scanProps []byte
	discSent  bool
	noNotice  bool
	quota     bool
	// fwd are the v5 properties of the PUBLISH being routed (v5.go:
	// forwardProps), stored with each copy; nil outside a v5 publish.
	fwd []byte
	// self is the publishing client while a v5 PUBLISH is routed (No
	// Local); skipRet marks the SUBSCRIBE filters whose Retain Handling
	// says no retained messages.
	self    *client
	skipRet []bool
	// subID is the Subscription Identifier of the SUBSCRIBE being
	// handled (0: none); subProps is scratch for a copy's properties
	// with its subscription's identifier.
	subID    uint32
	subProps []byte
	// sent counts the PUBLISH packets this loop wrote ($SYS messages/sent);
	// per loop, so that counting costs no shared cache line.
	sent atomic.Uint64
	// cl is the cluster state (edge/cluster.go); unused without one.
	cl clusterLoop
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
		Handler:    s,
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

// CloseCounts returns the number of closed connections per reason.
func (s *Server) CloseCounts() map[string]uint64 { return s.closes.snapshot() }

// CloseCount returns the number of connections closed for reason r.
func (s *Server) CloseCount(r Reason) uint64 { return s.closes[r].Load() }

// Connections returns the number of open client connections.
func (s *Server) Connections() int64 { return s.conns.Load() }

// Clients returns the number of client records (connected, persistent, or
// with undelivered messages).
func (s *Server) Clients() int64 { return s.reg.count.Load() }

// InboxLen returns the number of messages in user's inbox (0 if unknown).
func (s *Server) InboxLen(user string) int {
	cl := s.reg.lock([]byte(user), false)
	if cl == nil {
		return 0
	}
	defer cl.mu.Unlock()
	return cl.box().len()
}

func (s *Server) loop(c *netpoll.Conn) *loopState { return s.loops[c.LoopID()] }

// OnOpen implements netpoll.Handler.
func (s *Server) OnOpen(c *netpoll.Conn) {
	ls := s.loop(c)
	ss := ls.sess.get(c.Slot())
	*ss = session{}
	if n := s.conns.Add(1); s.cfg.MaxConnections > 0 && n > int64(s.cfg.MaxConnections) {
		// Over the cap: refuse at once instead of holding the socket
		// until the handshake timeout. The CONNACK goes out ahead of the
		// client's CONNECT; a client reads it after sending CONNECT and
		// sees 0x03 (server unavailable) rather than a bare close.
		c.Write(mqtt.AppendConnack(ls.out[:0], false, mqtt.ConnRefusedServerUnavailable))
		c.Close(closeErr(ReasonMaxConns))
		return
	}
	c.SetDeadline(s.cfg.HandshakeTimeout)
}

// OnData implements netpoll.Handler: it decodes and handles every complete
// packet in data.
func (s *Server) OnData(c *netpoll.Conn, data []byte) (int, error) {
	ls := s.loop(c)
	ss := ls.sess.get(c.Slot())
	n := 0
	for n < len(data) {
		k, err := decodePacket(ss, data[n:], s.cfg.MaxPacketSize, &ls.pkt)
		if err != nil {
			if ss.client == 0 && isV5Connect(data[n:]) {
				c.Write(mqtt.AppendConnack5(ls.out[:0], false, connackCode5(err), nil))
				return len(data), closeErr(ReasonConnRefused)
			}
			s.disconnect5(c, ls, ss, 0, mqtt.ReasonCode(err))
			ls.discSent = false
			if err == mqtt.ErrProtocolLevel && ss.client == 0 {
				c.Write(mqtt.AppendConnack(ls.out[:0], false, mqtt.ConnRefusedProtocolVersion))
				return len(data), closeErr(ReasonConnRefused)
			}
			return len(data), closeErr(decodeReason(err))
		}
		if k == 0 {
			break
		}
		if r := s.handle(c, ls, ss, &ls.pkt); r != reasonOK {
			s.disconnect5(c, ls, ss, r, 0)
			ls.discSent = false
			return len(data), closeErr(r)
		}
		n += k
	}
	if ss.client != 0 && ss.keepalive > 0 {
		c.SetDeadline(time.Duration(ss.keepalive) * 1500 * time.Millisecond)
	}
	return n, nil
}

// ownedLocked reports, with cl.mu held, whether c still speaks for cl's
// session: no takeover has happened since ss connected. handle() checks the
// owner without the lock first; every change to the session re-checks here,
// so a packet in flight on the old connection during a takeover on another
// loop cannot touch the new session.
func ownedLocked(c *netpoll.Conn, ss *session, cl *client) bool {
	return cl.handle == c.Handle() && cl.epoch == ss.epoch
}

// reasonOK means "keep the connection".
const reasonOK = numReasons

func (s *Server) handle(c *netpoll.Conn, ls *loopState, ss *session, p *mqtt.Packet) Reason {
	if ss.client == 0 {
		if p.Type != mqtt.TypeConnect {
			return ReasonProtocol
		}
		return s.connect(c, ls, ss, p)
	}
	cl := s.reg.at(ss.client)
	if cl == nil || netpoll.Handle(cl.owner.Load()) != c.Handle() {
		// Taken over (the takeover message is on its way): this
		// connection no longer speaks for the client.
		return ReasonTakeover
	}
	if ss.flags&sV5 != 0 {
		if r, done := s.handle5(c, ls, ss, cl, p); done {
			return r
		}
	}
	switch p.Type {
	case mqtt.TypePublish:
		r := s.publish(c, ls, ss, cl, p)
		if r != reasonOK && ss.flags&sV5 != 0 && (r == ReasonNotAuthorized || r == ReasonStoreFull || r == ReasonNewInboxRate) &&
			s.refusePublish5(c, ls, ss, p, r) {
			return reasonOK // 5.0: a reason code in the acknowledgement, not a close
		}
		return r
	case mqtt.TypePuback, mqtt.TypePubrec, mqtt.TypePubcomp:
		s.ack(c, ls, ss, cl, p.Type, p.PacketID)
	case mqtt.TypePubrel:
		cl.mu.Lock()
		if x := cl.xp(); x != nil && ownedLocked(c, ss, cl) {
			for i, id := range x.qos2() {
				if id == p.PacketID {
					m := x.more
					m.qos2in[i] = m.qos2in[len(m.qos2in)-1]
					m.qos2in = m.qos2in[:len(m.qos2in)-1]
					s.logQ2(cl, id, false)
					break
				}
			}
			cl.trimExt()
		}
		cl.mu.Unlock()
		s.ackAfter(c, ls, mqtt.TypePubcomp, p.PacketID) // after its q2- record
	case mqtt.TypeSubscribe:
		s.subscribe(c, ls, ss, cl, p)
	case mqtt.TypeUnsubscribe:
		s.unsubscribe(c, ls, ss, cl, p)
	case mqtt.TypePingreq:
		c.Write(mqtt.AppendPingresp(ls.out[:0]))
	case mqtt.TypeDisconnect:
		cl.mu.Lock()
		if cl.handle == c.Handle() && cl.xp() != nil {
			cl.xp().will = nil // 3.14.4: a DISCONNECT discards the will
		}
		cl.mu.Unlock()
		return ReasonDisconnect
	default: // CONNECT again, or a server-to-client packet
		return ReasonProtocol
	}
	return reasonOK
}

// anonymousOK reports whether a client from peer may connect without a
// token.
func (s *Server) anonymousOK(peer netip.Addr) bool {
	switch s.cfg.Auth {
	case AuthAnonymous:
		return true
	case AuthLoopbackAnonymous:
		return peer.IsLoopback()
	}
	return false
}

func (s *Server) refuse(c *netpoll.Conn, ls *loopState, ss *session, code byte) Reason {
	if ss.flags&sV5 != 0 {
		c.Write(mqtt.AppendConnack5(ls.out[:0], false, refuseCode5(code), nil))
		return ReasonConnRefused
	}
	c.Write(mqtt.AppendConnack(ls.out[:0], false, code))
	return ReasonConnRefused
}

func (s *Server) connect(c *netpoll.Conn, ls *loopState, ss *session, p *mqtt.Packet) Reason {
	cp := &p.Connect
	v5 := cp.ProtocolLevel == mqtt.Level5
	// fresh: drop what the record holds; keep: the session outlives the
	// connection (3.1.1: both from the clean-session flag).
	fresh, keep := cp.CleanSession, !cp.CleanSession
	if v5 {
		if code := s.connect5(c, ls, ss, p); code != 0 {
			c.Write(mqtt.AppendConnack5(ls.out[:0], false, code, nil))
			return ReasonConnRefused
		}
		fresh, keep = sessionFlags5(ls.conn5(c), cp.CleanSession)
	}
	var assigned []byte
	id := cp.ClientID
	peer := c.RemoteAddr().Addr().Unmap()
	if s.anonymousOK(peer) && (!cp.PasswordFlag || len(s.cfg.Secret) == 0) {
		if len(id) == 0 {
			if !cp.CleanSession && !v5 {
				return s.refuse(c, ls, ss, mqtt.ConnRefusedIdentifierRejected)
			}
			id = strconv.AppendUint(append(ls.topic[:0], "anon-"...), s.anonSeq.Add(1), 10)
			assigned = id // 5.0 (3.2.2.3.7): the client learns it
		}
		// Any client id the codec accepted (valid UTF-8 without U+0000,
		// 1-65,535 bytes) is a plain MQTT client; only a profile id
		// ([0-9A-Za-z_.-], 1-64) also has an inbox and presence.
	} else {
		if !cp.UsernameFlag || !cp.PasswordFlag {
			return s.refuse(c, ls, ss, mqtt.ConnRefusedBadUsernamePassword)
		}
		if len(id) == 0 {
			id = cp.Username
		}
		if !validIDBytes(id) {
			return s.refuse(c, ls, ss, mqtt.ConnRefusedIdentifierRejected)
		}
		if !bytes.Equal(id, cp.Username) {
			return s.refuse(c, ls, ss, mqtt.ConnRefusedBadUsernamePassword)
		}
		if len(s.cfg.Secret) == 0 || VerifyToken(s.cfg.Secret, string(id), string(cp.Password), s.cfg.Now()) != nil {
			return s.refuse(c, ls, ss, mqtt.ConnRefusedNotAuthorized)
		}
	}
	var w *will
	if cp.WillFlag {
		// A will is a deferred PUBLISH, so it gets the publish ACLs up
		// front: the profile topics are the server's, and so is every
		// topic starting with '$' (MQTT 3.1.1 section 4.7.2; a retained
		// will on $SYS/ would forge what later $SYS subscribers read).
		if profileTopic(cp.WillTopic) || (len(cp.WillTopic) > 0 && cp.WillTopic[0] == '$') || tooDeep(cp.WillTopic) {
			return s.refuse(c, ls, ss, mqtt.ConnRefusedNotAuthorized)
		}
		w = &will{topic: string(cp.WillTopic), payload: bytes.Clone(cp.WillMessage), qos: cp.WillQoS, retain: cp.WillRetain}
		if v5 {
			w.props, w.delay = bytes.Clone(cp.WillProps.Raw), cp.WillProps.WillDelay
		}
	}
	cl := s.reg.lock(id, true)
	if cl == nil {
		// The user table is full, or a long id does not fit the store
		// cap (longIDCost).
		s.stats.storeFull.Add(1)
		return s.refuse(c, ls, ss, mqtt.ConnRefusedServerUnavailable)
	}
	if s.sessionEnded(cl, s.cfg.Now().Unix()) {
		fresh = true // the sweep has not come by yet: the session is not resumed
	}
	if (keep != cl.persistent || fresh && cl.persistent) && s.wal != nil && s.wal.Failed() {
		// A session begins or ends: that needs a record, and the store
		// cannot write (CONNACK 3, like a full store).
		gen := cl.gen
		cl.mu.Unlock()
		s.reg.release(cl, gen)
		return s.refuse(c, ls, ss, mqtt.ConnRefusedServerUnavailable)
	}
	if keep && !cl.persistent {
		// A new persistent session holds its record and extension until
		// a clean-session CONNECT ends it: counted in the store total.
		if s.held.Add(sessionOverhead) > s.cfg.StoreMaxBytes {
			s.held.Add(-sessionOverhead)
			gen := cl.gen
			cl.mu.Unlock()
			s.reg.release(cl, gen)
			s.stats.storeFull.Add(1)
			return s.refuse(c, ls, ss, mqtt.ConnRefusedServerUnavailable)
		}
	} else if !keep && cl.persistent {
		s.held.Add(-sessionOverhead)
	}
	old := cl.handle
	cl.epoch++
	cl.handle = c.Handle()
	cl.owner.Store(uint64(cl.handle))
	cl.kick = false
	if w != nil {
		cl.x().will = w
	} else if cl.xp() != nil {
		cl.xp().will = nil
	}
	cl.box().unsend()
	s.cancelScans(cl) // the previous connection's retained deliveries
	present := false
	if fresh {
		s.dropSession(cl)
		if cl.persistent {
			cl.persistent = false
			s.logSession(cl) // replay drops the same subscriptions and messages
		}
	} else {
		present = cl.persistent
		if !cl.persistent {
			// A new session (3.1.2.4): what a clean-session connection
			// it takes over had (never logged) ends with it.
			s.dropSession(cl)
		}
	}
	had := cl.expiry != 0
	cl.expiry = 0
	if v5 && keep {
		cl.expiry = expiryInterval5(ls.conn5(c).expiry)
	}
	if keep != cl.persistent {
		cl.persistent = keep
		s.logSession(cl)
	} else if keep && (had || cl.expiry != 0) {
		s.logSession(cl) // the expiry in force: an interval again, not the offline deadline
	}
	ss.client = cl.idx
	ss.epoch = cl.epoch
	ss.keepalive = cp.KeepAlive
	if v5 {
		ss.keepalive = s.keepAlive5(cp.KeepAlive)
	}
	ss.tokens = float32(s.cfg.PublishBurst)
	ss.newInbox = float32(s.cfg.NewInboxBurst)
	ss.src = srcSlot(peer)
	ss.last = c.Loop().Now().UnixNano()
	if v5 {
		c.Write(s.connack5(ls, present, assigned, ls.conn5(c), cp.KeepAlive != ss.keepalive, ss.keepalive))
	} else {
		c.Write(mqtt.AppendConnack(ls.out[:0], present, mqtt.ConnAccepted))
	}
	s.pump(c, cl)
	cl.trimExt()
	profile := cl.profileID()
	userID := ""
	if profile {
		userID = cl.name()
	}
	cl.mu.Unlock()
	if old != 0 {
		s.eng.Post(old, netpoll.Message{Kind: msgTakeover})
	}
	if ss.keepalive == 0 {
		c.SetDeadline(0)
	}
	if profile {
		if s.cfg.Cluster != nil {
			s.cfg.Cluster.Claim(userID)
		}
		s.presence(ls, userID, nil)
	}
	connects.Ended()
	return reasonOK
}

// dropSession drops what a session holds beside the profile's inbox: its
// subscriptions, queued generic messages and QoS 2 packet ids; cl is
// locked.
func (s *Server) dropSession(cl *client) {
	s.dropSubs(cl)
	cl.box().dropGeneric()
	if cl.xp() != nil {
		cl.xp().clearQoS2()
	}
}

// dropSubs removes cl's generic subscriptions; cl is locked.
func (s *Server) dropSubs(cl *client) {
	x := cl.xp()
	if x == nil {
		return
	}
	s.cancelScans(cl)
	for _, sub := range x.subs.items {
		s.tree.unsubscribe(sub.filter, cl)
	}
	x.subs = indexedList[string, subRef]{}
}

// presence publishes p/<user>: "online" if offline is nil, else
// "offline <unix-seconds>".
func (s *Server) presence(ls *loopState, user string, offline *int64) {
	t := append(append(ls.rcpt[:0], "p/"...), user...)
	var buf [32]byte
	payload := append(buf[:0], "online"...)
	if offline != nil {
		payload = strconv.AppendInt(append(buf[:0], "offline "...), *offline, 10)
	}
	s.publishGeneric(ls, t, payload, 1, false)
	ls.rcpt = t[:0]
}

// MaxTopicLevels bounds the levels of a generic topic or filter: each level
// may be a node of the subscription tree or the retained trie, and a scan
// keeps a frame per level, so without it one 64 KiB topic of '/'s costs
// megabytes (found in review). A PUBLISH or will deeper than this is
// refused like one the ACLs refuse (not_authorized; CONNACK 5 for a will),
// a filter gets SUBACK 0x80. EMQX's default max_topic_levels is 128 too.
const MaxTopicLevels = 128

func tooDeep(t []byte) bool { return bytes.Count(t, []byte{'/'}) >= MaxTopicLevels }

// profileTopic reports whether topic is in the messaging profile's space
// (u/, r/, g/, p/), which never goes through the generic router.
func profileTopic(t []byte) bool {
	return len(t) >= 2 && t[1] == '/' && (t[0] == 'u' || t[0] == 'r' || t[0] == 'g' || t[0] == 'p')
}

// cut returns the two levels of "a/b" (b without '/'), ok false otherwise.
func cutTwo(t []byte) (a, b []byte, ok bool) {
	a, b, ok = bytes.Cut(t, []byte{'/'})
	if !ok || !validIDBytes(a) || !validIDBytes(b) {
		return nil, nil, false
	}
	return a, b, true
}

// allowPublish refills both of ss's token buckets and takes a publish token.
func (s *Server) allowPublish(ss *session, now int64) bool {
	dt := float64(now-ss.last) / 1e9
	ss.last = now
	if s.cfg.NewInboxRate > 0 {
		ss.newInbox = float32(min(float64(ss.newInbox)+dt*s.cfg.NewInboxRate, s.cfg.NewInboxBurst))
	}
	if s.cfg.PublishRate < 0 {
		return true
	}
	t := float64(ss.tokens) + dt*s.cfg.PublishRate
	if t > s.cfg.PublishBurst {
		t = s.cfg.PublishBurst
	}
	if t < 1 {
		ss.tokens = float32(t)
		return false
	}
	ss.tokens = float32(t - 1)
	return true
}

func (s *Server) publish(c *netpoll.Conn, ls *loopState, ss *session, cl *client, p *mqtt.Packet) Reason {
	if !s.allowPublish(ss, c.Loop().Now().UnixNano()) {
		return ReasonFlood
	}
	ls.cl.used = false
	if p.QoS == 2 {
		cl.mu.Lock()
		seen := false
		if cl.xp() != nil {
			seen = slices.Contains(cl.xp().qos2(), p.PacketID)
		}
		cl.mu.Unlock()
		if seen { // a DUP of a QoS 2 message already routed (method B, 4.3.3)
			s.ackAfter(c, ls, mqtt.TypePubrec, p.PacketID)
			return reasonOK
		}
	}
	if s.storeDown(p.QoS, p.Retain) {
		// Not stored, so not acknowledged; the client sends it again
		// when it reconnects (the store retries meanwhile).
		return ReasonStoreUnavailable
	}
	topic := p.Topic
	if ss.flags&sV5 != 0 {
		ls.fwd = s.forwardProps(ls, p.Props.Raw)
		ls.self = cl
		defer func() { ls.fwd, ls.self = nil, nil }()
	}
	cl.mu.Lock()
	if !ownedLocked(c, ss, cl) {
		cl.mu.Unlock()
		return ReasonTakeover
	}
	ls.from = append(ls.from[:0], cl.idBytes()...)
	profile := cl.profileID()
	cl.mu.Unlock()
	from := ls.from
	switch {
	case profileTopic(topic):
		if !profile {
			// A client id that is not a user id cannot be stamped as
			// a sender: refused like any unauthorized PUBLISH.
			return ReasonNotAuthorized
		}
		rest := topic[2:]
		switch topic[0] {
		case 'u', 'r':
			to, mid, ok := cutTwo(rest)
			if !ok {
				return ReasonNotAuthorized
			}
			kind := byte('m')
			if topic[0] == 'r' {
				kind = 'r'
			}
			ls.noNotice = ss.flags&sV5 != 0
			res := s.storeDirect(ls, ss, kind, to, from, nil, mid, p.Payload)
			ls.noNotice = false
			switch res {
			case storeNoRoom:
				return ReasonStoreFull // not acknowledged: the client sends it again later
			case storeRateLimited:
				return ReasonNewInboxRate
			}
		case 'g':
			g, mid, ok := cutTwo(rest)
			if !ok || !s.groups.isMember(g, from) {
				return ReasonNotAuthorized
			}
			ls.names = s.groups.others(g, from, ls.names[:0])
			res := s.storeGroup(ls, from, g, mid, p.Payload, ls.names)
			clear(ls.names)
			if res == storeNoRoom {
				return ReasonStoreFull // not acknowledged: the client sends it again later
			}
		default: // p/: presence is the server's
			return ReasonNotAuthorized
		}
	case len(topic) >= 5 && string(topic[:5]) == "$SYS/":
		return ReasonNotAuthorized
	case tooDeep(topic):
		return ReasonNotAuthorized
	default:
		s.publishGeneric(ls, topic, p.Payload, p.QoS, p.Retain)
	}
	s.stats.published.Add(1)
	if ls.quota {
		// 5.0: the recipient's inbox is full; no notice was stored.
		ls.quota = false
		s.refusePublish5(c, ls, ss, p, ReasonStoreFull)
		return reasonOK
	}
	switch p.QoS {
	case 1:
		s.ackAfter(c, ls, mqtt.TypePuback, p.PacketID)
	case 2:
		cl.mu.Lock()
		if ownedLocked(c, ss, cl) {
			x := cl.x().busy()
			x.qos2in = append(x.qos2in, p.PacketID)
			s.logQ2(cl, p.PacketID, true)
		}
		cl.mu.Unlock()
		s.ackAfter(c, ls, mqtt.TypePubrec, p.PacketID)
	}
	return reasonOK
}

// storeResult is the outcome of storeDirect.
type storeResult uint8

const (
	storeOK storeResult = iota
	// storeNotified: over the recipient's bound; the message was not
	// stored and an inbox_full notice u/<from>/e/<to>/<mid> was stored in
	// the sender's inbox instead (for a receipt or notice: it was dropped
	// and counted). Accepted all the same (PUBACK).
	//
	// The rule that keeps "a message the server acknowledged is never
	// silently dropped" true: a direct message, read receipt or group
	// message is acknowledged only if, for every recipient, either the
	// copy was stored or the notice to the sender was stored. A notice
	// that does not fit the sender (its inbox at the bound plus a quarter,
	// or the store cap) makes the PUBLISH storeNoRoom instead: no PUBACK,
	// the sender is closed with store_full and sends it again later.
	storeNotified
	// storeNoRoom: a direct message, read receipt or group message over
	// the store cap, or whose inbox_full notice the sender has no room
	// for; nothing stored, not to be acknowledged.
	storeNoRoom
	// storeRateLimited: it would create an inbox for a never-seen user
	// over the sender's new-inbox rate; nothing stored, not acknowledged.
	storeRateLimited
)

// profileTopicLen returns the length of u/<to>/<kind>/[<group>/]<from>/<mid>.
func profileTopicLen(to, from, group, mid []byte) int {
	n := 2 + len(to) + 3 + len(from) + 1 + len(mid)
	if group != nil {
		n += len(group) + 1
	}
	return n
}

// appendProfileTopic builds u/<to>/<kind>/[<group>/]<from>/<mid> in ls.topic.
func appendProfileTopic(ls *loopState, kind byte, to, from, group, mid []byte) []byte {
	t := append(ls.topic[:0], "u/"...)
	t = append(t, to...)
	t = append(t, '/', kind, '/')
	if kind == 'g' {
		t = append(append(t, group...), '/')
	}
	t = append(append(append(t, from...), '/'), mid...)
	ls.topic = t[:0]
	return t
}

// bounds returns the entry and byte bounds of an inbox for kind: messages
// (m, g) get the inbox bounds, receipts and notices (r, d, e) a quarter
// more (a separate allowance, so that a full inbox still gets its
// receipts, yet bounded).
func (s *Server) bounds(kind byte) (max, maxBytes int) {
	max, maxBytes = s.cfg.InboxMessages, s.cfg.InboxBytes
	if kind == 'r' || kind == 'd' || kind == 'e' {
		max, maxBytes = max+max/4, maxBytes+maxBytes/4
	}
	return max, maxBytes
}

// fitsLocked reports whether count more entries holding held bytes in all
// (heldSize of each) fit cl (locked; nil: an offline user with no record)
// under the bounds of kind and the store cap.
func (s *Server) fitsLocked(cl *client, kind byte, count, held int) bool {
	max, maxBytes := s.bounds(kind)
	var q *inbox
	if cl != nil {
		q = cl.box()
	}
	add := held
	if q.len() == 0 {
		add += inboxOverhead
	}
	if q.len()+count > max || q.held()+add > maxBytes {
		return false
	}
	return s.storeRoomN(cl, count, held)
}

// storeDirect puts a profile message into to's inbox:
// kind 'm': u/<to>/m/<from>/<mid> (a direct message, with receipts),
// kind 'r': u/<to>/r/<from>/<mid> (a read receipt),
// kind 'g': u/<to>/g/<group>/<from>/<mid> (a group message; storeGroup
// decides beforehand that the notice fits, so it is forced),
// kind 'd', 'e': receipts and error notices generated by the edge.
// Bounds are those of s.bounds(kind). A message or read receipt that does
// not fit puts an inbox_full notice u/<from>/e/<to>/<mid> into the
// sender's inbox instead, or, if that does not fit either, is storeNoRoom
// (see storeNotified); a notice or 'd' receipt that does not fit is
// dropped and counted, so notices never recurse. ss is the publishing
// session for m and r (their new-inbox rate), nil for the others.
func (s *Server) storeDirect(ls *loopState, ss *session, kind byte, to, from, group, mid, payload []byte) storeResult {
	t := appendProfileTopic(ls, kind, to, from, group, mid)
	flags := uint8(fDurable)
	if kind == 'm' {
		flags |= fReceipt
	}
	n := len(t) + len(payload) + 9
	cl := s.reg.lock(to, false)
	if s.cfg.Cluster != nil && (cl == nil || cl.handle == 0) && s.routeAway(ls, kind, to, from, group, mid, payload) {
		if cl != nil {
			cl.mu.Unlock()
		}
		return storeOK
	}
	if cl == nil {
		if ss != nil && !s.reg.known(to) && !s.takeNewInbox(ss) {
			s.stats.newInboxRate.Add(1)
			return storeRateLimited
		}
		cl = s.reg.lock(to, true)
	}
	res := storeOK
	switch {
	case cl == nil: // the user table is full: as good as a full store
		res = storeNoRoom
	case !s.storeRoom(cl, n):
		res = storeNoRoom
	case !s.fitsLocked(cl, kind, 1, heldSize(n)):
		res = storeNotified
	}
	if res == storeOK {
		offline := cl.handle == 0
		var props []byte
		if kind == 'm' || kind == 'r' || kind == 'g' {
			props = ls.fwd
		}
		s.deliverLocked(cl, t, payload, flags, props)
		if offline {
			s.notifyOffline(kind, to, from, group, mid)
		}
		return storeOK
	}
	if cl != nil {
		gen := cl.gen
		cl.mu.Unlock()
		s.reg.release(cl, gen) // a record made for nothing goes again
	}
	switch {
	case kind == 'd' || kind == 'e':
		s.stats.notices.Add(1)
		return storeNotified
	case res == storeNoRoom && kind != 'g':
		s.stats.storeFull.Add(1)
		return storeNoRoom
	}
	if ls.noNotice && res == storeNotified {
		// A v5 sender hears it in its PUBACK (0x97) instead.
		s.stats.inboxFull.Add(1)
		ls.quota = true
		return storeNotified
	}
	// The notice goes to the sender: u/<from>/e/<to>/<mid>. For m and r
	// it must fit, or the message is not acknowledged; for g storeGroup
	// checked that it fits, and it is stored whatever happened since.
	if !s.notice(ls, from, bytes.Clone(to), mid, inboxFull, kind == 'g') {
		s.stats.storeFull.Add(1)
		return storeNoRoom
	}
	if res == storeNoRoom {
		s.stats.storeFull.Add(1)
	} else {
		s.stats.inboxFull.Add(1)
	}
	return storeNotified
}

// notice stores the notice u/<to>/e/<about>/<mid> with payload why in to's
// inbox, within the notice allowance and the store cap unless force is
// set; it reports whether it was stored. It never causes another notice.
func (s *Server) notice(ls *loopState, to, about, mid, why []byte, force bool) bool {
	t := appendProfileTopic(ls, 'e', to, about, nil, mid)
	n := len(t) + len(why) + 9
	cl := s.reg.lock(to, true)
	if cl == nil {
		return false
	}
	if s.cfg.Cluster != nil && cl.handle == 0 && s.routeAway(ls, 'e', to, about, nil, mid, why) {
		gen := cl.gen
		cl.mu.Unlock()
		s.reg.release(cl, gen)
		return true
	}
	if !force && !s.fitsLocked(cl, 'e', 1, heldSize(n)) {
		gen := cl.gen
		cl.mu.Unlock()
		s.reg.release(cl, gen)
		return false
	}
	s.deliverLocked(cl, t, why, fDurable, nil)
	return true
}

// deliverLocked puts a QoS 1 profile message into cl's inbox, dating the
// inbox if it is new (for its expiry), unlocks cl and kicks its connection.
func (s *Server) deliverLocked(cl *client, topic, payload []byte, flags uint8, props []byte) {
	if cl.made == 0 {
		cl.made = uint32(s.cfg.Now().Unix())
	}
	h := s.pushProps(cl, topic, payload, 1, false, flags, props)
	cl.mu.Unlock()
	s.kick(h)
}

// storeGroup delivers the group message g/<group>/<mid> from from to
// members (the others), or refuses it whole. The rule: first every
// member is examined (one lock at a time); the members that cannot take
// their copy (inbox bounds or store cap) need an inbox_full notice each,
// and if the sender's notice allowance or the store cap cannot hold them
// all, nothing is written to anyone and the PUBLISH is storeNoRoom (no
// PUBACK, store_full). Otherwise each member gets its copy, and a member
// that cannot take it when written (a concurrent delivery may have
// filled it since) gets a notice to the sender that is stored whatever
// the bounds say: the sender's allowance is overshot by at most one
// notice per such race, at most the group's size per PUBLISH.
func (s *Server) storeGroup(ls *loopState, from, group, mid, payload []byte, members []string) storeResult {
	if s.held.Load() >= s.cfg.StoreMaxBytes {
		s.stats.storeFull.Add(1)
		return storeNoRoom
	}
	count, held := 0, 0
	for _, m := range members {
		to := []byte(m)
		n := profileTopicLen(to, from, group, mid) + len(payload) + 9
		cl := s.reg.lock(to, false)
		fits := s.fitsLocked(cl, 'g', 1, heldSize(n))
		if cl != nil {
			cl.mu.Unlock()
		}
		if !fits {
			count++
			held += heldSize(profileTopicLen(from, to, nil, mid) + len(inboxFull) + 9)
		}
	}
	if count > 0 {
		cl := s.reg.lock(from, false)
		fits := cl != nil && s.fitsLocked(cl, 'e', count, held)
		if cl != nil {
			cl.mu.Unlock()
		}
		if !fits {
			s.stats.storeFull.Add(1)
			return storeNoRoom
		}
	}
	for _, m := range members {
		s.storeDirect(ls, nil, 'g', []byte(m), from, group, mid, payload)
	}
	return storeOK
}

// storeRoom reports whether an entry of n encoded bytes fits under the
// store cap for cl (locked; nil: offline with no record): under the soft
// level anything fits; in the last eighth only a connected recipient
// whose inbox is shorter than the in-flight window (it drains at once)
// gets more.
func (s *Server) storeRoom(cl *client, n int) bool { return s.storeRoomN(cl, 1, heldSize(n)) }

// storeRoomN is storeRoom for count entries holding held bytes in all.
func (s *Server) storeRoomN(cl *client, count, held int) bool {
	h := s.held.Load() + int64(held+inboxOverhead)
	if h <= s.storeSoft {
		return true
	}
	if h > s.cfg.StoreMaxBytes || cl == nil {
		return false
	}
	return cl.handle != 0 && cl.box().len()+count <= int(s.inflight.Load())
}

// takeNewInbox takes a token from ss's new-inbox bucket and from its
// source address's.
func (s *Server) takeNewInbox(ss *session) bool {
	if s.cfg.NewInboxRate < 0 {
		return true
	}
	// The source bucket runs on Config.Now (this is the rare path: an
	// inbox about to be made), so that tests can drive it.
	if ss.newInbox < 1 || !s.src.take(ss.src, s.cfg.Now().UnixNano(), s.cfg.NewInboxRate, s.cfg.NewInboxBurst) {
		return false
	}
	ss.newInbox--
	return true
}

// srcSlots is the size of the per-source new-inbox table: 65,536 buckets
// of 16 bytes (1 MiB per server), indexed by a maphash of the address
// under the per-process idSeed. Sharing remains: addresses that hash to
// the same slot share one bucket, so with A active source addresses a
// slot is shared by about A/65,536 of them, and an abuser's address
// drains the allowance of the few honest addresses in its slot. The seed
// keeps an abuser from choosing which slot (and so whom) it hits, but one
// holding many addresses (IPv6 /64s are cheap) drains many slots at once:
// this limits sprayers, it is not a per-address guarantee.
const srcSlots = 1 << 16

// srcBuckets are token buckets for new inboxes per source address (IPv4
// address, IPv6 /64: what one subscriber usually holds), so that a client
// that reconnects for a fresh per-connection burst gets none. Taking a
// token happens only when an inbox is about to be made for a never-seen
// user, so one mutex is enough.
type srcBuckets struct {
	mu sync.Mutex // guards b
	b  [srcSlots]struct {
		tokens float64
		last   int64 // unix nanos of the last refill; 0 = never used
	}
}

// srcSlot hashes a peer address (the IPv4 address or the IPv6 /64 prefix,
// with hashID) to its slot.
func srcSlot(a netip.Addr) uint32 {
	b := a.As16()
	k := b[:8]
	if a.Is4() {
		k = b[12:]
	}
	return hashID(k) & (srcSlots - 1)
}

// take refills slot's bucket to now (unix nanos) and takes a token.
func (sb *srcBuckets) take(slot uint32, now int64, rate, burst float64) bool {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	b := &sb.b[slot]
	if b.last == 0 {
		b.tokens, b.last = burst, now
	}
	if now > b.last {
		b.tokens = min(b.tokens+float64(now-b.last)/1e9*rate, burst)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// pushLocked appends a PUBLISH to cl's inbox (cl locked) and returns the
// handle to kick, or 0.
func (s *Server) pushLocked(cl *client, topic, payload []byte, qos byte, retain bool, flags uint8) netpoll.Handle {
	return s.pushProps(cl, topic, payload, qos, retain, flags, nil)
}

// pushProps is pushLocked for a message with v5 properties (nil: none).
func (s *Server) pushProps(cl *client, topic, payload []byte, qos byte, retain bool, flags uint8, props []byte) netpoll.Handle {
	var e entry
	if props != nil {
		e = storedProps(topic, payload, qos, retain, flags, props)
	} else {
		buf := getBuf(len(topic) + len(payload) + 9)
		*buf = mqtt.AppendPublish(*buf, topic, payload, qos, retain, false, 1)
		e = entry{buf: buf, flags: flags}
		if qos > 0 {
			e.pidOff = uint32(len(*buf) - len(payload) - 2)
		}
	}
	q := cl.x().queue()
	if q.acct == nil {
		q.acct, q.cnt = &s.held, &s.entries
	}
	q.push(e)
	s.logPut(cl, q.at(q.len()-1))
	if q.len() == inboxWatchFloor {
		s.watchInbox(cl.idx)
	}
	s.stats.stored.Add(1)
	if cl.handle != 0 && !cl.kick {
		cl.kick = true
		return cl.handle
	}
	return 0
}

func (s *Server) kick(h netpoll.Handle) {
	if h != 0 {
		s.eng.Post(h, netpoll.Message{Kind: msgKick})
	}
}

// publishGeneric routes a plain MQTT message through the topic tree.
func (s *Server) publishGeneric(ls *loopState, topic, payload []byte, qos byte, retain bool) {
	if retain && !s.tree.setRetainedProps(topic, payload, ls.fwd, qos, s.cfg.MaxRetained, s.cfg.RetainedMaxBytes, s.storeSoft) {
		s.stats.retainedFull.Add(1)
	}
	ls.subs = s.tree.match(topic, ls.subs)
	for _, sub := range ls.subs {
		q := min(qos, sub.qos)
		cl := sub.cl
		if sub.opts&mqtt.SubNoLocal != 0 && cl == ls.self {
			continue // 3.8.3.1: not to the publisher's own subscription
		}
		cl.mu.Lock()
		n := len(topic) + len(payload) + 9
		if cl.dead || cl.gen != sub.gen || cl.handle == 0 && (q == 0 || !cl.persistent || cl.expiry != 0 && s.sessionEnded(cl, s.cfg.Now().Unix())) ||
			cl.box().full(s.cfg.InboxMessages, s.cfg.InboxBytes, n) || !s.storeRoom(cl, n) {
			cl.mu.Unlock()
			s.stats.dropped.Add(1)
			continue
		}
		props := ls.fwd
		if sub.id != 0 {
			ls.subProps = mqtt.AppendVBIProp(append(ls.subProps[:0], ls.fwd...), mqtt.PropSubscriptionID, int(sub.id))
			props = ls.subProps
		}
		h := s.pushProps(cl, topic, payload, q, retain && sub.opts&mqtt.SubRetainAsPublished != 0, 0, props)
		cl.mu.Unlock()
		s.kick(h)
	}
	clear(ls.subs)
	if s.cfg.Cluster != nil {
		s.broadcast(ls, topic, payload, qos, retain)
	}
}

// pump sends cl's inbox to c up to the in-flight window; cl is locked and c
// owns its session.
func (s *Server) pump(c *netpoll.Conn, cl *client) {
	q := cl.box()
	if q == nil {
		return
	}
	ls := s.loops[c.LoopID()]
	window := int(s.inflight.Load())
	var c5 *conn5
	if ls.sess.get(c.Slot()).flags&sV5 != 0 {
		c5 = ls.v5[c.Slot()]
		window = min(window, int(c5.recvMax)) // the client's Receive Maximum
	}
	for q.nsent < q.len() {
		e := q.at(q.nsent)
		if e.flags&fProps != 0 {
			if s.expired(e) {
				s.logEntry(recDel, cl, e)
				q.remove(q.nsent)
				continue
			}
		}
		if e.pidOff == 0 { // QoS 0: fire and forget
			if e.flags&fProps != 0 {
				if dropped, err := s.writeStored(c, c5, *e.buf, 0); err != nil {
					return
				} else if dropped {
					s.stats.tooBig.Add(1)
				}
			} else if c5 != nil {
				if dropped, err := s.writePublish5(c, c5, *e.buf, 0); err != nil {
					return
				} else if dropped {
					s.stats.tooBig.Add(1)
				}
			} else if c.Write(*e.buf) != nil {
				return
			}
			s.loops[c.LoopID()].sent.Add(1)
			q.remove(q.nsent)
			continue
		}
		if q.nsent >= window {
			return
		}
		if e.pid == 0 {
			// MQTT 4.4: a persistent session's redeliveries keep their
			// packet ids, so the id given is logged (persist.go).
			e.pid = cl.allocPID()
			if cl.persistent {
				s.logEntry(recSent, cl, e)
			}
		}
		if e.flags&fReleased != 0 {
			var b [4]byte
			if c.Write(mqtt.AppendPubrel(b[:0], e.pid)) != nil {
				return
			}
		} else {
			b := *e.buf
			b[e.pidOff], b[e.pidOff+1] = byte(e.pid>>8), byte(e.pid)
			if e.flags&fDup != 0 {
				b[0] |= 0x08
			}
			if c5 != nil || e.flags&fProps != 0 {
				write := s.writePublish5
				if e.flags&fProps != 0 {
					write = s.writeStored
				}
				dropped, err := write(c, c5, b, e.pidOff)
				if err != nil {
					return
				}
				if dropped {
					// 3.1.2.25: over the client's Maximum Packet Size it
					// is not sent, as if it had been delivered.
					s.stats.tooBig.Add(1)
					s.logEntry(recDel, cl, e)
					q.remove(q.nsent)
					continue
				}
			} else if c.Write(b) != nil {
				return
			}
			s.loops[c.LoopID()].sent.Add(1)
		}
		q.nsent++
	}
}

// ack handles PUBACK, PUBREC and PUBCOMP for deliveries to cl.
func (s *Server) ack(c *netpoll.Conn, ls *loopState, ss *session, cl *client, t mqtt.Type, pid uint16) {
	cl.mu.Lock()
	if cl.handle != c.Handle() || cl.epoch != ss.epoch {
		cl.mu.Unlock()
		return
	}
	i := cl.box().findSent(pid)
	if i < 0 {
		cl.mu.Unlock()
		if t == mqtt.TypePubrec { // 4.3.3: answer a PUBREC we no longer track
			c.Write(mqtt.AppendPubrel(ls.out[:0], pid))
		}
		return
	}
	e := cl.box().at(i)
	receipt := false
	switch t {
	case mqtt.TypePuback:
		if e.flags&fReceipt != 0 {
			ls.rcpt = append(ls.rcpt[:0], e.topic()...)
			receipt = true
		}
		s.logEntry(recDel, cl, e)
		cl.box().remove(i)
	case mqtt.TypePubrec:
		if e.qos() == 2 && e.flags&fReleased == 0 {
			e.flags |= fReleased
			s.logEntry(recRel, cl, e)
		}
		c.Write(mqtt.AppendPubrel(ls.out[:0], pid))
	case mqtt.TypePubcomp:
		s.logEntry(recDel, cl, e)
		cl.box().remove(i)
	}
	s.pump(c, cl)
	cl.trimExt()
	cl.mu.Unlock()
	if receipt {
		// u/<me>/m/<from>/<mid> -> u/<from>/d/<me>/<mid>
		t := ls.rcpt
		if me, from, mid, ok := splitDelivered(t); ok {
			s.storeDirect(ls, nil, 'd', from, me, nil, mid, nil)
		}
		ls.rcpt = t[:0]
	}
}

// splitDelivered splits u/<me>/m/<from>/<mid> without allocating.
func splitDelivered(t []byte) (me, from, mid []byte, ok bool) {
	if len(t) < 2 || t[0] != 'u' || t[1] != '/' {
		return nil, nil, nil, false
	}
	rest := t[2:]
	i := bytes.IndexByte(rest, '/')
	if i < 0 || len(rest) < i+3 || rest[i+1] != 'm' || rest[i+2] != '/' {
		return nil, nil, nil, false
	}
	meB := rest[:i]
	rest = rest[i+3:]
	j := bytes.IndexByte(rest, '/')
	if j < 0 {
		return nil, nil, nil, false
	}
	return meB, rest[:j], rest[j+1:], true
}

func (s *Server) subscribe(c *netpoll.Conn, ls *loopState, ss *session, cl *client, p *mqtt.Packet) {
	ls.subID = p.Props.SubscriptionID // 0 for 3.1.1
	defer func() { ls.subID = 0 }()
	codes := ls.codes[:0]
	skip := ls.skipRet[:0]
	v5 := ss.flags&sV5 != 0
	it := p.NewFilterIter()
	for {
		var filter []byte
		var qos byte
		var ok bool
		if v5 {
			// The options byte: QoS, No Local, Retain As Published
			// (kept with the subscription), Retain Handling (now).
			filter, qos, ok = it.NextOptions()
		} else {
			filter, qos, ok = it.Next()
		}
		if !ok {
			break
		}
		rh := mqtt.RetainHandling(qos)
		qos &^= 3 << 4
		if len(codes) >= s.cfg.MaxFiltersPerSubscribe {
			s.stats.overPacket.Add(1)
			codes = append(codes, mqtt.SubackFailure)
			skip = append(skip, true)
			continue
		}
		skipRet := rh == 2
		if rh == 1 {
			cl.mu.Lock()
			skipRet = cl.xp() != nil && cl.xp().subs.find(string(filter)) >= 0 // only for a new subscription
			cl.mu.Unlock()
		}
		skip = append(skip, skipRet)
		if _, _, shared := mqtt.SplitShared(filter); shared {
			skip[len(skip)-1] = true // 4.8.2: no retained messages for a shared subscription
		}
		code := s.subscribeOne(c, ss, cl, filter, qos)
		if ss.flags&sV5 != 0 {
			code = subCode5(code, code == mqtt.RCQuotaExceeded)
		} else if code >= 0x80 {
			code = mqtt.SubackFailure
		}
		codes = append(codes, code)
	}
	if ss.flags&sV5 != 0 {
		c.Write(mqtt.AppendSuback5(ls.out[:0], p.PacketID, codes, nil))
	} else {
		c.Write(mqtt.AppendSuback(ls.out[:0], p.PacketID, codes))
	}
	ls.codes = codes[:0]
	// Retained messages (and presence) for the new subscriptions, after
	// SUBACK: an exact filter's at once, a wildcard filter's by a scan that
	// OnTick runs in slices.
	i := 0
	scans := false
	ls.skipRet = skip[:0]
	for filter := range p.Filters() {
		code := codes[i]
		i++
		if code >= 0x80 || skip[i-1] || filter[0] == 'u' && len(filter) > 1 && filter[1] == '/' {
			continue
		}
		if len(filter) > 1 && filter[0] == 'p' && filter[1] == '/' {
			s.sendPresence(ls, cl, filter, code)
			continue
		}
		cl.mu.Lock()
		if !ownedLocked(c, ss, cl) {
			cl.mu.Unlock()
			break
		}
		var h netpoll.Handle
		if hasWildcard(filter) {
			x := cl.x()
			if j := x.subs.find(string(filter)); j >= 0 {
				s.queueScan(x, s.tree.startScan(x.subs.items[j].filter, x.subs.items[j].seq, code))
				scans = true
			}
		} else if payload, qos, ok := s.tree.retained(string(filter)); ok {
			if n := len(filter) + len(payload) + 9; !cl.box().full(s.cfg.InboxMessages, s.cfg.InboxBytes, n) && s.storeRoom(cl, n) {
				h = s.pushLocked(cl, filter, payload, min(code, qos), true, 0)
			} else {
				s.stats.dropped.Add(1)
			}
		}
		cl.mu.Unlock()
		s.kick(h)
	}
	if scans && ss.flags&sScanning == 0 {
		ss.flags |= sScanning
		ls.scanning = append(ls.scanning, c.Handle())
	}
}

// sendPresence sends the current presence of the user in filter p/<user>.
func (s *Server) sendPresence(ls *loopState, cl *client, filter []byte, qos byte) {
	var buf [32]byte
	payload, known := s.remotePresence(filter[2:], buf[:0])
	if !known {
		var online bool
		var last int64
		if online, last, known = s.reg.presence(filter[2:]); !known {
			return
		}
		payload = append(buf[:0], "online"...)
		if !online {
			payload = strconv.AppendInt(append(buf[:0], "offline "...), last, 10)
		}
	}
	// The same bounds as retained delivery; and one pending (unsent) entry
	// per presence topic is enough: a second SUBSCRIBE to p/<user> while
	// one waits would only repeat it (any change after it comes as a live
	// presence PUBLISH, queued after it), so it is skipped (among the
	// newest pendingScan unsent entries).
	n := len(filter) + len(payload) + 9
	cl.mu.Lock()
	var h netpoll.Handle
	if !cl.box().full(s.cfg.InboxMessages, s.cfg.InboxBytes, n) && s.storeRoom(cl, n) && !cl.box().pending(filter) {
		h = s.pushLocked(cl, filter, payload, min(qos, 1), true, 0)
	}
	cl.mu.Unlock()
	s.kick(h)
}

// subscribeOne applies the ACLs of PROTOCOL.md and subscribes.
func (s *Server) subscribeOne(c *netpoll.Conn, ss *session, cl *client, filter []byte, qos byte) byte {
	full := filter
	if _, f, ok := mqtt.SplitShared(filter); ok {
		// The ACLs apply to the filter shared; the profile's topics are
		// never shared (an inbox has one reader).
		if profileTopic(f) || len(f) == 1 && reservedTopic(f) {
			return mqtt.SubackFailure
		}
		filter = f
	}
	if len(filter) >= 2 && filter[1] == '/' {
		rest := filter[2:]
		switch filter[0] {
		case 'u': // only one's own inbox, which is implicit
			if !cl.profileID() {
				return mqtt.SubackFailure // no inbox
			}
			me := cl.idBytes()
			own := bytes.HasPrefix(rest, me) && (len(rest) == len(me) || rest[len(me)] == '/')
			if !own {
				return mqtt.SubackFailure
			}
			return min(qos&3, 1)
		case 'r', 'g': // nothing is ever published there to subscribers
			return mqtt.SubackFailure
		case 'p':
			if !validIDBytes(rest) {
				return mqtt.SubackFailure
			}
		}
	}
	if tooDeep(filter) || sysFilter(filter) && !sysAllowed(c.RemoteAddr().Addr()) {
		return mqtt.SubackFailure
	}
	filter = full
	f := string(filter)
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if !ownedLocked(c, ss, cl) {
		return mqtt.SubackFailure // taken over meanwhile: not the new session's subscription
	}
	if cl.persistent && s.wal != nil && s.wal.Failed() {
		return mqtt.SubackFailure // a persistent subscription needs a record: not now
	}
	if !s.addSubLocked(cl, f, qos, s.loop(c).subID, false) {
		s.stats.overClient.Add(1)
		cl.trimExt()
		return mqtt.RCQuotaExceeded // 3.1.1: 0x80
	}
	if cl.persistent {
		s.logClient(recSub, cl, filter, subField(qos, s.loop(c).subID)) // with its v5 options and identifier
	}
	return qos & 3
}

// addSubLocked subscribes cl (locked) to f, replacing a subscription to
// the same filter (3.8.4: and its retained scan); false if it is new and
// cl holds MaxSubscriptions already (unless force: a replayed session
// keeps what it had).
func (s *Server) addSubLocked(cl *client, f string, qos byte, id uint32, force bool) bool {
	x := cl.x()
	i := x.subs.find(f)
	if i < 0 && x.subs.len() >= s.cfg.MaxSubscriptions && !force {
		return false
	}
	s.tree.subscribeID(f, cl, qos, id)
	x.subSeq++
	if i >= 0 {
		x.subs.items[i].qos, x.subs.items[i].seq, x.subs.items[i].id = qos, x.subSeq, id
		return true
	}
	x.subs.add(subRef{filter: f, seq: x.subSeq, qos: qos, id: id})
	return true
}

// removeSubLocked unsubscribes cl (locked) from filter; its retained scan,
// if any, sees the subscription gone.
func (s *Server) removeSubLocked(cl *client, filter []byte) bool {
	x := cl.xp()
	if x == nil {
		return false
	}
	i := x.subs.find(string(filter))
	if i < 0 {
		return false
	}
	s.tree.unsubscribe(x.subs.items[i].filter, cl)
	x.subs.remove(i)
	return true
}

func (s *Server) unsubscribe(c *netpoll.Conn, ls *loopState, ss *session, cl *client, p *mqtt.Packet) {
	codes := ls.codes[:0]
	cl.mu.Lock()
	for filter := range p.Filters() {
		code := mqtt.RCNoSubscriptionExisted
		if !ownedLocked(c, ss, cl) {
			break
		}
		if s.removeSubLocked(cl, filter) {
			code = mqtt.RCSuccess
			if cl.persistent {
				s.logClient(recUnsub, cl, filter)
			}
		}
		codes = append(codes, code)
	}
	cl.trimExt()
	cl.mu.Unlock()
	if ss.flags&sV5 != 0 {
		for len(codes) < p.NumFilters { // taken over meanwhile: not done
			codes = append(codes, mqtt.RCUnspecified)
		}
		c.Write(mqtt.AppendUnsuback5(ls.out[:0], p.PacketID, codes, nil))
	} else {
		c.Write(mqtt.AppendUnsuback(ls.out[:0], p.PacketID))
	}
	ls.codes = codes[:0]
}

// OnTimer implements netpoll.Handler: handshake and keepalive timeouts.
func (s *Server) OnTimer(c *netpoll.Conn) {
	if s.loop(c).sess.get(c.Slot()).client == 0 {
		if s.cfg.WS != nil && s.cfg.WS.Upgrading(c) {
			c.Close(s.cfg.WS.TimedOut()) // ws_handshake_timeout
			return
		}
		c.Close(closeErr(ReasonHandshakeTimeout))
		return
	}
	ls := s.loop(c)
	s.disconnect5(c, ls, ls.sess.get(c.Slot()), ReasonKeepalive, 0)
	ls.discSent = false
	c.Close(closeErr(ReasonKeepalive))
}

// OnMessage implements netpoll.Handler.
func (s *Server) OnMessage(c *netpoll.Conn, m *netpoll.Message) {
	ss := s.loop(c).sess.get(c.Slot())
	switch m.Kind {
	case msgTakeover:
		ls := s.loop(c)
		s.disconnect5(c, ls, ss, ReasonTakeover, 0)
		ls.discSent = false
		c.Close(closeErr(ReasonTakeover))
	case msgKick:
		if ss.client == 0 {
			return
		}
		cl := s.reg.at(ss.client)
		if cl == nil {
			return
		}
		cl.mu.Lock()
		if cl.handle == c.Handle() && cl.epoch == ss.epoch {
			cl.kick = false
			s.pump(c, cl)
			cl.trimExt()
		}
		cl.mu.Unlock()
	}
}

// OnClose implements netpoll.Handler.
func (s *Server) OnClose(c *netpoll.Conn, reason error) {
	r := classify(reason)
	s.closes[r].Add(1)
	s.conns.Add(-1)
	ls := s.loop(c)
	ss := ls.sess.get(c.Slot())
	if r != ReasonEOF && r != ReasonDisconnect && r != ReasonShutdown && s.logs.allow() {
		s.cfg.Logger.Debug("connection closed", "reason", r.String(), "peer", c.RemoteAddr().String())
	}
	idx, epoch := ss.client, ss.epoch
	sendWill := false
	if ss.flags&sV5 != 0 {
		sendWill = ls.v5[c.Slot()].sendWill
		delete(ls.v5, c.Slot())
		delete(ls.alias5, c.Slot())
		delete(ls.aliasOut, c.Slot())
	}
	*ss = session{}
	if idx == 0 {
		return
	}
	cl := s.reg.at(idx)
	if cl == nil {
		return
	}
	cl.mu.Lock()
	if cl.handle != c.Handle() || cl.epoch != epoch {
		cl.mu.Unlock() // taken over: the new connection owns the session
		return
	}
	now := s.cfg.Now().Unix()
	cl.handle = 0
	cl.owner.Store(0)
	cl.kick = false
	cl.lastSeen = now
	if cl.profileID() {
		var b [8]byte
		s.logClient(recSeen, cl, u64(&b, uint64(now)))
	}
	var w *will
	if cl.xp() != nil {
		w = cl.xp().will
		cl.xp().will = nil
	}
	cl.box().unsend()
	s.cancelScans(cl)
	if !cl.persistent {
		s.dropSession(cl)
	} else if cl.expiry != 0 {
		cl.expiry = expiryDeadline5(now, cl.expiry) // offline: the Session Expiry Interval runs
		s.logSessionEnd(cl)
	}
	cl.box().trim()
	cl.trimExt()
	id, gen, profile := cl.name(), cl.gen, cl.profileID()
	cl.mu.Unlock()
	if w != nil && (r != ReasonDisconnect || sendWill) {
		s.sendWill(ls, cl, gen, epoch, w)
	}
	if profile {
		s.presence(ls, id, &now)
	}
	s.reg.release(cl, gen)
	if s.wal != nil && !ls.storeWake {
		// OnClose runs after this iteration's OnTick wrote the log: one
		// more iteration writes what it logged (last seen, a will into
		// an offline persistent inbox), however idle the loop is.
		ls.storeWake = s.eng.PostLoop(c.LoopID(), netpoll.Message{Kind: msgStoreWake}) == nil
	}
}

// logLimiter allows up to logBurst debug lines per second.
type logLimiter struct {
	sec   atomic.Int64
	count atomic.Int64
}

const logBurst = 10

func (l *logLimiter) allow() bool {
	now := time.Now().Unix()
	if l.sec.Load() != now {
		l.sec.Store(now)
		l.count.Store(0)
	}
	return l.count.Add(1) <= logBurst
}
