package edge

import (
	"sync/atomic"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/netpoll"
)

// The engine's side of the Server: the netpoll callbacks, each packet's
// dispatch (handle), and a loop's private state.

// Cross-loop message kinds.
const (
	msgKick     uint32 = iota + 1 // the client's inbox has something to send
	msgTakeover                   // a newer connection took the session over
	msgScanWake                   // (loop message) retained scans have work: do not block in the poller
)

// handler is the Server as the engine sees it: the netpoll.Handler and
// netpoll.LoopHandler callbacks, called on the loops only, so that they are
// not part of the Server's public face. It embeds the Server: the
// callbacks' bodies use its fields and methods as they are.
type handler struct{ *Server }

var (
	_ netpoll.Handler     = handler{}
	_ netpoll.LoopHandler = handler{}
)

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
	// (written by the loop only; benchmarks read it); mostVisits is the
	// most trie visits one OnTick made and scanSlices the OnTicks that
	// made any (tests read them: the bound that does not depend on how
	// loaded the machine is).
	longestSlice atomic.Int64
	mostVisits   atomic.Int64
	scanSlices   atomic.Int64
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

func (s *Server) loop(c *netpoll.Conn) *loopState { return s.loops[c.LoopID()] }

// OnOpen implements netpoll.Handler.
func (s handler) OnOpen(c *netpoll.Conn) {
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
func (s handler) OnData(c *netpoll.Conn, data []byte) (int, error) {
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
	if !mayOwn(c, cl) {
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
		if x := cl.xp(); x != nil && ownedLocked(cl, c.Handle(), ss.epoch) {
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
		if ownedLocked(cl, c.Handle(), ss.epoch) && cl.xp() != nil {
			cl.xp().will = nil // 3.14.4: a DISCONNECT discards the will
		}
		cl.mu.Unlock()
		return ReasonDisconnect
	default: // CONNECT again, or a server-to-client packet
		return ReasonProtocol
	}
	return reasonOK
}

// OnTimer implements netpoll.Handler: handshake and keepalive timeouts.
func (s handler) OnTimer(c *netpoll.Conn) {
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
func (s handler) OnMessage(c *netpoll.Conn, m *netpoll.Message) {
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
		if ownedLocked(cl, c.Handle(), ss.epoch) {
			cl.kick = false
			s.pump(c, cl)
			cl.trimExt()
		}
		cl.mu.Unlock()
	}
}

// OnClose implements netpoll.Handler.
func (s handler) OnClose(c *netpoll.Conn, reason error) {
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
	if !ownedLocked(cl, c.Handle(), epoch) {
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
		s.sendWill(ls, cl, id, gen, epoch, w)
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

// OnLoopMessage implements netpoll.LoopHandler.
func (s handler) OnLoopMessage(l *netpoll.Loop, m *netpoll.Message) {
	if m.Kind == msgScanWake {
		s.loops[l.ID()].wakePosted = false
	}
	if m.Kind == msgStoreWake {
		s.loops[l.ID()].storeWake = false // OnTick writes and sends what became durable
	}
	if m.Kind == msgClusterAck || m.Kind == msgClusterFail {
		s.loops[l.ID()].cl.done(m.Arg, m.Kind == msgClusterAck) // OnTick sends the PUBACKs
	}
}

// OnTick implements netpoll.LoopHandler: one slice of the loop's retained
// scans, round robin over its scanning connections.
func (s handler) OnTick(l *netpoll.Loop) {
	ls := s.loops[l.ID()]
	if len(ls.scanning) > 0 || len(ls.parked) > 0 {
		s.tickScans(l, ls)
	}
	if s.cfg.Cluster != nil {
		s.flushCluster(l, ls)
	}
	if s.wal != nil || s.cfg.Cluster != nil {
		s.commitTick(l, ls) // last: the scans above may have logged entries
	}
}
