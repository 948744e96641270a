package edge

// Retained messages: a trie by topic level, so that a filter visits only
// the branches it can match, and resumable scans, so that a filter matching
// a million retained topics is delivered in slices that never stall a loop.

import (
	"strings"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/netpoll"
)

// rnode is one level of the retained-message trie; the root is the empty
// topic. A node exists while it holds a retained message or has children.
type rnode struct {
	kids    *rkids // nil: no children
	name    string // the level; a substring of the topic that created the node
	topic   string // the whole topic, while payload is set
	payload []byte // the retained message, never modified in place; nil: none
	props   []byte // its v5 properties as forwardProps keeps them (the expiry a deadline); nil: none
	qos     byte
}

// rkids are a node's children in stable positions: a child keeps its index
// in list for as long as it lives, so a paused scan that resumes at index i
// still visits every child that was there when it paused. Removed children
// leave nil holes that later children reuse; list is compacted only while
// no scan is active (topicTree.scans).
type rkids struct {
	list []*rnode
	pos  map[string]int32 // name -> index in list
	free []int32          // holes in list
}

func (n *rnode) child(name string) *rnode {
	if n.kids == nil {
		return nil
	}
	if i, ok := n.kids.pos[name]; ok {
		return n.kids.list[i]
	}
	return nil
}

func (n *rnode) addChild(name string) *rnode {
	if n.kids == nil {
		n.kids = &rkids{pos: make(map[string]int32, 1)}
	}
	k := n.kids
	// A copy: a substring would keep the whole topic of the message that
	// made the node alive after that message is deleted (found in review).
	c := &rnode{name: strings.Clone(name)}
	name = c.name
	if f := len(k.free); f > 0 {
		i := k.free[f-1]
		k.free = k.free[:f-1]
		k.list[i] = c
		k.pos[name] = i
		return c
	}
	k.pos[name] = int32(len(k.list))
	k.list = append(k.list, c)
	return c
}

// compactAt is the smallest child list worth compacting.
const compactAt = 32

// removeChild unlinks child name; compact says no scan is active.
func (n *rnode) removeChild(name string, compact bool) {
	k := n.kids
	i := k.pos[name]
	delete(k.pos, name)
	if len(k.pos) == 0 {
		n.kids = nil
		return
	}
	k.list[i] = nil
	k.free = append(k.free, i)
	if !compact || len(k.list) < compactAt || 2*len(k.free) < len(k.list) {
		return
	}
	list := make([]*rnode, 0, len(k.pos))
	for _, c := range k.list {
		if c != nil {
			k.pos[c.name] = int32(len(list))
			list = append(list, c)
		}
	}
	k.list, k.free = list, nil
}

// setRetained stores (or, for an empty payload, deletes) the retained message
// of topic; payload is copied. It reports false if the message is not
// retained: topic is new and the store holds max topics, or the message
// would take the retained store's bytes held over maxBytes, or the server's
// store total (acct) over storeLimit. A refused replacement keeps the old
// message.
//
// Payloads are plain allocations, never pooled and never modified in place:
// retained() hands one out past the lock and scans read them under rmu
// only. Their bytes held are the topic, the allocation's size class
// (cap after append) and retainedOverhead.
func (t *topicTree) setRetained(topic []byte, payload []byte, qos byte, max int, maxBytes, storeLimit int64) bool {
	return t.setRetainedProps(topic, payload, nil, qos, max, maxBytes, storeLimit)
}

// setRetainedProps is setRetained for a message with v5 properties (in
// forwardProps's form; nil: none), which its later deliveries carry.
func (t *topicTree) setRetainedProps(topic, payload, props []byte, qos byte, max int, maxBytes, storeLimit int64) bool {
	t.rmu.Lock()
	defer t.rmu.Unlock()
	if len(payload) == 0 {
		if t.onSet != nil && t.findRetained(topic) != nil {
			t.onSet(topic, nil, nil, 0)
		}
		t.deleteRetained(topic)
		return true
	}
	n := t.findRetained(topic)
	var oldSize int64
	if n != nil && n.payload != nil {
		oldSize = retainedSize(n.topic, n.payload, n.props)
	}
	p := append([]byte(nil), payload...)
	var pr []byte
	if len(props) > 0 {
		pr = append([]byte(nil), props...)
	}
	add := retainedSize(string(topic), p, pr) - oldSize
	if add > 0 && (t.rbytes+add > maxBytes || t.acct != nil && t.acct.Load()+add > storeLimit) {
		return false
	}
	if n == nil || n.payload == nil {
		if t.nretained >= max {
			return false
		}
		t.nretained++
		ts := string(topic)
		n = &t.rroot
		for level := range splitLevels(ts) {
			c := n.child(level)
			if c == nil {
				c = n.addChild(level)
			}
			n = c
		}
		n.topic = ts
	}
	n.payload, n.props = p, pr
	n.qos = qos
	t.account(add)
	if t.onSet != nil {
		t.onSet(topic, p, pr, qos)
	}
	return true
}

// retainedOverhead is what a retained topic holds beyond its topic string
// and payload: its trie node and its entry in the parent's child index.
const retainedOverhead = 96

// retainedLevelOverhead is charged per level of a retained topic: the trie
// node a level may need (rnode, its child index and map entry, the level's
// name). Charged whether or not another topic shares the node, so it errs
// on the safe side, and it depends on the topic alone, so a delete credits
// back exactly what the set charged.
const retainedLevelOverhead = 160

func retainedSize(topic string, payload, props []byte) int64 {
	levels := int64(strings.Count(topic, "/") + 1)
	return int64(len(topic)+cap(payload)+cap(props)+retainedOverhead) + levels*retainedLevelOverhead
}

// account adds d to the retained bytes held and the server's store total;
// rmu is held for writing.
func (t *topicTree) account(d int64) {
	t.rbytes += d
	if t.acct != nil {
		t.acct.Add(d)
	}
}

// findRetained returns topic's node, nil if there is none; rmu is held.
func (t *topicTree) findRetained(topic []byte) *rnode {
	n := &t.rroot
	for {
		level, rest, more := cutLevel(topic)
		if n = n.child(string(level)); n == nil || !more {
			return n
		}
		topic = rest
	}
}

func cutLevel(t []byte) (level, rest []byte, more bool) {
	for i, c := range t {
		if c == '/' {
			return t[:i], t[i+1:], true
		}
	}
	return t, nil, false
}

// deleteRetained removes topic's retained message and prunes the nodes
// left empty; rmu is held for writing.
func (t *topicTree) deleteRetained(topic []byte) {
	var path []*rnode // the nodes above the deleted one, root first
	n := &t.rroot
	for {
		level, rest, more := cutLevel(topic)
		c := n.child(string(level))
		if c == nil {
			return
		}
		path = append(path, n)
		n = c
		if !more {
			break
		}
		topic = rest
	}
	if n.payload == nil {
		return
	}
	t.account(-retainedSize(n.topic, n.payload, n.props))
	n.payload, n.props, n.topic, n.qos = nil, nil, "", 0
	t.nretained--
	compact := t.scans.Load() == 0
	for d := len(path) - 1; d >= 0 && n.payload == nil && n.kids == nil; d-- {
		path[d].removeChild(n.name, compact)
		n = path[d]
	}
}

// retained returns the retained message of topic (exact, no wildcards).
func (t *topicTree) retained(topic string) (payload []byte, qos byte, ok bool) {
	t.rmu.RLock()
	defer t.rmu.RUnlock()
	n := t.findRetained([]byte(topic))
	if n == nil || n.payload == nil {
		return nil, 0, false
	}
	return n.payload, n.qos, true
}

// retainedCount returns the number of retained topics.
func (t *topicTree) retainedCount() int {
	t.rmu.RLock()
	defer t.rmu.RUnlock()
	return t.nretained
}

// scanFrame is one node on a scan's depth-first path.
type scanFrame struct {
	n     *rnode
	depth int32 // filter levels matched by n's topic
	next  int32 // next child index to visit; -1: n itself not yet looked at
}

// retainedScan is a paused-and-resumed depth-first walk of the retained
// trie for one wildcard filter. Between steps the trie may change: every
// retained message that exists for the whole scan and matches is visited
// exactly once, with its value at the time of the visit; messages stored or
// deleted during the scan may or may not be.
type retainedScan struct {
	filter string
	levels []string
	seq    uint32 // the subscription's subRef.seq: a mismatch means it was replaced or removed
	qos    byte   // granted QoS
	stack  []scanFrame
	ended  bool
}

// startScan returns a scan of filter for the subscription with seq and
// granted qos; end it with endScan.
func (t *topicTree) startScan(filter string, seq uint32, qos byte) *retainedScan {
	sc := &retainedScan{filter: filter, seq: seq, qos: qos}
	for level := range splitLevels(filter) {
		sc.levels = append(sc.levels, level)
	}
	t.rmu.RLock()
	t.scans.Add(1) // under rmu: a compaction holding the write lock sees it
	sc.stack = append(sc.stack, scanFrame{n: &t.rroot, next: -1})
	t.rmu.RUnlock()
	return sc
}

// endScan ends sc (once; later calls do nothing).
func (t *topicTree) endScan(sc *retainedScan) {
	if !sc.ended {
		sc.ended = true
		sc.stack = nil
		t.scans.Add(-1)
	}
}

// step advances sc by at most *budget visits (a node or a child slot),
// calling emit for each matching retained message; emit returns false to
// pause the scan after that message. step reports whether the scan is
// complete. rmu must be held for reading.
func (t *topicTree) step(sc *retainedScan, budget *int, emit func(n *rnode) bool) bool {
	root := &t.rroot
	for len(sc.stack) > 0 {
		if *budget <= 0 {
			return false
		}
		*budget--
		f := &sc.stack[len(sc.stack)-1]
		n, d := f.n, int(f.depth)
		if d == len(sc.levels) { // every level matched
			sc.stack = sc.stack[:len(sc.stack)-1]
			if n.payload != nil && !emit(n) {
				return false
			}
			continue
		}
		switch level := sc.levels[d]; level {
		case "#", "+":
			if f.next < 0 {
				f.next = 0
				// "a/#" matches "a" too (MQTT 4.7.1.2).
				if level == "#" && n != root && n.payload != nil && !emit(n) {
					return false
				}
				continue
			}
			if n.kids == nil || int(f.next) >= len(n.kids.list) {
				sc.stack = sc.stack[:len(sc.stack)-1]
				continue
			}
			c := n.kids.list[f.next] // one child (or hole) per visit
			f.next++
			if c == nil || n == root && reservedTopic(c.name) {
				continue
			}
			next := int32(d + 1)
			if level == "#" {
				next = int32(d)
			}
			sc.stack = append(sc.stack, scanFrame{n: c, depth: next, next: -1})
		default:
			sc.stack = sc.stack[:len(sc.stack)-1]
			if c := n.child(level); c != nil {
				sc.stack = append(sc.stack, scanFrame{n: c, depth: int32(d + 1), next: -1})
			}
		}
	}
	return true
}

// Serving retained scans. A wildcard SUBSCRIBE queues one scan per filter
// on the client (after its SUBACK is written); the connection goes on its
// loop's scanning list and OnTick serves the list once per loop iteration
// with a budget of scanBudget visits shared by all of the loop's scans, so
// no SUBSCRIBE holds a loop for longer than one slice however many
// retained topics it matches. A scan pushes into the client's inbox and
// pumps it, so retained messages respect the in-flight window; it waits
// while the inbox holds two windows' worth or the socket's output is past a
// quarter of Config.MaxQueued. Scans belong to the connection: a close or a
// takeover ends them (what they already put in a persistent session's
// inbox stays there), and an UNSUBSCRIBE or a new SUBSCRIBE to the same
// filter ends that filter's scan (the new one starts over, MQTT 3.8.4).

// scanBudget is the number of trie visits one loop makes per iteration for
// all its scans: a few milliseconds at most (see BENCHMARKS.md), so the
// other connections of the loop wait for no more. A variable so that a
// test can make a few connections outnumber it.
var scanBudget = 4096

const (
	// scanBatch is the number of messages a scan pushes before it pumps
	// the inbox and checks for room again.
	scanBatch = 64
	// parkChecks is how many parked connections one loop iteration looks
	// at (a lock and two comparisons each: well under a millisecond).
	parkChecks = 4096
)

// scanState is what a connection's scans need next.
type scanState uint8

const (
	scanDone    scanState = iota // none left: off the scanning list
	scanMore                     // work left that can go on at once: keep the loop awake
	scanWaiting                  // waiting for acknowledgements or for the socket: an event will wake the loop
	scanYield                    // output written this iteration: go on in the next one
)

// queueScan adds sc to x's scans; cl is locked. Scans whose subscription
// was replaced are swept out once they are half the queue, so the queue
// stays within twice the subscriptions however often a filter is
// subscribed again.
func (s *Server) queueScan(x *clientExt, sc *retainedScan) {
	m := x.busy()
	if len(m.scans) >= 2*(x.subs.len()+1) {
		w := 0
		for _, old := range m.scans {
			if scanCurrent(x, old) {
				m.scans[w] = old
				w++
			} else {
				s.tree.endScan(old)
			}
		}
		clear(m.scans[w:])
		m.scans = m.scans[:w]
	}
	m.scans = append(m.scans, sc)
}

// scanCurrent reports whether sc's subscription still exists unchanged.
func scanCurrent(x *clientExt, sc *retainedScan) bool {
	j := x.subs.find(sc.filter)
	return j >= 0 && x.subs.items[j].seq == sc.seq
}

// cancelScans ends cl's scans: the connection they were for is gone or
// the session was cleaned; cl is locked.
func (s *Server) cancelScans(cl *client) {
	x := cl.xp()
	if x == nil || x.more == nil {
		return
	}
	for _, sc := range x.more.scans {
		s.tree.endScan(sc)
	}
	x.more.scans = nil
}

// tickScans serves one slice of the loop's scans.
func (s *Server) tickScans(l *netpoll.Loop, ls *loopState) {
	t0 := time.Now()
	budget := scanBudget
	awake := false
	tail := ls.scanTail[:0]
	i := 0
	for ; i < len(ls.scanning) && budget > 0; i++ {
		h := ls.scanning[i]
		budget-- // a turn costs a visit, so clients that only wait are bounded too
		switch s.serveScans(l, ls, h, &budget) {
		case scanMore, scanYield:
			awake = true
			tail = append(tail, h)
		case scanWaiting:
			// Off the active list: a loop with thousands of clients that
			// do not ack would otherwise wake itself forever, each turn
			// finding them waiting (found in review).
			ls.parked = append(ls.parked, h)
		}
	}
	if i < len(ls.scanning) {
		awake = true // the budget ran out before everyone had a turn
	}
	// Those not served this time go first next time.
	ls.scanning = append(append(ls.scanning[:0], ls.scanning[i:]...), tail...)
	clear(tail)
	ls.scanTail = tail[:0]
	if s.unpark(l, ls) {
		awake = true
	}
	if awake && !ls.wakePosted {
		ls.wakePosted = s.eng.PostLoop(l.ID(), netpoll.Message{Kind: msgScanWake}) == nil
		ls.scanWakes.Add(1)
	}
	if d := int64(time.Since(t0)); d > ls.longestSlice.Load() {
		ls.longestSlice.Store(d)
	}
	if used := int64(scanBudget - budget); used > 0 {
		ls.scanSlices.Add(1)
		if used > ls.mostVisits.Load() {
			ls.mostVisits.Store(used)
		}
	}
}

// unpark looks at up to parkChecks parked connections, round robin, and
// puts those that may go on back on the scanning list; it reports whether
// it moved any.
func (s *Server) unpark(l *netpoll.Loop, ls *loopState) bool {
	moved := false
	for k := 0; k < parkChecks && len(ls.parked) > 0; k++ {
		if ls.parkNext >= len(ls.parked) {
			ls.parkNext = 0
		}
		h := ls.parked[ls.parkNext]
		zero := 0 // no visits: only ask whether it could go on
		switch s.serveScans(l, ls, h, &zero) {
		case scanWaiting:
			ls.parkNext++
			continue
		case scanMore, scanYield:
			ls.scanning = append(ls.scanning, h)
			moved = true
		}
		last := len(ls.parked) - 1
		ls.parked[ls.parkNext] = ls.parked[last]
		ls.parked[last] = 0
		ls.parked = ls.parked[:last]
	}
	return moved
}

// scanSliceStats returns the most trie visits one loop iteration made
// serving retained scans, and how many iterations made any.
func (s *Server) scanSliceStats() (most, slices int64) {
	for _, ls := range s.loops {
		most = max(most, ls.mostVisits.Load())
		slices += ls.scanSlices.Load()
	}
	return most, slices
}

// longestScanSlice returns the longest time a loop spent in one OnTick
// serving retained scans.
func (s *Server) longestScanSlice() time.Duration {
	var d int64
	for _, ls := range s.loops {
		d = max(d, ls.longestSlice.Load())
	}
	return time.Duration(d)
}

// serveScans runs h's scans within *budget.
func (s *Server) serveScans(l *netpoll.Loop, ls *loopState, h netpoll.Handle, budget *int) scanState {
	c := l.Conn(h)
	if c == nil || c.Closing() {
		return scanDone // OnClose ends the scans
	}
	ss := ls.sess.get(c.Slot())
	st := scanDone
	if cl := s.reg.at(ss.client); cl != nil {
		cl.mu.Lock()
		if ownedLocked(cl, c.Handle(), ss.epoch) {
			st = s.runScans(c, cl, budget)
		}
		cl.trimExt()
		cl.mu.Unlock()
	}
	if st == scanDone {
		ss.flags &^= sScanning
	}
	return st
}

// runScans advances cl's scans, oldest first, within *budget; cl is locked
// and c owns its session.
func (s *Server) runScans(c *netpoll.Conn, cl *client, budget *int) scanState {
	x := cl.xp()
	for x != nil && x.more != nil && len(x.more.scans) > 0 {
		m := x.more
		sc := m.scans[0]
		if !scanCurrent(x, sc) { // unsubscribed, or subscribed again: a newer scan replaces it
			s.tree.endScan(sc)
			m.scans[0] = nil
			m.scans = m.scans[1:]
			continue
		}
		if st := s.scanRoom(c, cl); st != scanMore {
			return st
		}
		if *budget <= 0 {
			return scanMore
		}
		kicked := false
		n, size, maxSize := 0, 0, s.eng.MaxQueued()/8
		ls := s.loops[c.LoopID()]
		subID := x.subs.items[x.subs.find(sc.filter)].id // scanCurrent: it is there
		now := s.cfg.Now().Unix()
		s.tree.rmu.RLock()
		done := s.tree.step(sc, budget, func(r *rnode) bool {
			q := cl.box()
			props := r.props // v5: what the retained PUBLISH carried, and the subscription's identifier
			if subID != 0 {
				ls.scanProps = mqtt.AppendVBIProp(append(ls.scanProps[:0], r.props...), mqtt.PropSubscriptionID, int(subID))
				props = ls.scanProps
			}
			if m := len(r.topic) + len(r.payload) + len(props) + 9; propsExpired(r.props, now) {
				s.stats.expired5.Add(1) // 3.3.2.3.3: past its Message Expiry, no longer sent
			} else if q.full(s.cfg.InboxMessages, s.cfg.InboxBytes, m) || !s.storeRoom(cl, m) {
				// Only when the inbox bound is under the scan's own
				// high-water mark, or the server's store is full.
				s.stats.dropped.Add(1)
			} else if s.pushProps(cl, []byte(r.topic), r.payload, min(sc.qos, r.qos), true, 0, props) != 0 {
				kicked = true
			}
			n++
			size += len(r.topic) + len(r.payload)
			return n < scanBatch && size < maxSize && s.scanRoom(c, cl) == scanMore
		})
		s.tree.rmu.RUnlock()
		if kicked {
			cl.kick = false // pumped right here, on the owner's loop
		}
		s.pump(c, cl)
		if done {
			s.tree.endScan(sc)
			m.scans[0] = nil
			m.scans = m.scans[1:]
		}
	}
	if x != nil && x.more != nil && len(x.more.scans) == 0 {
		x.more.scans = nil
	}
	return scanDone
}

// scanRoom says whether a scan may push more for c now (scanMore), in the
// next iteration (scanYield), or after an event (scanWaiting); cl is locked.
func (s *Server) scanRoom(c *netpoll.Conn, cl *client) scanState {
	q := cl.box()
	if q.len() >= 2*int(s.inflight.Load()) || 2*q.len() >= s.cfg.InboxMessages || q != nil && 2*q.bytes >= s.cfg.InboxBytes {
		return scanWaiting // acknowledgements arrive as reads on this loop
	}
	if 4*c.Queued() >= s.eng.MaxQueued() {
		if c.Backlogged() {
			return scanWaiting // writability wakes the loop
		}
		// Written during this iteration and flushed at its end: look
		// again on the next one.
		return scanYield
	}
	return scanMore
}
