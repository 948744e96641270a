package edge

// The edge side of a cluster (docs/CLUSTER.md): profile messages for users
// the directory places on another node are batched per destination node on
// the loop and sent at the end of the iteration (flushCluster), the
// publisher's PUBACK held until the batch is stored (heldAck.tick); batches
// for this node arrive on the cluster's goroutine (deliverBatches); a user
// who moved to another node takes his inbox along (moveAway).
//
// Batch format: records, each a type byte and uvarint-length fields:
//
//	'D' kind, to, from, group, mid, payload, props   a profile message for storeDirect
//	'X' to, flags, packet                            an inbox entry moved as it is
//	'P' topic, payload, qos|retain<<2                a generic publish (broadcast)
//
// Links: the batches a loop sends to one node are numbered on their link
// (Batch.Seq); the destination keeps the Seqs it stored per link (links,
// logged as link records after the batch's records, in the same WAL
// commit, and replayed at start), drops one it stored already and refuses
// a fast-path batch that does not follow the last (docs/CLUSTER.md).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgedhq/edged/netpoll"
)

// Loop messages of the cluster (OnLoopMessage): a batch of tick Arg was
// stored, or failed.
const (
	msgClusterAck  uint32 = 110
	msgClusterFail uint32 = 111
)

var errBadBatch = errors.New("malformed cluster batch")

// clusterCounters are Stats.Cluster.
type clusterCounters struct {
	batches, records, failed, received, moved, broadcasts atomic.Uint64
	fast, dups, gaps                                      atomic.Uint64
}

// linkTable is what was stored per link (Batch.Link): the Seqs, as
// ranges.
type linkTable struct {
	mu sync.Mutex // guards m; taken under no other lock but wal's compaction lock (writeSnapshot)
	m  map[string]*linkState
}

// linkState is one link's stored Seqs: sorted, disjoint, non-adjacent
// ranges; one (1 to the last) but for holes: a batch the stream refused
// to its sender (never acknowledged: it does not come) or one it
// redelivers after a later one (a consumer that failed: it comes late and
// is stored then, out of order).
type linkState struct {
	runs []seqRange
	used int64 // unix seconds: stored, or replayed, then (linkIdle)
}

type seqRange struct{ lo, hi uint64 }

// maxRuns bounds a link's ranges (its holes): past it the first two merge,
// the hole between them taken as stored (a batch that came for it that
// late would be dropped as a duplicate).
const maxRuns = 256

// linkIdle: a snapshot leaves out a link not used for this long. Its
// sender restarted (a new boot is a new link) or stopped sending here; a
// batch that comes on it after all is stored (a stream batch) or sent to
// the stream (a fast one, refused as not following the last): a duplicate
// is possible only for a stream copy that waited that long.
const linkIdle = 24 * 60 * 60

func (st *linkState) has(seq uint64) bool {
	for _, r := range st.runs {
		if seq >= r.lo && seq <= r.hi {
			return true
		}
	}
	return false
}

func (st *linkState) last() uint64 {
	if len(st.runs) == 0 {
		return 0
	}
	return st.runs[len(st.runs)-1].hi
}

// add marks lo..hi stored.
func (st *linkState) add(lo, hi uint64) {
	if n := len(st.runs); n > 0 && st.runs[n-1].hi+1 == lo {
		st.runs[n-1].hi = hi // the next batch: the usual case
		return
	}
	i := 0
	for i < len(st.runs) && st.runs[i].hi+1 < lo {
		i++
	}
	j := i // runs[i:j] touch or overlap lo..hi: they merge
	for j < len(st.runs) && st.runs[j].lo <= hi+1 {
		lo, hi = min(lo, st.runs[j].lo), max(hi, st.runs[j].hi)
		j++
	}
	st.runs = append(st.runs[:i], append([]seqRange{{lo, hi}}, st.runs[j:]...)...)
	if len(st.runs) > maxRuns {
		st.runs[1].lo = st.runs[0].lo
		st.runs = append(st.runs[:0], st.runs[1:]...)
	}
}

// state returns link's stored Seqs: whether seq is one, whether prev is
// (0: true), and the last.
func (t *linkTable) state(link string, seq, prev uint64) (stored, prevStored bool, last uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.m[link]
	if st == nil {
		return false, prev == 0, 0
	}
	return st.has(seq), prev == 0 || st.has(prev), st.last()
}

// mark records lo..hi stored on link and returns what it replaced (nil:
// nothing), for put.
func (t *linkTable) mark(link string, lo, hi uint64, now int64) *linkState {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[string]*linkState)
	}
	st := t.m[link]
	var old *linkState
	if st == nil {
		st = &linkState{}
		t.m[link] = st
	} else {
		old = &linkState{runs: append([]seqRange(nil), st.runs...), used: st.used}
	}
	st.add(lo, hi)
	st.used = now
	return old
}

// put puts back what mark replaced (a delivery that failed).
func (t *linkTable) put(link string, old *linkState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old != nil {
		t.m[link] = old
	} else {
		delete(t.m, link)
	}
}

// Test hooks (nil outside the tests): testLinkCommitHook runs in
// deliverBatches once the links are marked, before the commit;
// testSnapshotHook in writeSnapshot after the inboxes.
var testLinkCommitHook, testSnapshotHook func()

// Batching limits. A destination gets at most maxFlights batches in flight
// per loop; while they are, its records gather (across iterations) into
// the next batch, so that batches grow with the load instead of JetStream
// messages growing with it. A batch is sealed at maxBatch bytes (under
// NATS's max_payload; a single record may be bigger, up to the server's
// max_payload, which the embedded server sets to 8 MiB).
const (
	maxFlights = 2
	maxBatch   = 512 << 10
)

// clusterLoop is a loopState's cluster part. Ticks number the loop's
// iterations; a held PUBACK waits for the tick in which its message was
// batched (heldAck.tick): it may go once no batch still unsent or in
// flight holds a record of that tick or an earlier one (low), and not if
// a batch holding that tick was refused (failed).
type clusterLoop struct {
	// loop: this loopState is an event loop's (batches are flushed by
	// OnTick; the consumer's is flushed by deliverBatches); else records
	// are sent at once. remote: it routes what came from another node
	// (no broadcast back). here: store moved entries here whatever the
	// directory says (an inbox put back after a failed move).
	loop, remote, here bool
	// batches are the records gathering per destination node; gen the
	// generic publishes to broadcast.
	batches map[string][]byte
	gen     []byte
	// tick is this iteration's; used says the PUBLISH being handled put
	// something into batches (its PUBACK waits for tick).
	tick uint64
	used bool
	dest map[string]*destQ
	// flights are the batches sent, by id (the loop message's Arg).
	flights    map[uint64]*flight
	nextFlight uint64
	failed     []tickRange
}

// destQ is one destination's batches beyond the gathering one.
type destQ struct {
	min    uint64    // first tick in batches[node]; 0: empty
	sealed []sealed  // full batches not yet sent
	open   []*flight // sent, in order, until the front is done
	flying int       // sent and not done
}

type sealed struct {
	b        []byte
	min, max uint64
}

type tickRange struct{ min, max uint64 }

type flight struct {
	node         string
	min, max     uint64
	done, failed bool
}

func newClusterLoop(loop bool) clusterLoop {
	return clusterLoop{loop: loop, batches: make(map[string][]byte), tick: 1,
		dest: make(map[string]*destQ), flights: make(map[uint64]*flight)}
}

func (c *clusterLoop) q(node string) *destQ {
	q := c.dest[node]
	if q == nil {
		q = &destQ{}
		c.dest[node] = q
	}
	return q
}

// gather returns node's gathering batch, with room for need more bytes
// (the batch is sealed first if it would pass maxBatch); put it back with
// c.batches[node] = b.
func (c *clusterLoop) gather(node string, need int) []byte {
	b := c.batches[node]
	q := c.q(node)
	if len(b) > 0 && len(b)+need > maxBatch {
		q.sealed = append(q.sealed, sealed{b: b, min: q.min, max: c.tick})
		b, q.min = nil, 0
	}
	if len(b) == 0 {
		q.min = c.tick
	}
	return b
}

// next takes node's next batch to send, if any.
func (c *clusterLoop) next(node string, q *destQ) (sealed, bool) {
	if len(q.sealed) > 0 {
		sb := q.sealed[0]
		q.sealed[0] = sealed{}
		q.sealed = q.sealed[1:]
		return sb, true
	}
	if b := c.batches[node]; len(b) > 0 {
		delete(c.batches, node)
		sb := sealed{b: b, min: q.min, max: c.tick}
		q.min = 0
		return sb, true
	}
	return sealed{}, false
}

// done records a flight's outcome (on the loop).
func (c *clusterLoop) done(id uint64, ok bool) {
	f := c.flights[id]
	if f == nil {
		return
	}
	delete(c.flights, id)
	f.done, f.failed = true, !ok
	q := c.dest[f.node]
	q.flying--
	for len(q.open) > 0 && q.open[0].done {
		if q.open[0].failed {
			c.failed = append(c.failed, tickRange{q.open[0].min, q.open[0].max})
		}
		q.open[0] = nil
		q.open = q.open[1:]
	}
}

// low is the first tick some batch not yet stored holds (MaxUint64: none).
func (c *clusterLoop) low() uint64 {
	low := uint64(math.MaxUint64)
	for node, q := range c.dest {
		if len(c.batches[node]) > 0 {
			low = min(low, q.min)
		}
		if len(q.sealed) > 0 {
			low = min(low, q.sealed[0].min)
		}
		if len(q.open) > 0 {
			low = min(low, q.open[0].min)
		}
	}
	return low
}

// refused reports whether a batch holding tick was refused.
func (c *clusterLoop) refused(tick uint64) bool {
	for _, r := range c.failed {
		if tick >= r.min && tick <= r.max {
			return true
		}
	}
	return false
}

// drain sends every batch with send, in order (the consumer's loopState).
func (c *clusterLoop) drain(send func(node string, b []byte) error) error {
	for node, q := range c.dest {
		for {
			sb, ok := c.next(node, q)
			if !ok {
				break
			}
			if err := send(node, sb.b); err != nil {
				return err
			}
		}
	}
	clear(c.batches)
	clear(c.dest)
	return nil
}

func appendField(b, f []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(f)))
	return append(b, f...)
}

// fields reads n fields of a record from b into dst; it returns the rest.
func fields(b []byte, dst [][]byte) ([]byte, error) {
	for i := range dst {
		l, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < l {
			return nil, errBadBatch
		}
		dst[i], b = b[k:k+int(l)], b[k+int(l):]
	}
	return b, nil
}

// routeAway puts a profile message for to into the batch of the node the
// directory names, if that is another node; it reports whether it did.
// The caller has checked that to is not connected here.
func (s *Server) routeAway(ls *loopState, kind byte, to, from, group, mid, payload []byte) bool {
	node, ok := s.cfg.Cluster.Home(to)
	if !ok || node == s.cfg.Cluster.Node() {
		return false
	}
	var props []byte
	if kind == 'm' || kind == 'r' || kind == 'g' {
		props = ls.fwd
	}
	s.clstats.records.Add(1)
	fs := [...][]byte{to, from, group, mid, payload, props}
	if !ls.cl.loop {
		// Off the loops (expiry notices, delayed wills): sent at once.
		b := append(make([]byte, 0, 64+len(payload)+len(props)), 'D', kind)
		for _, f := range fs {
			b = appendField(b, f)
		}
		if err := s.cfg.Cluster.SendSync(node, b, ""); err != nil {
			s.cfg.Logger.Warn("cluster: send", "node", node, "err", err)
			return false // stored here instead: it moves when the user is claimed again
		}
		return true
	}
	b := append(ls.cl.gather(node, 64+len(payload)+len(props)), 'D', kind)
	for _, f := range fs {
		b = appendField(b, f)
	}
	ls.cl.batches[node] = b
	ls.cl.used = true
	return true
}

// broadcast adds a generic publish to the loop's broadcast batch.
func (s *Server) broadcast(ls *loopState, topic, payload []byte, qos byte, retain bool) {
	if ls.cl.remote || sysTopic(topic) {
		return
	}
	f := qos
	if retain {
		f |= 4
	}
	b := append(ls.cl.gen, 'P')
	b = appendField(appendField(appendField(b, topic), payload), []byte{f})
	if !ls.cl.loop {
		s.cfg.Cluster.Broadcast(b)
		b = b[:0]
	}
	ls.cl.gen = b
}

// flushCluster sends the batches that may go (OnTick, before the held
// acknowledgements are looked at): per destination up to maxFlights in
// flight; the rest go as acks come back.
func (s *Server) flushCluster(l *netpoll.Loop, ls *loopState) {
	c := &ls.cl
	if len(c.gen) > 0 {
		s.clstats.broadcasts.Add(1)
		s.cfg.Cluster.Broadcast(c.gen) // copied into the connection's buffer
		c.gen = c.gen[:0]
	}
	loop := l.ID()
	for node, q := range c.dest {
		for q.flying < maxFlights {
			sb, ok := c.next(node, q)
			if !ok {
				break
			}
			c.nextFlight++
			id := c.nextFlight
			f := &flight{node: node, min: sb.min, max: sb.max}
			c.flights[id] = f
			q.open = append(q.open, f)
			q.flying++
			s.clstats.batches.Add(1)
			s.cfg.Cluster.Send(node, loop, sb.b, func(err error) {
				kind := msgClusterAck
				if err != nil {
					kind = msgClusterFail
					s.clstats.failed.Add(1)
					if s.logs.allow() {
						s.cfg.Logger.Warn("cluster: batch refused; its PUBACKs are not sent", "node", node, "err", err)
					}
				}
				s.eng.PostLoop(loop, netpoll.Message{Kind: kind, Arg: id})
			})
		}
	}
	c.tick++
	c.used = false
}

// deliverBatches stores batches sent to this node (the cluster's consumer
// goroutine) and returns once they are durable here or forwarded. A batch
// on a link is dropped if its Seq was stored already and, if it came over
// the fast path, refused (Refused) unless it follows the link's last; the
// Seqs stored are logged after the records they cover, once those were
// forwarded, so that a torn log tail or a failure never marks a batch
// stored whose records are not (a duplicate at worst, never a loss).
func (s *Server) deliverBatches(ls *loopState, batches []Batch) error {
	var f [7][]byte
	s.clstats.received.Add(uint64(len(batches)))
	type linkSeq struct {
		link string
		seq  uint64
	}
	var stored []linkSeq
	for i := range batches {
		bt := &batches[i]
		if bt.Link != "" {
			dup, prevOK, last := s.links.state(bt.Link, bt.Seq, bt.Prev)
			for _, x := range stored { // an earlier batch of this call
				if x.link == bt.Link {
					dup = dup || x.seq == bt.Seq
					prevOK = prevOK || x.seq == bt.Prev
					last = max(last, x.seq)
				}
			}
			if dup {
				s.clstats.dups.Add(1) // stored already (its reply was lost)
				continue
			}
			// It follows the last stored (Prev: Seq-1, or an earlier Seq
			// if the sender's batches in between failed on both paths,
			// never acknowledged: they are not waited for).
			if bt.Fast && (!prevOK || bt.Seq <= last) {
				// Its predecessor went to the stream and is not here
				// yet: this one follows it there.
				bt.Refused = true
				s.clstats.gaps.Add(1)
				continue
			}
			stored = append(stored, linkSeq{bt.Link, bt.Seq})
		}
		if bt.Fast {
			s.clstats.fast.Add(1)
		}
		b := bt.Data
		var err error
		for len(b) > 0 && err == nil {
			typ := b[0]
			b = b[1:]
			switch typ {
			case 'D':
				if len(b) < 1 {
					return errBadBatch
				}
				kind := b[0]
				if b, err = fields(b[1:], f[:6]); err != nil {
					break
				}
				ls.fwd = nil
				if len(f[5]) > 0 {
					ls.fwd = f[5]
				}
				group := f[2]
				if kind != 'g' {
					group = nil
				}
				for s.storeDirect(ls, nil, kind, f[0], f[1], group, f[3], f[4]) == storeNoRoom {
					// Over the store cap: the batch waits (not yet
					// acknowledged, it is not lost) until there is room.
					if s.isClosed() {
						return ErrClosed
					}
					time.Sleep(100 * time.Millisecond)
				}
				ls.fwd = nil
			case 'X':
				if b, err = fields(b, f[:3]); err != nil {
					break
				}
				if len(f[1]) != 1 {
					return errBadBatch
				}
				s.storeMoved(ls, f[0], f[1][0], f[2])
			default:
				return errBadBatch
			}
		}
		if err != nil {
			return err
		}
	}
	// Records for users who moved on meanwhile: redelivered on an error,
	// so what was stored here may then be stored twice.
	if err := ls.cl.drain(func(node string, b []byte) error { return s.cfg.Cluster.SendSync(node, b, "") }); err != nil {
		return err
	}
	if len(stored) == 0 {
		return s.syncStore()
	}
	type undo struct {
		link string
		old  *linkState
	}
	undos := make([]undo, 0, len(stored))
	now := s.cfg.Now().Unix()
	for _, x := range stored {
		undos = append(undos, undo{x.link, s.links.mark(x.link, x.seq, x.seq, now)})
		s.logLink(x.link, x.seq, x.seq)
	}
	if testLinkCommitHook != nil {
		testLinkCommitHook()
	}
	if err := s.syncStore(); err != nil {
		// Not durable: a copy that comes again (from the stream) must
		// be stored again, not taken for a duplicate.
		for i := len(undos) - 1; i >= 0; i-- {
			s.links.put(undos[i].link, undos[i].old)
		}
		return err
	}
	return nil
}

// storeMoved puts an inbox entry moved from another node into to's inbox
// (or sends it on if to moved on again).
func (s *Server) storeMoved(ls *loopState, to []byte, flags byte, pkt []byte) {
	cl := s.reg.lock(to, false)
	if (cl == nil || cl.handle == 0) && s.cfg.Cluster != nil && !ls.cl.here {
		if node, ok := s.cfg.Cluster.Home(to); ok && node != s.cfg.Cluster.Node() {
			if cl != nil {
				cl.mu.Unlock()
			}
			b := append(ls.cl.gather(node, 32+len(pkt)), 'X')
			ls.cl.batches[node] = appendField(appendField(appendField(b, to), []byte{flags}), pkt)
			return
		}
	}
	if cl == nil {
		if cl = s.reg.lock(to, true); cl == nil {
			s.stats.storeFull.Add(1)
			return // the user table is full
		}
	}
	e, ok := entryOf(pkt, flags)
	if !ok {
		cl.mu.Unlock()
		return
	}
	if cl.made == 0 {
		cl.made = uint32(s.cfg.Now().Unix())
	}
	q := cl.x().queue()
	if q.acct == nil {
		q.acct, q.cnt = &s.held, &s.entries
	}
	q.push(e)
	s.logPut(cl, q.at(q.len()-1))
	s.stats.stored.Add(1)
	h := netpoll.Handle(0)
	if cl.handle != 0 && !cl.kick {
		cl.kick = true
		h = cl.handle
	}
	cl.mu.Unlock()
	s.kick(h)
}

// entryOf copies a stored PUBLISH into a new entry with flags.
func entryOf(pkt []byte, flags byte) (entry, bool) {
	buf := getBuf(len(pkt))
	*buf = append(*buf, pkt...)
	b := *buf
	b[0] &^= 0x08 // DUP is per connection
	e := entry{buf: buf, flags: flags & persistFlags}
	if q := (b[0] >> 1) & 3; q > 0 {
		i := 1
		for b[i]&0x80 != 0 {
			i++
		}
		i++
		n := int(b[i])<<8 | int(b[i+1])
		e.pidOff = uint32(i + 2 + n)
		if int(e.pidOff)+2 > len(b) {
			putBuf(buf)
			return entry{}, false
		}
		b[e.pidOff], b[e.pidOff+1] = 0, 1
	}
	return e, true
}

// moveAway is the directory hook: user now belongs to node. If that is
// another node and user has a record here, its connection here is taken
// over and its durable inbox entries go to node (docs/CLUSTER.md).
func (s *Server) moveAway(user, node string) {
	if node == s.cfg.Cluster.Node() {
		return
	}
	cl := s.reg.lock([]byte(user), false)
	if cl == nil {
		return
	}
	old := cl.handle
	if old != 0 {
		// The old connection's packets are no longer its session's
		// (ownedLocked checks handle and epoch).
		cl.handle = 0
		cl.owner.Store(0)
		cl.epoch++
		cl.kick = false
		s.cancelScans(cl)
	}
	// The session continues on node, as after a local takeover: the old
	// connection's will is not sent (connect replaces it), and a clean
	// session's state here ends with it (its OnClose, no longer the
	// owner, does not drop it). release below then frees the record;
	// with either left it panicked, on this cluster goroutine (found in
	// review: TestMoveAwayEndsCleanSession).
	if x := cl.xp(); x != nil {
		x.will = nil
	}
	if !cl.persistent {
		s.dropSession(cl)
	}
	q := cl.box()
	q.unsend()
	var batch []byte
	var seqs []uint64
	for i := 0; i < q.len(); i++ {
		e := q.at(i)
		if e.flags&fDurable == 0 {
			continue
		}
		batch = append(batch, 'X')
		batch = appendField(appendField(appendField(batch, []byte(user)), []byte{e.flags & persistFlags}), *e.buf)
		seqs = append(seqs, e.seq)
		if e.seq != 0 && s.wal != nil {
			// Out of the inbox, still in the store until its delete
			// below (TestCompactionDuringMoveAwayKeepsInbox).
			s.moving.mu.Lock()
			if s.moving.m == nil {
				s.moving.m = make(map[uint64]movingEntry)
			}
			s.moving.m[e.seq] = movingEntry{user: user, flags: e.flags & persistFlags, pkt: slices.Clone(*e.buf), made: cl.made}
			s.moving.mu.Unlock()
		}
	}
	if len(batch) > 0 {
		q.drop(func(e *entry) bool { return e.flags&fDurable != 0 })
	}
	cl.trimExt()
	gen := cl.gen
	cl.mu.Unlock()
	if old != 0 {
		s.eng.Post(old, netpoll.Message{Kind: msgTakeover})
	}
	s.reg.release(cl, gen)
	if len(batch) == 0 {
		return
	}
	s.clstats.moved.Add(uint64(len(seqs)))
	id := ""
	if seqs[0] != 0 {
		id = fmt.Sprintf("%s/%s/%d", s.cfg.Cluster.Node(), user, seqs[0])
	}
	err := s.cfg.Cluster.SendSync(node, batch, id)
	if err != nil {
		// Put back (new puts) and try again later.
		s.cfg.Logger.Warn("cluster: move inbox", "user", user, "node", node, "err", err)
		ls := &loopState{cl: newClusterLoop(false)}
		ls.cl.remote, ls.cl.here = true, true
		if derr := s.deliverBatches(ls, []Batch{{Data: batch}}); derr != nil {
			s.cfg.Logger.Error("cluster: put inbox back", "user", user, "err", derr)
		}
		time.AfterFunc(time.Second, func() {
			if n, ok := s.cfg.Cluster.Home([]byte(user)); ok && !s.isClosed() {
				s.moveAway(user, n)
			}
		})
	}
	if s.wal != nil {
		// Deleted here only now that node has them (or they were put
		// back under new seqs): a crash before this moves them again.
		var b [8]byte
		s.moving.mu.Lock() // a snapshot restates an entry, or its delete is in the snapshot's segment
		for _, seq := range seqs {
			if seq != 0 {
				s.wal.Append(recDel, []byte(user), u64(&b, seq))
				delete(s.moving.m, seq)
			}
		}
		s.moving.mu.Unlock()
		s.syncStore()
	}
}

// isClosed reports whether Close was called.
func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// runCluster starts the cluster's deliveries (Start, after the loops run).
func (s *Server) runCluster() error {
	c := s.cfg.Cluster
	s.groups.cluster = c.SetGroup
	dls := &loopState{cl: newClusterLoop(false)}
	dls.cl.remote = true
	dls.cl.loop = true // flushed by deliverBatches itself
	gls := &loopState{cl: newClusterLoop(false)}
	gls.cl.remote = true
	var gf [3][]byte
	return c.Run(ClusterHooks{
		Deliver: func(batches []Batch) error { return s.deliverBatches(dls, batches) },
		Generic: func(b []byte) {
			for len(b) > 1 && b[0] == 'P' {
				var err error
				if b, err = fields(b[1:], gf[:]); err != nil || len(gf[2]) != 1 {
					return
				}
				if len(gf[0]) > 2 && string(gf[0][:2]) == "p/" && validIDBytes(gf[0][2:]) {
					s.rpMu.Lock()
					if s.rpres == nil {
						s.rpres = make(map[string]string)
					}
					if _, ok := s.rpres[string(gf[0][2:])]; !ok && len(s.rpres) >= maxRemotePresence {
						for u := range s.rpres { // full: forget one (the map's order is random)
							delete(s.rpres, u)
							break
						}
					}
					s.rpres[string(gf[0][2:])] = string(gf[1])
					s.rpMu.Unlock()
				}
				s.publishGeneric(gls, gf[0], gf[1], gf[2][0]&3, gf[2][0]&4 != 0)
			}
		},
		Moved: s.moveAway,
		Group: func(add bool, group, user string) {
			if _, err := s.groups.set(add, group, user, false); err != nil {
				s.cfg.Logger.Warn("cluster: apply group change", "group", group, "user", user, "err", err)
			}
		},
	})
}

// maxRemotePresence bounds the presence payloads kept from other nodes
// (remotePresence), in users: one per user of the cluster would be 45
// bytes on every node for every user (BENCHMARKS.md, "Cluster"). A user
// forgotten here gets no presence at SUBSCRIBE (unknown, not the local
// registry's record of a user who was once here) until the next change is
// heard.
const maxRemotePresence = 4096

// remotePresence appends to dst the presence of user last heard from the
// node the directory names for user, if that is another node (elsewhere;
// ok false if none was heard, or it was forgotten); elsewhere false: the
// local registry has the answer.
func (s *Server) remotePresence(user, dst []byte) (p []byte, ok, elsewhere bool) {
	if s.cfg.Cluster == nil {
		return dst, false, false
	}
	if node, ok := s.cfg.Cluster.Home(user); !ok || node == s.cfg.Cluster.Node() {
		return dst, false, false
	}
	s.rpMu.Lock()
	v, ok := s.rpres[string(user)]
	s.rpMu.Unlock()
	return append(dst, v...), ok, true
}
