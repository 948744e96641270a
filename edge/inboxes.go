package edge

import (
	"container/heap"
	"time"
)

// Operator views of the inboxes, purge, and the expiry of inboxes made for
// users who never connect (README, "Client identifiers and limits").

var (
	noticeExpired = []byte("expired")
	noticePurged  = []byte("purged")
)

// Inbox and session expiry sweep: sweepBatch records every sweepInterval,
// off the event loops, so a pass over 8M records takes about 30 minutes
// and no step holds a lock for more than one record (or one shard, to
// rotate the last-seen generations, which is O(1)). An offline v5 session
// whose Session Expiry Interval passed is over for its clients at once
// (connect and publishGeneric check the deadline); the sweep frees what
// it held.
const (
	sweepInterval = time.Second
	sweepBatch    = 4096
)

// InboxInfo describes one inbox in Inboxes.
type InboxInfo struct {
	User     string `json:"user"`
	Messages int    `json:"messages"`
	Bytes    int    `json:"bytes"` // held: buffer capacity plus overheads
	Online   bool   `json:"online"`
	// NeverConnected: made by messages to a user who has not connected
	// since (it expires after Config.InboxExpiry).
	NeverConnected bool `json:"never_connected"`
}

// Inboxes returns up to limit non-empty inboxes, largest (bytes held) first,
// with the number of non-empty inboxes and the bytes they hold in all. It
// visits every client record, locking each briefly: call it from an admin
// goroutine, never from an event loop. Safe for concurrent use.
func (s *Server) Inboxes(limit int) (top []InboxInfo, total int, bytes int64) {
	h := &inboxHeap{}
	s.reg.dirMu.Lock()
	next := s.reg.next
	s.reg.dirMu.Unlock()
	for idx := uint32(1); idx < next; idx++ {
		cl := s.reg.at(idx)
		if cl == nil {
			continue
		}
		cl.mu.Lock()
		q := cl.box()
		if cl.dead || q.len() == 0 {
			cl.mu.Unlock()
			continue
		}
		n, held := q.len(), q.held()
		total++
		bytes += int64(held)
		if h.Len() < limit || held > (*h)[0].Bytes {
			info := InboxInfo{User: cl.name(), Messages: n, Bytes: held, Online: cl.handle != 0,
				NeverConnected: cl.handle == 0 && cl.lastSeen == 0}
			cl.mu.Unlock()
			heap.Push(h, info)
			if h.Len() > limit {
				heap.Pop(h)
			}
			continue
		}
		cl.mu.Unlock()
	}
	top = make([]InboxInfo, h.Len())
	for i := len(top) - 1; i >= 0; i-- {
		top[i] = heap.Pop(h).(InboxInfo)
	}
	return top, total, bytes
}

// inboxHeap is a min-heap by bytes held: the smallest of the kept top is
// at the root.
type inboxHeap []InboxInfo

func (h inboxHeap) Len() int           { return len(h) }
func (h inboxHeap) Less(i, j int) bool { return h[i].Bytes < h[j].Bytes }
func (h inboxHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *inboxHeap) Push(x any)        { *h = append(*h, x.(InboxInfo)) }
func (h *inboxHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// PurgeInbox empties user's inbox and tells the sender of each direct
// message removed with a "purged" notice u/<from>/e/<user>/<mid>. The
// in-flight entries of a connected user are kept: they have been sent,
// and their PUBACK still removes them and sends the delivered receipt. It
// returns the entries and bytes removed; ok is false if user has no
// non-empty inbox. Safe for concurrent use; not for an event loop.
func (s *Server) PurgeInbox(user string) (n, bytes int, ok bool) {
	cl := s.reg.lock([]byte(user), false)
	if cl == nil {
		return 0, 0, false
	}
	if cl.box().len() == 0 {
		cl.mu.Unlock()
		return 0, 0, false
	}
	n, bytes = s.emptyLocked(cl, noticePurged)
	s.stats.purged.Add(uint64(n))
	if err := s.syncStore(); err != nil {
		s.cfg.Logger.Error("store: purge not yet durable; the store retries", "user", user, "err", err)
	}
	return n, bytes, true
}

// emptyLocked removes every entry of cl's inbox but the in-flight prefix
// (none unless cl is connected); cl is locked and is unlocked on return.
// The senders of the direct messages removed get a notice with payload
// why; the record is released if it holds nothing else.
func (s *Server) emptyLocked(cl *client, why []byte) (n, bytes int) {
	var notes [][]byte
	q := cl.box()
	bytes = q.held()
	n = q.dropFrom(q.nsent, func(e *entry) bool {
		s.logEntry(recDel, cl, e)
		if e.flags&fReceipt != 0 {
			notes = append(notes, append([]byte(nil), e.topic()...))
		}
		return true
	})
	bytes -= q.held()
	cl.trimExt()
	gen := cl.gen
	cl.mu.Unlock()
	s.reg.release(cl, gen)
	ls := &loopState{}
	for _, t := range notes {
		if m, ok := delivered(t); ok && !s.notice(ls, m.from, m.to, m.mid, why, false) {
			s.stats.notices.Add(1)
		}
	}
	return n, bytes
}

// sweep examines up to budget client records from the sweep cursor: it
// ends the offline v5 sessions whose Session Expiry Interval has passed
// (sweepSession), and empties the inboxes of users who never connected
// that are older than InboxExpiry (their senders get an "expired" notice);
// it also rotates the shards' last-seen generations once per InboxExpiry.
// It returns the number of inboxes expired. Runs on the sweeper goroutine
// (and in tests); sweepMu serializes it.
func (s *Server) sweep(budget int) (expired int) {
	s.sweepMu.Lock()
	defer s.sweepMu.Unlock()
	now := s.cfg.Now().Unix()
	inboxes := s.cfg.InboxExpiry > 0
	period := int64(s.cfg.InboxExpiry / time.Second)
	if inboxes {
		for i := range s.reg.shards {
			s.reg.shards[i].rotateSeen(now, period)
		}
	}
	ended := 0
	defer func() {
		if expired > 0 || ended > 0 {
			s.syncStore() // a failure is retried by the store and logged by the loops
		}
	}()
	s.reg.dirMu.Lock()
	next := s.reg.next
	s.reg.dirMu.Unlock()
	for range budget {
		if s.sweepAt == 0 || s.sweepAt >= next {
			s.sweepAt = 1
			if next <= 1 {
				return expired
			}
		}
		cl := s.reg.at(s.sweepAt)
		s.sweepAt++
		if cl == nil {
			continue
		}
		cl.mu.Lock()
		if !cl.dead && s.sweepSession(cl, now) {
			ended++
			gen := cl.gen
			cl.mu.Unlock()
			s.reg.release(cl, gen) // nothing may be left in it
			continue
		}
		if !inboxes || cl.dead || cl.handle != 0 || cl.lastSeen != 0 || cl.made == 0 || cl.box().len() == 0 ||
			now-int64(cl.made) < period {
			cl.mu.Unlock()
			continue
		}
		n, _ := s.emptyLocked(cl, noticeExpired)
		s.stats.expired.Add(uint64(n))
		expired++
	}
	return expired
}

// sweeper runs sweep every sweepInterval until stop is closed.
func (s *Server) sweeper(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			s.sweep(sweepBatch)
		}
	}
}

// stopSweeper stops the sweeper goroutine, if running, and waits for it.
func (s *Server) stopSweeper() {
	s.mu.Lock()
	stop, done := s.stopSweep, s.sweepDone
	s.stopSweep, s.sweepDone = nil, nil
	s.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}
