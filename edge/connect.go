package edge

import (
	"bytes"
	"net/netip"
	"strconv"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/netpoll"
)

// The session machine: CONNECT (authentication, takeover, session
// resumption), the ownership check, and what ending a session drops.

// ownedLocked is the one ownership check: it reports, with cl.mu held (or
// the loops frozen, handoff.go), whether the connection h, whose session
// connected at epoch (session.epoch), still speaks for cl's session: no
// CONNECT took it over (connect), no node took it away (cluster.go:
// moveAway) and the connection did not close (OnClose) since. Every
// change to the session checks it under the lock, so a packet in flight on
// the old connection during a takeover on another loop cannot touch the
// new session.
//
// cl.owner mirrors cl.handle for handle()'s lock-free first look (mayOwn);
// that look only turns away the packets of a connection already taken
// over, it never stands in for this check.
func ownedLocked(cl *client, h netpoll.Handle, epoch uint32) bool {
	return cl.handle == h && cl.epoch == epoch
}

// mayOwn is handle()'s lock-free look at the owner (cl may be nil: the
// record went): false means c was taken over and its takeover message is
// on its way; true is a hint, to be confirmed by ownedLocked under cl.mu.
func mayOwn(c *netpoll.Conn, cl *client) bool {
	return cl != nil && netpoll.Handle(cl.owner.Load()) == c.Handle()
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
