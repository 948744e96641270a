package edge

import "bytes"

// The messaging profile's routing (PROTOCOL.md): direct messages, read
// receipts, group messages and notices into inboxes, within the inbox
// bounds and the store cap.

var inboxFull = []byte("inbox_full")

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

// inboxTopic is the layout of the topics the server writes into inboxes
// (PROTOCOL.md): u/<to>/<kind>/<from>/<mid>, and u/<to>/g/<group>/<from>/<mid>
// for a group message. kind is m (direct message), r (read receipt), g
// (group message), d (delivered receipt) or e (notice). appendTo writes
// it, len is what appendTo writes, and parseInboxTopic reads it back: the
// layout is written down once. The parts are not copied.
type inboxTopic struct {
	to, from, group, mid []byte
	kind                 byte
}

// len returns the length of the encoded topic.
func (p inboxTopic) len() int {
	n := 2 + len(p.to) + 3 + len(p.from) + 1 + len(p.mid)
	if p.kind == 'g' {
		n += len(p.group) + 1
	}
	return n
}

// appendTo appends the encoded topic to t.
func (p inboxTopic) appendTo(t []byte) []byte {
	t = append(t, "u/"...)
	t = append(t, p.to...)
	t = append(t, '/', p.kind, '/')
	if p.kind == 'g' {
		t = append(append(t, p.group...), '/')
	}
	return append(append(append(t, p.from...), '/'), p.mid...)
}

// parseInboxTopic reads a topic that appendTo wrote (an inbox entry's),
// without allocating. It is not a validator: it checks only the "u/"
// prefix and the number of levels its kind needs, so a topic of another
// shape may parse (any one-byte kind, empty levels, a mid holding '/');
// ok is false when even those are missing. Topics the server wrote
// always round-trip (every part is a valid id, with no '/').
func parseInboxTopic(t []byte) (p inboxTopic, ok bool) {
	rest, ok := bytes.CutPrefix(t, []byte("u/"))
	if !ok {
		return inboxTopic{}, false
	}
	var kind []byte
	if p.to, rest, ok = bytes.Cut(rest, []byte{'/'}); !ok {
		return inboxTopic{}, false
	}
	if kind, rest, ok = bytes.Cut(rest, []byte{'/'}); !ok || len(kind) != 1 {
		return inboxTopic{}, false
	}
	p.kind = kind[0]
	if p.kind == 'g' {
		if p.group, rest, ok = bytes.Cut(rest, []byte{'/'}); !ok {
			return inboxTopic{}, false
		}
	}
	if p.from, p.mid, ok = bytes.Cut(rest, []byte{'/'}); !ok {
		return inboxTopic{}, false
	}
	return p, true
}

// delivered returns the direct message u/<me>/m/<from>/<mid> that t (an
// entry with fReceipt) carries, ok false if it is not one.
func delivered(t []byte) (p inboxTopic, ok bool) {
	p, ok = parseInboxTopic(t)
	return p, ok && p.kind == 'm'
}

// appendProfileTopic builds p in ls.topic.
func appendProfileTopic(ls *loopState, p inboxTopic) []byte {
	t := p.appendTo(ls.topic[:0])
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
	t := appendProfileTopic(ls, inboxTopic{kind: kind, to: to, from: from, group: group, mid: mid})
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
	t := appendProfileTopic(ls, inboxTopic{kind: 'e', to: to, from: about, mid: mid})
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
		n := inboxTopic{kind: 'g', to: to, from: from, group: group, mid: mid}.len() + len(payload) + 9
		cl := s.reg.lock(to, false)
		fits := s.fitsLocked(cl, 'g', 1, heldSize(n))
		if cl != nil {
			cl.mu.Unlock()
		}
		if !fits {
			count++
			held += heldSize(inboxTopic{kind: 'e', to: from, from: to, mid: mid}.len() + len(inboxFull) + 9)
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
