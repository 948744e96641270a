package edge

// Durable state: every change to what must outlive the process is logged
// to the store (internal/wal) in the same critical section that makes it,
// and replayed by Start. What is logged:
//
//	put      client, flags, packet,  an inbox entry (profile messages,
//	         made[, pid]             receipts, notices, group copies, and
//	                                 QoS 1/2 messages for persistent
//	                                 sessions); its seq names it; made is
//	                                 the inbox's date (expiry)
//	del      client, seq             an entry acknowledged, purged or expired
//	sent     client, seq, pid        a persistent session's entry got its
//	                                 packet id (kept on redelivery, 4.4)
//	rel      client, seq, pid        outbound QoS 2: PUBREC received
//	session  client, persistent      clean session 0 began, or ended
//	sub      client, filter, qos     a persistent session's subscription
//	unsub    client, filter
//	retain   topic, qos, payload     set (an empty payload deletes)
//	group+   group, user / group-  group, user
//	seen     user, unix seconds      last seen (presence)
//	q2+      client, packet id / q2-  inbound QoS 2 awaiting PUBREL
//	link     link, lo, hi            cluster batches lo..hi of a link are
//	                                 stored (edge/cluster.go), logged after
//	                                 their records
//
// Each record restates a state change that is idempotent given its seq, so
// that replaying a snapshot taken while the server ran (wal's fuzzy
// snapshot) and then the log from the snapshot's segment yields the state
// the log describes: a put whose seq the inbox already holds is skipped, a
// del of a seq it does not hold is a no-op, sets and flags are sets.
//
// Acknowledgements: a PUBACK or PUBREC for a PUBLISH is queued on the loop
// (loopState.acks) with the log's last seq at that moment, and OnTick
// sends it once the log says that seq is durable: after the loop's write
// (SyncInterval, SyncNever) or fsync (SyncAlways) in the same iteration,
// before the loop flushes its output, so a PUBACK never reaches a client
// before its message reached the disk. While writes fail (a full disk) the
// acknowledgements wait, new PUBLISHes that need the store are refused
// (store_unavailable), deliveries go on, and the log retries; when it
// writes again the held acknowledgements go out.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/internal/wal"
	"github.com/edgedhq/edged/netpoll"
)

// Record types of the store.
const (
	recPut byte = iota + 1
	recDel
	recRel
	recSession
	recSub
	recUnsub
	recRetain
	recGroupAdd
	recGroupDel
	recSeen
	recQ2Add
	recQ2Del
	recSent
	recLink
)

// msgStoreWake (a loop message) wakes a loop whose held acknowledgements
// became durable after the store recovered from a write failure.
const msgStoreWake uint32 = 100

// entry flags that are state (the rest are per connection).
const persistFlags = fDurable | fReceipt | fReleased | fProps

// heldAck is a PUBACK or PUBREC waiting until the store holds seq.
type heldAck struct {
	h    netpoll.Handle
	seq  uint64
	tick uint64 // the cluster batches it waits for too (edge/cluster.go); 0: none
	pid  uint16
	typ  mqtt.Type
}

func u64(b *[8]byte, v uint64) []byte { binary.LittleEndian.PutUint64(b[:], v); return b[:] }

// logPut logs e, just pushed into cl's inbox (cl locked), if it must be
// durable: a profile entry, or a QoS 1/2 message for a persistent session.
func (s *Server) logPut(cl *client, e *entry) {
	if s.wal == nil || e.pidOff == 0 || e.flags&fDurable == 0 && !cl.persistent {
		return
	}
	f := [1]byte{e.flags & persistFlags}
	var made [4]byte
	binary.LittleEndian.PutUint32(made[:], cl.made)
	e.seq = s.wal.Append(recPut, cl.idBytes(), f[:], *e.buf, made[:])
}

// logEntry logs a del, sent or rel of a logged entry; cl is locked.
func (s *Server) logEntry(typ byte, cl *client, e *entry) {
	if s.wal == nil || e.seq == 0 {
		return
	}
	var b [8]byte
	if typ == recDel {
		s.wal.Append(typ, cl.idBytes(), u64(&b, e.seq))
		return
	}
	pid := [2]byte{byte(e.pid >> 8), byte(e.pid)}
	s.ctlSeq.Store(s.wal.Append(typ, cl.idBytes(), u64(&b, e.seq), pid[:]))
}

// logClient logs a record about cl (locked) with the given fields. Session,
// subscription and QoS 2 records are control records: their replies
// (CONNACK, SUBACK, PUBCOMP) are not held, so under SyncAlways the loop
// fsyncs when it logged one (ctlSeq), before its output goes out.
func (s *Server) logClient(typ byte, cl *client, fields ...[]byte) {
	if s.wal == nil {
		return
	}
	var seq uint64
	switch len(fields) {
	case 0:
		seq = s.wal.Append(typ, cl.idBytes())
	case 1:
		seq = s.wal.Append(typ, cl.idBytes(), fields[0])
	default:
		seq = s.wal.Append(typ, cl.idBytes(), fields[0], fields[1])
	}
	if typ != recSeen {
		s.ctlSeq.Store(seq)
	}
}

// logRevived logs the last-seen time a new record of cl (locked) took
// from a shard's table (registry.revived): the table is not logged, and a
// compaction's snapshot reads the records and then the tables, so a user
// moving from one to the other meanwhile is in neither
// (TestSnapshotKeepsRevivedLastSeen).
func (s *Server) logRevived(cl *client) {
	if s.wal != nil && cl.lastSeen != 0 && cl.profileID() {
		var b [8]byte
		s.wal.Append(recSeen, cl.idBytes(), u64(&b, uint64(cl.lastSeen)))
	}
}

func (s *Server) logSession(cl *client) {
	p := [1]byte{0}
	if cl.persistent {
		p[0] = 1
	}
	if e := sessionExpiryField(cl); e != nil {
		s.logClient(recSession, cl, p[:], e)
		return
	}
	s.logClient(recSession, cl, p[:])
}

// logSessionEnd logs the deadline of cl's session, which just went
// offline (cl locked). Unlike logSession it is not a control record: no
// reply waits for it, so the loop does not wait for its fsync; lost by a
// power cut, the interval logged at CONNECT runs again from the restart.
func (s *Server) logSessionEnd(cl *client) {
	if s.wal != nil {
		s.wal.Append(recSession, cl.idBytes(), []byte{1}, sessionExpiryField(cl))
	}
}

// sessionExpiryField is a persistent session's expiry in its session
// record, or nil if it never ends: a kind byte (expiryInterval while
// connected, expiryDeadline while offline) and the value, little endian.
// cl is locked.
func sessionExpiryField(cl *client) []byte {
	if !cl.persistent || cl.expiry == 0 {
		return nil
	}
	kind := byte(expiryDeadline)
	if cl.handle != 0 {
		kind = expiryInterval
	}
	return binary.LittleEndian.AppendUint32([]byte{kind}, cl.expiry)
}

// The kinds of a session record's expiry field.
const (
	expiryInterval = 0 // seconds, counted from the disconnect: at replay, from the restart
	expiryDeadline = 1 // unix seconds
)

func (s *Server) logQ2(cl *client, pid uint16, add bool) {
	if s.wal == nil || !cl.persistent {
		return
	}
	b := [2]byte{byte(pid >> 8), byte(pid)}
	typ := recQ2Del
	if add {
		typ = recQ2Add
	}
	s.logClient(typ, cl, b[:])
}

// logRetain is the retained store's hook (topicTree.onSet, under rmu).
func (s *Server) logRetain(topic, payload, props []byte, qos byte) {
	if sysTopic(topic) {
		return // the server's own statistics: published again by the new process
	}
	q := [1]byte{qos}
	if len(props) > 0 {
		s.wal.Append(recRetain, topic, q[:], payload, props)
		return
	}
	s.wal.Append(recRetain, topic, q[:], payload)
}

func sysTopic(t []byte) bool { return len(t) >= 5 && string(t[:5]) == "$SYS/" }

// logGroup is the group table's hook (under its lock).
func (s *Server) logGroup(add bool, group, user string) uint64 {
	typ := recGroupDel
	if add {
		typ = recGroupAdd
	}
	return s.wal.Append(typ, []byte(group), []byte(user))
}

// logLink logs that batches lo..hi of link are stored.
func (s *Server) logLink(link string, lo, hi uint64) {
	if s.wal != nil {
		var a, b [8]byte
		s.wal.Append(recLink, []byte(link), u64(&a, lo), u64(&b, hi))
	}
}

// syncStore makes everything logged so far durable (for callers off the
// event loops: the admin API, before it answers).
func (s *Server) syncStore() error {
	if s.wal == nil {
		return nil
	}
	return s.wal.Commit()
}

// ackAfter sends a PUBACK, PUBREC or PUBCOMP for pid on c, after the store holds
// what the PUBLISH logged (at once without a store).
func (s *Server) ackAfter(c *netpoll.Conn, ls *loopState, typ mqtt.Type, pid uint16) {
	var tick uint64
	if ls.cl.used {
		tick = ls.cl.tick // batched for another node: wait for its store too
		ls.cl.used = false
	}
	if s.wal == nil && tick == 0 {
		writeAck(c, ls, typ, pid)
		return
	}
	var seq uint64
	if s.wal != nil {
		seq = s.wal.Last()
	}
	ls.acks = append(ls.acks, heldAck{h: c.Handle(), seq: seq, tick: tick, pid: pid, typ: typ})
	if typ == mqtt.TypePuback {
		if c5 := ls.conn5If(c); c5 != nil {
			c5.heldAcks++ // the client's unacknowledged QoS 1 (Receive Maximum)
		}
	}
}

func writeAck(c *netpoll.Conn, ls *loopState, typ mqtt.Type, pid uint16) {
	c.Write(appendAck(ls.out[:0], typ, pid))
}

func appendAck(b []byte, typ mqtt.Type, pid uint16) []byte {
	switch typ {
	case mqtt.TypePubrec:
		return mqtt.AppendPubrec(b, pid)
	case mqtt.TypePubcomp:
		return mqtt.AppendPubcomp(b, pid)
	}
	return mqtt.AppendPuback(b, pid)
}

func ackPacket(typ mqtt.Type, pid uint16) []byte { return appendAck(nil, typ, pid) }

// commitTick runs at the end of each loop iteration (OnTick), before the
// loop flushes its output: it writes what was logged and sends the held
// acknowledgements that are durable.
func (s *Server) commitTick(l *netpoll.Loop, ls *loopState) {
	// A failure is logged once by the store (and again when it
	// recovers); meanwhile the acknowledgements wait.
	durable := uint64(math.MaxUint64)
	if s.wal != nil {
		durable = s.writeTick(ls)
	}
	if len(ls.acks) == 0 {
		ls.cl.failed = ls.cl.failed[:0]
		return
	}
	low := uint64(math.MaxUint64) // the first cluster tick not stored (edge/cluster.go)
	if s.cfg.Cluster != nil {
		low = ls.cl.low()
	}
	// In order: a PUBACK waits for those before it on the loop (MQTT
	// 4.6: in the order of the PUBLISH packets).
	k := 0
	for ; k < len(ls.acks); k++ {
		a := ls.acks[k]
		if a.seq > durable || a.tick != 0 && a.tick >= low {
			break
		}
		c := l.Conn(a.h)
		switch {
		case c == nil: // closed: the client sends it again and gets it then
		case a.tick != 0 && ls.cl.refused(a.tick):
			// The batch for another node was refused (no quorum, a
			// partition): not acknowledged; the client resends.
			c.Close(closeErr(ReasonClusterUnavailable))
		default:
			writeAck(c, ls, a.typ, a.pid)
			if a.typ == mqtt.TypePuback {
				if c5 := ls.conn5If(c); c5 != nil {
					c5.heldAcks--
				}
			}
		}
	}
	n := copy(ls.acks, ls.acks[k:])
	clear(ls.acks[n:])
	ls.acks = ls.acks[:n]
}

// writeTick writes (and under SyncAlways asks to fsync) what the loops
// logged; it returns the durable seq.
func (s *Server) writeTick(ls *loopState) uint64 {
	switch {
	case s.ctlSeq.Load() > s.wal.Durable():
		// A session, subscription or QoS 2 change: its reply (CONNACK,
		// SUBACK) is not held, so the loop waits for the fsync (rare).
		s.wal.Commit()
	case s.wal.Last() > s.wal.Durable():
		// Written now, in every mode, so that nothing this iteration's
		// output tells a client is lost if the process is killed. Under
		// SyncAlways the fsync is the syncer's: the loop goes on, the
		// held acknowledgements go out when it calls back (wakeLoops).
		if s.wal.Write() == nil && len(ls.acks) > 0 {
			s.wal.RequestSync()
		}
	}
	return s.wal.Durable()
}

func (s *Server) diskStats() *DiskStats {
	d := new(DiskStats)
	if !s.diskStatsInto(d) {
		return nil
	}
	return d
}

// diskStatsInto fills d and reports whether there is a store.
func (s *Server) diskStatsInto(d *DiskStats) bool {
	if s.wal == nil {
		return false
	}
	st := &s.wal.Stats
	*d = DiskStats{
		Records: st.Records.Load(), BytesWritten: st.Bytes.Load(), Writes: st.Writes.Load(),
		Fsyncs: st.Syncs.Load(), FsyncSeconds: float64(st.SyncNanos.Load()) / 1e9,
		WriteErrors: st.WriteErrors.Load(), Compactions: st.Compactions.Load(),
		DiskBytes: s.wal.DiskBytes(), Failing: s.wal.Failed(),
	}
	return true
}

// storeDown reports whether a PUBLISH with qos and retain would need the
// store while it cannot write.
func (s *Server) storeDown(qos byte, retain bool) bool {
	return s.wal != nil && (qos > 0 || retain) && s.wal.Failed()
}

// openStore opens the data directory and replays it into the server
// (before the loops start).
func (s *Server) openStore() (err error) {
	// A drain hands over the listeners and the lock only: the state comes
	// from the log, as at a restart.
	carried := s.cfg.Handoff != nil && !s.cfg.Handoff.Drain
	if s.cfg.DataDir == "" {
		if carried {
			s.handoffKicks, err = s.importState(s.cfg.Handoff)
		}
		return err
	}
	var lock *os.File
	if s.cfg.Handoff != nil {
		lock = s.cfg.Handoff.Lock
	}
	l, err := wal.Open(wal.Options{LockFile: lock,
		Dir: s.cfg.DataDir, Sync: s.cfg.Fsync, Interval: s.cfg.FsyncInterval, Repair: s.cfg.Repair,
		SegmentBytes: s.cfg.storeSegment, CompactBytes: s.cfg.storeCompact,
		OnDurable: s.wakeLoops,
		Logf: func(format string, args ...any) {
			s.cfg.Logger.Warn(fmt.Sprintf(format, args...))
		},
	})
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	var rs replayState
	apply := func(r wal.Record) error { return s.apply(&rs, r) }
	if carried {
		// The state comes whole with the handoff: the log is read only
		// to check it and find where to append.
		apply = func(wal.Record) error { return nil }
	}
	st, err := l.Replay(apply)
	if err != nil {
		l.Close()
		return fmt.Errorf("recover store: %w", err)
	}
	inboxes := 0
	if !carried {
		inboxes = s.finishReplay()
	} else if s.handoffKicks, err = s.importState(s.cfg.Handoff); err != nil {
		l.Close()
		return err
	}
	s.wal = l
	s.tree.onSet = s.logRetain
	s.reg.revived = s.logRevived
	s.groups.onChange, s.groups.sync = s.logGroup, s.syncStore
	s.cfg.Logger.Info("store recovered", "dir", s.cfg.DataDir, "fsync", s.fsyncString(),
		"records", st.Records, "bytes", st.Bytes, "messages", rs.messages, "inboxes", inboxes,
		"sessions", rs.sessions, "retained", s.tree.retainedCount(), "took_ms", st.Took.Milliseconds(),
		"torn_tail_bytes", st.Truncated, "repaired_bytes", st.Repaired)
	if st.NeedsCompact() {
		if err := s.compact(); err != nil {
			return fmt.Errorf("compact after repair: %w", err)
		}
	}
	return nil
}

func (s *Server) fsyncString() string {
	if s.cfg.Fsync == wal.SyncInterval {
		return "interval=" + s.cfg.FsyncInterval.String()
	}
	return s.cfg.Fsync.String()
}

// wakeLoops posts a store wake to every loop (the log writes again).
func (s *Server) wakeLoops() {
	for i := range s.loops {
		s.eng.PostLoop(i, netpoll.Message{Kind: msgStoreWake})
	}
}

// replayState counts what a replay restored.
type replayState struct {
	messages, sessions int
	skipped            int // records naming nothing (a del of a seq not held)
}

var errBadRecord = errors.New("malformed store record")

// apply replays one record (no loop runs yet; s.wal is nil, so nothing is
// logged again).
func (s *Server) apply(rs *replayState, r wal.Record) error {
	f := r.Fields()
	a, ok := f.Next()
	if !ok {
		return fmt.Errorf("record %d type %d: %w", r.Seq, r.Type, errBadRecord)
	}
	b, _ := f.Next()
	c, _ := f.Next()
	d, _ := f.Next()
	e, _ := f.Next()
	switch r.Type {
	case recRetain:
		// No caps while replaying: the log holds what was accepted, and
		// a fuzzy snapshot's replay passes through moments that hold
		// more than the server ever did.
		s.tree.setRetainedProps(a, c, d, firstByte(b), math.MaxInt, math.MaxInt64, math.MaxInt64)
		return nil
	case recGroupAdd, recGroupDel:
		if r.Type == recGroupAdd {
			s.groups.Add(string(a), string(b))
		} else {
			s.groups.Remove(string(a), string(b))
		}
		return nil
	case recLink:
		if len(b) != 8 || len(c) != 8 {
			return fmt.Errorf("record %d: %w", r.Seq, errBadRecord)
		}
		s.links.mark(string(a), binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(c), s.cfg.Now().Unix())
		return nil
	}
	create := r.Type == recPut || r.Type == recSession || r.Type == recSub || r.Type == recSeen || r.Type == recQ2Add
	// Replay passes through moments over the store cap (see recRetain):
	// a long client id is not refused for it.
	defer func(c int64) { s.reg.capBytes = c }(s.reg.capBytes)
	s.reg.capBytes = math.MaxInt64
	cl := s.reg.lock(a, create)
	if cl == nil {
		if create {
			return fmt.Errorf("record %d: the user table is full", r.Seq)
		}
		rs.skipped++
		return nil
	}
	defer cl.mu.Unlock()
	switch r.Type {
	case recPut:
		if len(c) < 4 {
			return fmt.Errorf("record %d: short packet: %w", r.Seq, errBadRecord)
		}
		var made uint32
		if len(d) == 4 {
			made = binary.LittleEndian.Uint32(d)
		}
		var pid uint16
		if len(e) == 2 {
			pid = uint16(e[0])<<8 | uint16(e[1])
		}
		if s.insertReplayed(cl, r.Seq, firstByte(b), c, made, pid) {
			rs.messages++
		}
	case recDel, recRel, recSent:
		if len(b) != 8 || r.Type != recDel && len(c) != 2 {
			return fmt.Errorf("record %d: %w", r.Seq, errBadRecord)
		}
		q := cl.box()
		i := q.findSeq(binary.LittleEndian.Uint64(b))
		switch {
		case i < 0:
			rs.skipped++
		case r.Type == recDel:
			q.remove(i)
			rs.messages--
		default:
			if r.Type == recRel {
				q.at(i).flags |= fReleased
			}
			q.at(i).pid = uint16(c[0])<<8 | uint16(c[1])
		}
	case recSession:
		cl.expiry = 0
		if firstByte(b) == 1 {
			if !cl.persistent {
				s.held.Add(sessionOverhead)
				cl.persistent = true
				rs.sessions++
			}
			if len(c) == 5 { // the v5 Session Expiry (sessionExpiryField)
				cl.expiry = binary.LittleEndian.Uint32(c[1:])
				if c[0] == expiryInterval {
					// Connected when logged: offline since the stop at the
					// latest, so the interval runs from this restart.
					cl.expiry = expiryDeadline5(s.cfg.Now().Unix(), cl.expiry)
				}
			}
		} else {
			// The session ended (a clean CONNECT): drop what it held
			// even if the client is not persistent now. A fuzzy
			// snapshot may have read it after the end, and the segment
			// then re-applies the subscriptions and messages logged
			// before the end onto that client
			// (TestReplaySessionEndOverLaterSnapshot).
			if cl.persistent {
				s.held.Add(-sessionOverhead)
				cl.persistent = false
				rs.sessions--
			}
			s.dropSubs(cl)
			rs.messages -= cl.box().len()
			cl.box().dropGeneric()
			rs.messages += cl.box().len()
			if x := cl.xp(); x != nil {
				x.clearQoS2()
			}
		}
	case recSub:
		qos, sid := parseSubField(c)
		s.addSubLocked(cl, string(b), qos, sid, true)
	case recUnsub:
		s.removeSubLocked(cl, b)
	case recSeen:
		if len(b) == 8 {
			cl.lastSeen = max(cl.lastSeen, int64(binary.LittleEndian.Uint64(b)))
		}
	case recQ2Add, recQ2Del:
		if len(b) != 2 {
			return fmt.Errorf("record %d: %w", r.Seq, errBadRecord)
		}
		pid := uint16(b[0])<<8 | uint16(b[1])
		x := cl.x().busy()
		i := slices.Index(x.qos2in, pid)
		if r.Type == recQ2Add && i < 0 {
			x.qos2in = append(x.qos2in, pid)
		} else if r.Type == recQ2Del && i >= 0 {
			x.qos2in = slices.Delete(x.qos2in, i, i+1)
		}
	default:
		return fmt.Errorf("record %d: unknown type %d (written by a newer edged?): %w", r.Seq, r.Type, errBadRecord)
	}
	return nil
}

func firstByte(b []byte) byte {
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

// insertReplayed puts a replayed PUBLISH into cl's inbox in seq order,
// unless it holds seq already; cl is locked.
func (s *Server) insertReplayed(cl *client, seq uint64, flags byte, pkt []byte, made uint32, pid uint16) bool {
	q := cl.x().queue()
	if q.acct == nil {
		q.acct, q.cnt = &s.held, &s.entries
	}
	if q.findSeq(seq) >= 0 {
		return false
	}
	e, ok := entryOf(pkt, flags) // DUP is per connection: recovery sets it again
	if !ok {
		return false
	}
	e.seq, e.pid = seq, pid
	q.push(e)
	// Keep seq order: a put replayed after a later one (the fuzzy
	// snapshot restates state the log then repeats) moves into place.
	for i := q.len() - 1; i > 0 && q.at(i-1).seq > q.at(i).seq; i-- {
		*q.at(i - 1), *q.at(i) = *q.at(i), *q.at(i - 1)
	}
	if made > cl.made {
		// The inbox's date survives the restart (expiry). A record keeps
		// its date while it lives; a record released and made again has
		// a later one, and the puts of the earlier record (deleted since)
		// may be replayed too, before or after (a fuzzy snapshot): the
		// latest date is the live record's
		// (TestReplayDatesInboxByLiveRecord).
		cl.made = made
	}
	return true
}

// holdsDurable reports whether q holds a profile entry (fDurable).
func (q *inbox) holdsDurable() bool {
	for i := 0; i < q.len(); i++ {
		if q.at(i).flags&fDurable != 0 {
			return true
		}
	}
	return false
}

// findSeq returns the index of the entry with seq (entries with a seq are
// in seq order), or -1.
func (q *inbox) findSeq(seq uint64) int {
	if q == nil || seq == 0 {
		return -1
	}
	items := q.items[q.head:]
	i, ok := slices.BinarySearchFunc(items, seq, func(e entry, s uint64) int {
		switch {
		case e.seq < s:
			return -1
		case e.seq > s:
			return 1
		}
		return 0
	})
	if !ok {
		return -1
	}
	return i
}

// finishReplay marks what may have been in flight for redelivery with DUP
// and releases the records that hold nothing (a user with only a last-seen
// time moves to the shard's seen table). It returns the inboxes restored.
func (s *Server) finishReplay() (inboxes int) {
	s.reg.dirMu.Lock()
	next := s.reg.next
	s.reg.dirMu.Unlock()
	// Any of the sent entries may have reached the client before the
	// stop; they are the front of the inbox, at most the largest window
	// the in-flight knob allows (it may have been raised at run time).
	const window = 1024
	now := uint32(s.cfg.Now().Unix())
	for idx := uint32(1); idx < next; idx++ {
		cl := s.reg.at(idx)
		if cl == nil {
			continue
		}
		cl.mu.Lock()
		if cl.dead {
			cl.mu.Unlock()
			continue
		}
		q := cl.box()
		if cl.made == 0 && q.holdsDurable() {
			// Logged before inboxes kept their date. Only a profile
			// entry dates an inbox (deliverLocked, storeMoved): a
			// persistent session's generic queue dated here was expired
			// by the sweep as the inbox of a user who never connected
			// (TestReplayKeepsPersistentGenericQueueUndated).
			cl.made = now
		}
		for i := 0; i < min(q.len(), window); i++ {
			q.at(i).flags |= fDup
		}
		if q.len() > 0 {
			inboxes++
		}
		cl.trimExt()
		gen := cl.gen
		cl.mu.Unlock()
		s.reg.release(cl, gen)
	}
	return inboxes
}

// compact writes a snapshot of the whole durable state (wal.Compact).
func (s *Server) compact() error {
	return s.wal.Compact(s.writeSnapshot)
}

// compactor compacts the store when its log outgrows the live state.
func (s *Server) compactor(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if s.wal.ShouldCompact() && !s.wal.Failed() {
				if err := s.compact(); err != nil && s.storeLog.allow() {
					s.cfg.Logger.Error("store: compaction failed; will retry", "err", err)
				}
			}
		}
	}
}

// writeSnapshot restates the durable state as records: groups, retained
// messages, then every client (session, subscriptions, QoS 2 state, last
// seen, logged inbox entries), then the last-seen tables. Each part is
// read under its own lock, the way it is changed and logged.
func (s *Server) writeSnapshot(w *wal.SnapshotWriter) error {
	// The links first: deliverBatches marks a Seq only after the batch's
	// records are applied, so every Seq read here has its records in
	// what is read below; read after the inboxes, a Seq marked meanwhile
	// would be in the snapshot while its records are only in the new
	// segment's buffer, and a kill -9 before the commit would turn the
	// batch's stream copy into a false duplicate
	// (TestSnapshotDuringLinkCommit).
	now := s.cfg.Now().Unix()
	var lo8, hi8 [8]byte
	s.links.mu.Lock()
	for l, st := range s.links.m {
		if now-st.used >= linkIdle {
			// Idle: out of the snapshot and of memory (as after a
			// restart), so that the table does not keep every link of
			// every sender start.
			delete(s.links.m, l)
			continue
		}
		for _, r := range st.runs {
			w.Append(recLink, 0, []byte(l), u64(&lo8, r.lo), u64(&hi8, r.hi))
		}
	}
	s.links.mu.Unlock()
	s.groups.mu.RLock()
	for g, mem := range s.groups.m {
		for u := range mem {
			w.Append(recGroupAdd, 0, []byte(g), []byte(u))
		}
	}
	s.groups.mu.RUnlock()
	if err := s.snapshotRetained(w); err != nil {
		return err
	}
	s.reg.dirMu.Lock()
	next := s.reg.next
	s.reg.dirMu.Unlock()
	var b8 [8]byte
	var made [4]byte
	for idx := uint32(1); idx < next; idx++ {
		cl := s.reg.at(idx)
		if cl == nil {
			continue
		}
		cl.mu.Lock()
		if cl.dead {
			cl.mu.Unlock()
			continue
		}
		id := cl.idBytes()
		if cl.persistent {
			if e := sessionExpiryField(cl); e != nil {
				w.Append(recSession, 0, id, []byte{1}, e)
			} else {
				w.Append(recSession, 0, id, []byte{1})
			}
			for f, sub := range cl.subs {
				w.Append(recSub, 0, id, f, sub.record())
			}
			if x := cl.xp(); x != nil {
				for _, pid := range x.qos2() {
					w.Append(recQ2Add, 0, id, []byte{byte(pid >> 8), byte(pid)})
				}
			}
		}
		if cl.lastSeen != 0 && cl.profileID() {
			w.Append(recSeen, 0, id, u64(&b8, uint64(cl.lastSeen)))
		}
		q := cl.box()
		for i := 0; i < q.len(); i++ {
			e := q.at(i)
			// A logged generic entry of a client that is not persistent
			// belongs to a session whose end is logged already (a v5
			// DISCONNECT with Session Expiry 0: OnClose drops it, with no
			// record); replay of that end drops it, so must the snapshot
			// (TestSnapshotInV5DisconnectWindow).
			if e.seq != 0 && (cl.persistent || e.flags&fDurable != 0) {
				binary.LittleEndian.PutUint32(made[:], cl.made)
				w.Append(recPut, e.seq, id, []byte{e.flags & persistFlags}, *e.buf, made[:], []byte{byte(e.pid >> 8), byte(e.pid)})
			}
		}
		cl.mu.Unlock()
	}
	if testSnapshotHook != nil {
		testSnapshotHook()
	}
	s.snapshotMoving(w)
	for i := range s.reg.shards {
		sh := &s.reg.shards[i]
		sh.mu.Lock()
		for _, m := range []map[string]int64{sh.seenOld, sh.seen} {
			for u, t := range m {
				w.Append(recSeen, 0, []byte(u), u64(&b8, uint64(t)))
			}
		}
		sh.mu.Unlock()
	}
	return w.Err()
}

// movingEntry is an entry moveAway is moving (Server.moving): its put
// record's fields.
type movingEntry struct {
	user  string
	flags byte
	pkt   []byte
	made  uint32
}

// snapshotMoving restates the entries being moved (their deletes, logged
// after, remove them at replay).
func (s *Server) snapshotMoving(w *wal.SnapshotWriter) {
	var made [4]byte
	s.moving.mu.Lock()
	defer s.moving.mu.Unlock()
	for seq, e := range s.moving.m {
		binary.LittleEndian.PutUint32(made[:], e.made)
		w.Append(recPut, seq, []byte(e.user), []byte{e.flags}, e.pkt, made[:])
	}
}

// snapshotRetained writes every retained message. The walk copies the
// records under the retained store's read lock and writes them after it,
// so the lock is never held across file I/O (a waiting retained publish
// would hold up every scan behind it); the copy is at most the retained
// store's size.
func (s *Server) snapshotRetained(w *wal.SnapshotWriter) error {
	t := s.tree
	var buf []byte
	t.rmu.RLock()
	var walk func(n *rnode)
	walk = func(n *rnode) {
		if n.payload != nil && !sysTopic([]byte(n.topic)) {
			buf = wal.EncodeRecord(buf, recRetain, 0, []byte(n.topic), []byte{n.qos}, n.payload, n.props)
		}
		if n.kids != nil {
			for _, c := range n.kids.list {
				if c != nil {
					walk(c)
				}
			}
		}
	}
	walk(&t.rroot)
	t.rmu.RUnlock()
	return w.AppendEncoded(buf)
}
