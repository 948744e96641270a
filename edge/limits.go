package edge

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Limits: the per-connection publish and new-inbox token buckets, the
// per-source buckets, the store cap, the log limiter.

// allowPublish refills both of ss's token buckets and takes a publish token.
func (s *Server) allowPublish(ss *session, now int64) bool {
	dt := float64(now-ss.last) / 1e9
	ss.last = now
	if s.cfg.NewInboxRate > 0 {
		ss.newInbox = float32(min(float64(ss.newInbox)+dt*s.cfg.NewInboxRate, s.cfg.NewInboxBurst))
	}
	if s.cfg.PublishRate < 0 {
		return true
	}
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

// storeRoom reports whether an entry of n encoded bytes fits under the
// store cap for cl (locked; nil: offline with no record): under the soft
// level anything fits; in the last eighth only a connected recipient
// whose inbox is shorter than the in-flight window (it drains at once)
// gets more.
func (s *Server) storeRoom(cl *client, n int) bool { return s.storeRoomN(cl, 1, heldSize(n)) }

// storeRoomN is storeRoom for count entries holding held bytes in all.
func (s *Server) storeRoomN(cl *client, count, held int) bool {
	h := s.held.Load() + int64(held+inboxOverhead)
	if h <= s.storeSoft {
		return true
	}
	if h > s.cfg.StoreMaxBytes || cl == nil {
		return false
	}
	return cl.handle != 0 && cl.box().len()+count <= int(s.inflight.Load())
}

// takeNewInbox takes a token from ss's new-inbox bucket and from its
// source address's.
func (s *Server) takeNewInbox(ss *session) bool {
	if s.cfg.NewInboxRate < 0 {
		return true
	}
	// The source bucket runs on Config.Now (this is the rare path: an
	// inbox about to be made), so that tests can drive it.
	if ss.newInbox < 1 || !s.src.take(ss.src, s.cfg.Now().UnixNano(), s.cfg.NewInboxRate, s.cfg.NewInboxBurst) {
		return false
	}
	ss.newInbox--
	return true
}

// srcSlots is the size of the per-source new-inbox table: 65,536 buckets
// of 16 bytes (1 MiB per server), indexed by a maphash of the address
// under the per-process idSeed. Sharing remains: addresses that hash to
// the same slot share one bucket, so with A active source addresses a
// slot is shared by about A/65,536 of them, and an abuser's address
// drains the allowance of the few honest addresses in its slot. The seed
// keeps an abuser from choosing which slot (and so whom) it hits, but one
// holding many addresses (IPv6 /64s are cheap) drains many slots at once:
// this limits sprayers, it is not a per-address guarantee.
const srcSlots = 1 << 16

// srcBuckets are token buckets for new inboxes per source address (IPv4
// address, IPv6 /64: what one subscriber usually holds), so that a client
// that reconnects for a fresh per-connection burst gets none. Taking a
// token happens only when an inbox is about to be made for a never-seen
// user, so one mutex is enough.
type srcBuckets struct {
	mu sync.Mutex // guards b
	b  [srcSlots]struct {
		tokens float64
		last   int64 // unix nanos of the last refill; 0 = never used
	}
}

// srcSlot hashes a peer address (the IPv4 address or the IPv6 /64 prefix,
// with hashID) to its slot.
func srcSlot(a netip.Addr) uint32 {
	b := a.As16()
	k := b[:8]
	if a.Is4() {
		k = b[12:]
	}
	return hashID(k) & (srcSlots - 1)
}

// take refills slot's bucket to now (unix nanos) and takes a token.
func (sb *srcBuckets) take(slot uint32, now int64, rate, burst float64) bool {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	b := &sb.b[slot]
	if b.last == 0 {
		b.tokens, b.last = burst, now
	}
	if now > b.last {
		b.tokens = min(b.tokens+float64(now-b.last)/1e9*rate, burst)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
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
