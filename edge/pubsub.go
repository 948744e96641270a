package edge

import (
	"bytes"
	"slices"
	"strconv"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/netpoll"
)

// PUBLISH, and plain MQTT through the topic tree: publish, subscribe,
// unsubscribe, retained delivery at SUBSCRIBE, presence (p/<user>).

// dropSubs removes cl's generic subscriptions; cl is locked.
func (s *Server) dropSubs(cl *client) {
	if f := cl.inlineFilter(); f != nil {
		s.tree.unsubscribe(string(f), cl)
		cl.dropInline()
	}
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
	if !ownedLocked(cl, c.Handle(), ss.epoch) {
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
		if ownedLocked(cl, c.Handle(), ss.epoch) {
			x := cl.x().busy()
			x.qos2in = append(x.qos2in, p.PacketID)
			s.logQ2(cl, p.PacketID, true)
		}
		cl.mu.Unlock()
		s.ackAfter(c, ls, mqtt.TypePubrec, p.PacketID)
	}
	return reasonOK
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
			skipRet = cl.hasSub(filter) // only for a new subscription
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
		if !ownedLocked(cl, c.Handle(), ss.epoch) {
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
	payload, known, elsewhere := s.remotePresence(filter[2:], buf[:0])
	if !known && elsewhere {
		return // on another node, its presence not heard here (or forgotten): unknown
	}
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
			// The id under cl.mu: a record released meanwhile (taken
			// over and moved away) gives its id's bytes back to recBytes.
			cl.mu.Lock()
			me := cl.idBytes()
			own := ownedLocked(cl, c.Handle(), ss.epoch) && cl.profileID() &&
				bytes.HasPrefix(rest, me) && (len(rest) == len(me) || rest[len(me)] == '/')
			cl.mu.Unlock()
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
	if !ownedLocked(cl, c.Handle(), ss.epoch) {
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
	inl := inlineSub(f, id)
	if cl.fref != 0 {
		if inl && string(cl.inlineFilter()) == f {
			s.tree.subscribeID(f, cl, qos, id)
			cl.fqos = qos
			return true
		}
		cl.spillSub()
	}
	if inl && cl.nsubs() == 0 && (s.cfg.MaxSubscriptions > 0 || force) && cl.setInline(f, qos) {
		s.tree.subscribeID(f, cl, qos, id)
		return true
	}
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
	if f := cl.inlineFilter(); f != nil {
		if !bytes.Equal(f, filter) {
			return false
		}
		s.tree.unsubscribe(string(filter), cl)
		cl.dropInline()
		return true
	}
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
		if !ownedLocked(cl, c.Handle(), ss.epoch) {
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
