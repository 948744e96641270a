package edge

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/netpoll"
)

var inboxFull = []byte("inbox_full")

// Cross-loop message kinds.
const (
	msgKick     uint32 = iota + 1 // the client's inbox has something to send
	msgTakeover                   // a newer connection took the session over
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

	// bigMu guards big: the clients whose inbox reached inboxWatchFloor,
	// for LongInboxes. Lock order: a client's mu, then bigMu.
	bigMu   sync.Mutex
	big     map[uint32]struct{}
	anonSeq atomic.Uint64
	stats   msgCounters
	logs    logLimiter

	mu      sync.Mutex // guards admin, adminLn, started, closed
	admin   *http.Server
	adminLn net.Listener
	started bool
	closed  bool
}

// msgCounters count messages; the observability work exports them.
type msgCounters struct {
	published    atomic.Uint64 // PUBLISH packets accepted from clients
	stored       atomic.Uint64 // entries added to inboxes
	inboxFull    atomic.Uint64 // direct or group messages refused with inbox_full
	dropped      atomic.Uint64 // generic deliveries dropped (offline QoS 0, full inbox)
	retainedFull atomic.Uint64 // retained messages not stored: the store was full
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
}

// New validates cfg and builds a Server (not yet listening). It returns an
// error wrapping ErrBadConfig for an invalid configuration.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, reg: newRegistry(), tree: newTopicTree(), groups: newGroups()}
	s.inflight.Store(int64(cfg.Inflight))
	eng, err := netpoll.New(netpoll.Config{
		Addr:       cfg.Addr,
		Loops:      cfg.Loops,
		MaxPending: cfg.MaxPacketSize + mqtt.MaxHeaderLen,
		MaxQueued:  cfg.MaxQueued,
		Handler:    s,
		LiveHook:   cfg.LiveHook,
		ExtraAddrs: cfg.ExtraAddrs,

		PartialTimeout:  cfg.PartialTimeout,
		MaxPartialBytes: cfg.MaxPartialBytes,
	})
	if err != nil {
		return nil, fmt.Errorf("create engine: %w", err)
	}
	s.eng = eng
	s.loops = make([]*loopState, eng.NumLoops())
	for i := range s.loops {
		s.loops[i] = &loopState{out: make([]byte, 0, 512), topic: make([]byte, 0, 256), rcpt: make([]byte, 0, 256)}
	}
	return s, nil
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
		s.admin = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
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
	s.started = true
	return nil
}

// Addr returns the client listener's bound address.
func (s *Server) Addr() net.Addr { return s.eng.Addr() }

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
	if err := s.eng.Close(); err != nil {
		return fmt.Errorf("close engine: %w", err)
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
	ss := s.loop(c).sess.get(c.Slot())
	*ss = session{}
	if n := s.conns.Add(1); s.cfg.MaxConnections > 0 && n > int64(s.cfg.MaxConnections) {
		ss.flags |= sOverLimit
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
		k, err := mqtt.Decode(data[n:], s.cfg.MaxPacketSize, &ls.pkt)
		if err != nil {
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
		return s.connect(c, ls, ss, &p.Connect)
	}
	cl := s.reg.at(ss.client)
	if cl == nil || netpoll.Handle(cl.owner.Load()) != c.Handle() {
		// Taken over (the takeover message is on its way): this
		// connection no longer speaks for the client.
		return ReasonTakeover
	}
	switch p.Type {
	case mqtt.TypePublish:
		return s.publish(c, ls, ss, cl, p)
	case mqtt.TypePuback, mqtt.TypePubrec, mqtt.TypePubcomp:
		s.ack(c, ls, ss, cl, p.Type, p.PacketID)
	case mqtt.TypePubrel:
		cl.mu.Lock()
		if x := cl.xp(); x != nil && ownedLocked(c, ss, cl) {
			for i, id := range x.qos2in {
				if id == p.PacketID {
					x.qos2in[i] = x.qos2in[len(x.qos2in)-1]
					x.qos2in = x.qos2in[:len(x.qos2in)-1]
					break
				}
			}
			cl.trimExt()
		}
		cl.mu.Unlock()
		c.Write(mqtt.AppendPubcomp(ls.out[:0], p.PacketID))
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

// anonymousOK reports whether c may connect without a token.
func (s *Server) anonymousOK(c *netpoll.Conn) bool {
	switch s.cfg.Auth {
	case AuthAnonymous:
		return true
	case AuthLoopbackAnonymous:
		return c.RemoteAddr().Addr().Unmap().IsLoopback()
	}
	return false
}

func (s *Server) refuse(c *netpoll.Conn, ls *loopState, code byte) Reason {
	c.Write(mqtt.AppendConnack(ls.out[:0], false, code))
	return ReasonConnRefused
}

func (s *Server) connect(c *netpoll.Conn, ls *loopState, ss *session, cp *mqtt.Connect) Reason {
	if ss.flags&sOverLimit != 0 {
		return s.refuse(c, ls, mqtt.ConnRefusedServerUnavailable)
	}
	id := cp.ClientID
	if s.anonymousOK(c) && (!cp.PasswordFlag || len(s.cfg.Secret) == 0) {
		if len(id) == 0 {
			if !cp.CleanSession {
				return s.refuse(c, ls, mqtt.ConnRefusedIdentifierRejected)
			}
			id = strconv.AppendUint(append(ls.topic[:0], "anon-"...), s.anonSeq.Add(1), 10)
		}
		if !validIDBytes(id) {
			return s.refuse(c, ls, mqtt.ConnRefusedIdentifierRejected)
		}
	} else {
		if !cp.UsernameFlag || !cp.PasswordFlag {
			return s.refuse(c, ls, mqtt.ConnRefusedBadUsernamePassword)
		}
		if len(id) == 0 {
			id = cp.Username
		}
		if !validIDBytes(id) {
			return s.refuse(c, ls, mqtt.ConnRefusedIdentifierRejected)
		}
		if !bytes.Equal(id, cp.Username) {
			return s.refuse(c, ls, mqtt.ConnRefusedBadUsernamePassword)
		}
		if len(s.cfg.Secret) == 0 || VerifyToken(s.cfg.Secret, string(id), string(cp.Password), s.cfg.Now()) != nil {
			return s.refuse(c, ls, mqtt.ConnRefusedNotAuthorized)
		}
	}
	var w *will
	if cp.WillFlag {
		if profileTopic(cp.WillTopic) {
			return s.refuse(c, ls, mqtt.ConnRefusedNotAuthorized)
		}
		w = &will{topic: string(cp.WillTopic), payload: bytes.Clone(cp.WillMessage), qos: cp.WillQoS, retain: cp.WillRetain}
	}
	cl := s.reg.lock(id, true)
	if cl == nil {
		return s.refuse(c, ls, mqtt.ConnRefusedServerUnavailable)
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
	present := false
	if cp.CleanSession {
		s.dropSubs(cl)
		cl.persistent = false
		cl.box().dropGeneric()
		if cl.xp() != nil {
			cl.xp().qos2in = nil
		}
	} else {
		present = cl.persistent
		cl.persistent = true
	}
	ss.client = cl.idx
	ss.epoch = cl.epoch
	ss.keepalive = cp.KeepAlive
	ss.tokens = float32(s.cfg.PublishBurst)
	ss.last = c.Loop().Now().UnixNano()
	c.Write(mqtt.AppendConnack(ls.out[:0], present, mqtt.ConnAccepted))
	s.pump(c, cl)
	cl.trimExt()
	userID := cl.name()
	cl.mu.Unlock()
	if old != 0 {
		s.eng.Post(old, netpoll.Message{Kind: msgTakeover})
	}
	if cp.KeepAlive == 0 {
		c.SetDeadline(0)
	}
	s.presence(ls, userID, nil)
	return reasonOK
}

// dropSubs removes cl's generic subscriptions; cl is locked.
func (s *Server) dropSubs(cl *client) {
	if cl.xp() == nil {
		return
	}
	for _, sub := range cl.xp().subs {
		s.tree.unsubscribe(sub.filter, cl)
	}
	cl.xp().subs = nil
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

func (s *Server) allowPublish(ss *session, now int64) bool {
	if s.cfg.PublishRate < 0 {
		return true
	}
	dt := float64(now-ss.last) / 1e9
	ss.last = now
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
	if p.QoS == 2 {
		cl.mu.Lock()
		seen := false
		if cl.xp() != nil {
			seen = slices.Contains(cl.xp().qos2in, p.PacketID)
		}
		cl.mu.Unlock()
		if seen { // a DUP of a QoS 2 message already routed (method B, 4.3.3)
			c.Write(mqtt.AppendPubrec(ls.out[:0], p.PacketID))
			return reasonOK
		}
	}
	topic := p.Topic
	cl.mu.Lock()
	if !ownedLocked(c, ss, cl) {
		cl.mu.Unlock()
		return ReasonTakeover
	}
	ls.from = append(ls.from[:0], cl.idBytes()...)
	cl.mu.Unlock()
	from := ls.from
	switch {
	case profileTopic(topic):
		rest := topic[2:]
		switch topic[0] {
		case 'u':
			to, mid, ok := cutTwo(rest)
			if !ok {
				return ReasonNotAuthorized
			}
			s.storeDirect(ls, 'm', to, from, nil, mid, p.Payload, true)
		case 'r':
			to, mid, ok := cutTwo(rest)
			if !ok {
				return ReasonNotAuthorized
			}
			s.storeDirect(ls, 'r', to, from, nil, mid, p.Payload, false)
		case 'g':
			g, mid, ok := cutTwo(rest)
			if !ok || !s.groups.isMember(g, from) {
				return ReasonNotAuthorized
			}
			ls.names = s.groups.others(g, from, ls.names[:0])
			for _, m := range ls.names {
				s.storeDirect(ls, 'g', []byte(m), from, g, mid, p.Payload, true)
			}
			clear(ls.names)
		default: // p/: presence is the server's
			return ReasonNotAuthorized
		}
	case len(topic) >= 5 && string(topic[:5]) == "$SYS/":
		return ReasonNotAuthorized
	default:
		s.publishGeneric(ls, topic, p.Payload, p.QoS, p.Retain)
	}
	s.stats.published.Add(1)
	switch p.QoS {
	case 1:
		c.Write(mqtt.AppendPuback(ls.out[:0], p.PacketID))
	case 2:
		cl.mu.Lock()
		if ownedLocked(c, ss, cl) {
			x := cl.x()
			x.qos2in = append(x.qos2in, p.PacketID)
		}
		cl.mu.Unlock()
		c.Write(mqtt.AppendPubrec(ls.out[:0], p.PacketID))
	}
	return reasonOK
}

// storeDirect puts a profile message into to's inbox:
// kind 'm': u/<to>/m/<from>/<mid> (a direct message, with receipts),
// kind 'r': u/<to>/r/<from>/<mid> (a read receipt),
// kind 'g': u/<to>/g/<group>/<from>/<mid> (a group message),
// kind 'd', 'e': receipts and error notices generated by the edge.
// Messages bounded (m, g) that do not fit put an inbox_full notice
// u/<from>/e/<to>/<mid> into the sender's inbox instead.
func (s *Server) storeDirect(ls *loopState, kind byte, to, from, group, mid, payload []byte, bounded bool) {
	t := append(ls.topic[:0], "u/"...)
	t = append(t, to...)
	t = append(t, '/', kind, '/')
	if kind == 'g' {
		t = append(append(t, group...), '/')
	}
	t = append(append(append(t, from...), '/'), mid...)
	ls.topic = t[:0]
	flags := uint8(fDurable)
	if kind == 'm' {
		flags |= fReceipt
	}
	cl := s.reg.lock(to, true)
	if cl == nil || bounded && cl.box().full(s.cfg.InboxMessages, s.cfg.InboxBytes, len(t)+len(payload)+9) {
		if cl != nil {
			cl.mu.Unlock()
		}
		s.stats.inboxFull.Add(1)
		if bounded {
			// The notice goes to the sender: u/<from>/e/<to>/<mid>.
			s.storeDirect(ls, 'e', from, bytes.Clone(to), nil, mid, inboxFull, false)
		}
		return
	}
	h := s.pushLocked(cl, t, payload, 1, false, flags)
	cl.mu.Unlock()
	s.kick(h)
}

// pushLocked appends a PUBLISH to cl's inbox (cl locked) and returns the
// handle to kick, or 0.
func (s *Server) pushLocked(cl *client, topic, payload []byte, qos byte, retain bool, flags uint8) netpoll.Handle {
	buf := getBuf(len(topic) + len(payload) + 9)
	*buf = mqtt.AppendPublish(*buf, topic, payload, qos, retain, false, 1)
	e := entry{buf: buf, flags: flags}
	if qos > 0 {
		e.pidOff = uint32(len(*buf) - len(payload) - 2)
	}
	q := &cl.x().q
	q.push(e)
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
	if retain && !s.tree.setRetained(topic, payload, qos, s.cfg.MaxRetained) {
		s.stats.retainedFull.Add(1)
	}
	ls.subs = s.tree.match(topic, ls.subs)
	for _, sub := range ls.subs {
		q := min(qos, sub.qos)
		cl := sub.cl
		cl.mu.Lock()
		if cl.dead || cl.gen != sub.gen || cl.handle == 0 && (q == 0 || !cl.persistent) ||
			cl.box().full(s.cfg.InboxMessages, s.cfg.InboxBytes, len(topic)+len(payload)+9) {
			cl.mu.Unlock()
			s.stats.dropped.Add(1)
			continue
		}
		h := s.pushLocked(cl, topic, payload, q, false, 0)
		cl.mu.Unlock()
		s.kick(h)
	}
	clear(ls.subs)
}

// pump sends cl's inbox to c up to the in-flight window; cl is locked and c
// owns its session.
func (s *Server) pump(c *netpoll.Conn, cl *client) {
	q := cl.box()
	if q == nil {
		return
	}
	for q.nsent < q.len() {
		e := q.at(q.nsent)
		if e.pidOff == 0 { // QoS 0: fire and forget
			if c.Write(*e.buf) != nil {
				return
			}
			q.remove(q.nsent)
			continue
		}
		if q.nsent >= int(s.inflight.Load()) {
			return
		}
		if e.flags&fReleased != 0 {
			var b [4]byte
			if c.Write(mqtt.AppendPubrel(b[:0], e.pid)) != nil {
				return
			}
		} else {
			if e.pid == 0 {
				e.pid = cl.allocPID()
			}
			b := *e.buf
			b[e.pidOff], b[e.pidOff+1] = byte(e.pid>>8), byte(e.pid)
			if e.flags&fDup != 0 {
				b[0] |= 0x08
			}
			if c.Write(b) != nil {
				return
			}
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
		cl.box().remove(i)
	case mqtt.TypePubrec:
		if e.qos() == 2 && e.flags&fReleased == 0 {
			e.flags |= fReleased
		}
		c.Write(mqtt.AppendPubrel(ls.out[:0], pid))
	case mqtt.TypePubcomp:
		cl.box().remove(i)
	}
	s.pump(c, cl)
	cl.trimExt()
	cl.mu.Unlock()
	if receipt {
		// u/<me>/m/<from>/<mid> -> u/<from>/d/<me>/<mid>
		t := ls.rcpt
		if me, from, mid, ok := splitDelivered(t); ok {
			s.storeDirect(ls, 'd', from, me, nil, mid, nil, false)
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
	codes := ls.codes[:0]
	for filter, qos := range p.Filters() {
		codes = append(codes, s.subscribeOne(c, ss, cl, filter, qos))
	}
	c.Write(mqtt.AppendSuback(ls.out[:0], p.PacketID, codes))
	ls.codes = codes[:0]
	// Retained messages (and presence) for the new subscriptions, after SUBACK.
	i := 0
	for filter := range p.Filters() {
		code := codes[i]
		i++
		if code == mqtt.SubackFailure || filter[0] == 'u' && len(filter) > 1 && filter[1] == '/' {
			continue
		}
		if len(filter) > 1 && filter[0] == 'p' && filter[1] == '/' {
			s.sendPresence(ls, cl, filter, code)
			continue
		}
		cl.mu.Lock()
		var h netpoll.Handle
		s.tree.retainedFor(string(filter), func(topic string, m retainedMsg) {
			if !cl.box().full(s.cfg.InboxMessages, s.cfg.InboxBytes, len(topic)+len(m.payload)+9) {
				if k := s.pushLocked(cl, []byte(topic), m.payload, min(code, m.qos), true, 0); k != 0 {
					h = k
				}
			}
		})
		cl.mu.Unlock()
		s.kick(h)
	}
}

// sendPresence sends the current presence of the user in filter p/<user>.
func (s *Server) sendPresence(ls *loopState, cl *client, filter []byte, qos byte) {
	online, last, known := s.reg.presence(filter[2:])
	if !known {
		return
	}
	var buf [32]byte
	payload := append(buf[:0], "online"...)
	if !online {
		payload = strconv.AppendInt(append(buf[:0], "offline "...), last, 10)
	}
	cl.mu.Lock()
	h := s.pushLocked(cl, filter, payload, min(qos, 1), true, 0)
	cl.mu.Unlock()
	s.kick(h)
}

// subscribeOne applies the ACLs of PROTOCOL.md and subscribes.
func (s *Server) subscribeOne(c *netpoll.Conn, ss *session, cl *client, filter []byte, qos byte) byte {
	if len(filter) >= 2 && filter[1] == '/' {
		rest := filter[2:]
		switch filter[0] {
		case 'u': // only one's own inbox, which is implicit
			me := cl.idBytes()
			own := bytes.HasPrefix(rest, me) && (len(rest) == len(me) || rest[len(me)] == '/')
			if !own {
				return mqtt.SubackFailure
			}
			return min(qos, 1)
		case 'r', 'g': // nothing is ever published there to subscribers
			return mqtt.SubackFailure
		case 'p':
			if !validIDBytes(rest) {
				return mqtt.SubackFailure
			}
		}
	}
	f := string(filter)
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if !ownedLocked(c, ss, cl) {
		return mqtt.SubackFailure // taken over meanwhile: not the new session's subscription
	}
	s.tree.subscribe(f, cl, qos)
	x := cl.x()
	for i := range x.subs {
		if x.subs[i].filter == f {
			x.subs[i].qos = qos
			return qos
		}
	}
	x.subs = append(x.subs, subRef{f, qos})
	return qos
}

func (s *Server) unsubscribe(c *netpoll.Conn, ls *loopState, ss *session, cl *client, p *mqtt.Packet) {
	cl.mu.Lock()
	for filter := range p.Filters() {
		if !ownedLocked(c, ss, cl) {
			break
		}
		x := cl.xp()
		if x == nil {
			break
		}
		for i := range x.subs {
			if x.subs[i].filter == string(filter) {
				s.tree.unsubscribe(x.subs[i].filter, cl)
				x.subs = append(x.subs[:i], x.subs[i+1:]...)
				break
			}
		}
	}
	cl.trimExt()
	cl.mu.Unlock()
	c.Write(mqtt.AppendUnsuback(ls.out[:0], p.PacketID))
}

// OnTimer implements netpoll.Handler: handshake and keepalive timeouts.
func (s *Server) OnTimer(c *netpoll.Conn) {
	if s.loop(c).sess.get(c.Slot()).client == 0 {
		c.Close(closeErr(ReasonHandshakeTimeout))
		return
	}
	c.Close(closeErr(ReasonKeepalive))
}

// OnMessage implements netpoll.Handler.
func (s *Server) OnMessage(c *netpoll.Conn, m *netpoll.Message) {
	ss := s.loop(c).sess.get(c.Slot())
	switch m.Kind {
	case msgTakeover:
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
	var w *will
	if cl.xp() != nil {
		w = cl.xp().will
		cl.xp().will = nil
	}
	cl.box().unsend()
	if !cl.persistent {
		s.dropSubs(cl)
		cl.box().dropGeneric()
		if cl.xp() != nil {
			cl.xp().qos2in = nil
		}
	}
	cl.box().trim()
	cl.trimExt()
	id, gen := cl.name(), cl.gen
	cl.mu.Unlock()
	if w != nil && r != ReasonDisconnect {
		s.publishGeneric(ls, []byte(w.topic), w.payload, w.qos, w.retain)
	}
	s.presence(ls, id, &now)
	s.reg.release(cl, gen)
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
