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

import (
	"encoding/binary"
	"errors"
	"fmt"
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
}

// clusterLoop is a loopState's cluster part.
type clusterLoop struct {
	// loop: this loopState is an event loop's (batches are flushed by
	// OnTick); else records are sent at once. remote: it routes what
	// came from another node (no broadcast back).
	loop, remote bool
	// batches are the records per destination node of this iteration;
	// gen the generic publishes to broadcast.
	batches map[string][]byte
	gen     []byte
	// tick names this iteration's batches; used says the PUBLISH being
	// handled put something into them (its PUBACK waits for tick).
	tick uint64
	used bool
	// here: store moved entries here whatever the directory says (an
	// inbox put back after a failed move).
	here bool
	// pending counts each sent tick's batches not yet stored; failed are
	// the ticks of which one was refused (their PUBACKs are not sent).
	pending map[uint64]int
	failed  map[uint64]struct{}
}

func newClusterLoop(loop bool) clusterLoop {
	return clusterLoop{loop: loop, batches: make(map[string][]byte), tick: 1,
		pending: make(map[uint64]int), failed: make(map[uint64]struct{})}
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
	b := ls.cl.batches[node]
	b = append(b, 'D', kind)
	for _, f := range [][]byte{to, from, group, mid, payload, props} {
		b = appendField(b, f)
	}
	ls.cl.used = true
	if !ls.cl.loop {
		// Off the loops (expiry notices, delayed wills): sent at once.
		delete(ls.cl.batches, node)
		if err := s.cfg.Cluster.SendSync(node, b, ""); err != nil {
			s.cfg.Logger.Warn("cluster: send", "node", node, "err", err)
			return false // stored here instead: it moves when the user is claimed again
		}
		return true
	}
	ls.cl.batches[node] = b
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

// flushCluster sends the iteration's batches (OnTick, before the held
// acknowledgements are looked at).
func (s *Server) flushCluster(l *netpoll.Loop, ls *loopState) {
	c := &ls.cl
	if len(c.gen) > 0 {
		s.clstats.broadcasts.Add(1)
		s.cfg.Cluster.Broadcast(c.gen) // copied into the connection's buffer
		c.gen = c.gen[:0]
	}
	if len(c.batches) == 0 {
		c.used = false
		return
	}
	tick, loop := c.tick, l.ID()
	c.tick++
	c.used = false
	c.pending[tick] = len(c.batches)
	s.clstats.batches.Add(uint64(len(c.batches)))
	for node, b := range c.batches {
		s.cfg.Cluster.Send(node, b, func(err error) {
			kind := msgClusterAck
			if err != nil {
				kind = msgClusterFail
				s.clstats.failed.Add(1)
				if s.logs.allow() {
					s.cfg.Logger.Warn("cluster: batch refused; its PUBACKs are not sent", "node", node, "err", err)
				}
			}
			s.eng.PostLoop(loop, netpoll.Message{Kind: kind, Arg: tick})
		})
	}
	clear(c.batches) // the transport owns the buffers now
}

// clusterDone records the outcome of one batch of a tick (on the loop).
func (c *clusterLoop) done(tick uint64, ok bool) {
	if !ok {
		c.failed[tick] = struct{}{}
	}
	if c.pending[tick]--; c.pending[tick] <= 0 {
		delete(c.pending, tick)
	}
}

// tickState says whether the held acknowledgement of tick may go (ready),
// and if so whether its batch was stored (ok).
func (c *clusterLoop) tickState(tick uint64) (ready, ok bool) {
	if tick == 0 {
		return true, true
	}
	if c.pending[tick] > 0 {
		return false, false
	}
	_, failed := c.failed[tick]
	return true, !failed
}

// deliverBatches stores batches sent to this node (the cluster's consumer
// goroutine) and returns once they are durable here or forwarded.
func (s *Server) deliverBatches(ls *loopState, batches [][]byte) error {
	var f [7][]byte
	s.clstats.received.Add(uint64(len(batches)))
	for _, b := range batches {
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
					// Over the store cap: the batch waits (unacked in
					// JetStream it is not lost) until there is room.
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
	for node, b := range ls.cl.batches { // users who moved on meanwhile
		if err := s.cfg.Cluster.SendSync(node, b, ""); err != nil {
			return err // redelivered: what was stored here may be stored twice
		}
	}
	clear(ls.cl.batches)
	return s.syncStore()
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
			b := append(ls.cl.batches[node], 'X')
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
	q := &cl.x().q
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
		// (ownedLocked, ack check handle and epoch).
		cl.handle = 0
		cl.owner.Store(0)
		cl.epoch++
		cl.kick = false
		s.cancelScans(cl)
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
		if derr := s.deliverBatches(ls, [][]byte{batch}); derr != nil {
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
		for _, seq := range seqs {
			if seq != 0 {
				s.wal.Append(recDel, []byte(user), u64(&b, seq))
			}
		}
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
		Deliver: func(batches [][]byte) error { return s.deliverBatches(dls, batches) },
		Generic: func(b []byte) {
			for len(b) > 1 && b[0] == 'P' {
				var err error
				if b, err = fields(b[1:], gf[:]); err != nil || len(gf[2]) != 1 {
					return
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
