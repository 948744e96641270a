package edge

import (
	"bytes"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/netpoll"
)

// client is the server-side state of one client identifier; for the
// messaging profile the client identifier is the user id. A client exists
// while it is connected, holds a persistent session, or has messages in its
// inbox; otherwise it is released (an empty, offline user costs nothing).
//
// Records live in chunks that never move and are reused after release. An
// id of up to maxArenaID bytes is in recBytes (idref, idn); a longer one
// lives in longIDs; one over idCharged bytes counts against the store cap
// (longIDCost). The record holds
// no pointers (the inbox and the rest are in the exts side table), so the
// garbage collector never scans it.
// A holder that keeps a *client across an unlock must remember gen and
// check it after locking again: a released record may be reused by another
// client.
//
// Lock order: registry shard mutex, then client.mu, then topicTree.mu. Never
// hold two client mutexes at once.
type client struct {
	mu       sync.Mutex    // guards the fields below, except idx and the id (immutable while live)
	owner    atomic.Uint64 // handle mirrored for lock-free ownership checks
	handle   netpoll.Handle
	lastSeen int64  // unix seconds of the last disconnect (presence)
	xi       uint32 // index of the clientExt (inbox, subscriptions, will) in exts; 0 = none
	idx      uint32 // index in the registry
	gen      uint32 // bumped at each release
	epoch    uint32 // bumped by every CONNECT that takes the session; never reset
	made     uint32 // unix seconds of the first message stored since the record was made (inbox expiry)
	// expiry is a persistent v5 session's Session Expiry (3.1.2.11.2):
	// while connected (handle != 0) the interval in force, in seconds;
	// while offline the unix second the session ends (sweep, connect).
	// 0: it never ends (3.1.1, 0xFFFFFFFF) or there is no session.
	expiry  uint32
	nextPID uint16
	idn     uint8
	dead    bool // released
	kick    bool // a kick message is posted to handle and not yet handled
	// persistent: clean session 0, subscriptions and generic messages
	// outlive the connection.
	persistent bool
	// The client's only generic subscription, while it has exactly one and
	// that one is inlineSub: its filter's bytes in recBytes (fref, flen;
	// fref 0: none) and its QoS with the v5 options kept (subRef.qos). Such
	// a client (a device subscribed to its own topic) needs no clientExt
	// for its subscription; x.subs is empty while fref != 0.
	flen uint8
	fqos byte
	fref uint32
	// idref is the client id's bytes in recBytes (idn of them) unless
	// idn is idLong; set by registry.lock, given back by release, valid
	// while the record is live.
	idref uint32
}

// maxArenaID is the longest client id kept in recBytes (client.idn is a
// byte, and idLong marks a longer one): the record is 72 bytes
// (layout_test.go) and an id costs its length rounded up to 8 bytes, where
// an inline array cost 36 bytes to every client (each record is paid by
// every client, idle or not).
const maxArenaID = 254

// idLong in client.idn marks a client id longer than maxArenaID (or one
// recBytes had no room for): the id is in longIDs instead.
const idLong = 0xFF

// longIDs holds the client ids longer than maxArenaID (MQTT allows up to
// 65,535 bytes; fleets rarely use more than 40): the record stays
// pointer-free and only such clients pay for a map entry. An entry exists
// exactly while its record is live with idn == idLong: registry.lock adds
// it under the shard mutex, registry.release deletes it under the shard
// mutex, so a reader that found the record live may read it. mu is a leaf
// lock.
var longIDs struct {
	mu sync.RWMutex
	m  map[*client][]byte
}

// idCharged is the longest client id that the store total does not count
// (README: a new client id over 64 bytes is refused when the store is
// full), wherever its bytes live.
const idCharged = 64

// longIDCost is what a long id holds in the store total: its bytes plus
// the map entry and slice header (about 64 bytes); 0 for an id of at most
// idCharged bytes.
func longIDCost(n int) int64 {
	if n <= idCharged {
		return 0
	}
	return int64(n) + 64
}

// sessionOverhead is what a persistent session holds in the store total
// while it lasts (clean session 0 until a clean-session CONNECT): its
// client record and side-table extension, kept when it is offline.
const sessionOverhead = 256

// idBytes returns the client id; valid while the record is live.
func (c *client) idBytes() []byte {
	if c.idn == idLong {
		longIDs.mu.RLock()
		id := longIDs.m[c]
		longIDs.mu.RUnlock()
		return id
	}
	if c.idn == 0 {
		return nil
	}
	return recBytes.bytes(c.idref, int(c.idn))
}

// name returns a copy of the client id.
func (c *client) name() string { return string(c.idBytes()) }

// profileID reports whether the client id is a messaging-profile user id
// ([0-9A-Za-z_.-], 1-64 bytes): only such a client has an addressable inbox
// (u/<id>/...), presence, and may publish profile messages.
func (c *client) profileID() bool {
	id := c.idBytes()
	return len(id) <= 64 && validIDBytes(id)
}

// subRef is one of a client's generic subscriptions.
type subRef struct {
	filter string
	seq    uint32 // clientExt.subSeq when made: names this subscription for its retained scan
	id     uint32 // v5 Subscription Identifier; 0: none
	qos    byte   // with the v5 options kept (tsub.opts)
}

// record is the sub record's second field: the QoS byte, then the v5
// Subscription Identifier if it has one (4 bytes, big endian).
func (r subRef) record() []byte { return subField(r.qos, r.id) }

func subField(qos byte, id uint32) []byte {
	if id == 0 {
		return []byte{qos}
	}
	return []byte{qos, byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)}
}

// parseSubField splits a sub record's second field.
func parseSubField(b []byte) (qos byte, id uint32) {
	if len(b) >= 5 {
		id = uint32(b[1])<<24 | uint32(b[2])<<16 | uint32(b[3])<<8 | uint32(b[4])
	}
	if len(b) > 0 {
		qos = b[0]
	}
	return qos, id
}

func (r subRef) key() string { return r.filter }

// inlineSub reports whether a client's only subscription to filter may be
// kept in its record: an exact filter (so it never has a retained scan,
// which names its subscription by subRef.seq), not shared, without a v5
// Subscription Identifier, of at most maxInlineFilter bytes.
func inlineSub(filter string, id uint32) bool {
	if id != 0 || len(filter) == 0 || len(filter) > maxInlineFilter || hasWildcard(filter) {
		return false
	}
	_, _, shared := mqtt.SplitShared(filter)
	return !shared
}

// inlineFilter returns the filter of c's inline subscription (nil: none);
// c is locked, and the bytes are valid while it stays so.
func (c *client) inlineFilter() []byte {
	if c.fref == 0 {
		return nil
	}
	return recBytes.bytes(c.fref, int(c.flen))
}

// nsubs is the number of c's generic subscriptions; c is locked.
func (c *client) nsubs() int {
	if c.fref != 0 {
		return 1
	}
	if x := c.xp(); x != nil {
		return x.subs.len()
	}
	return 0
}

// hasSub reports whether c has a generic subscription to filter; c is
// locked.
func (c *client) hasSub(filter []byte) bool {
	if c.fref != 0 {
		return bytes.Equal(c.inlineFilter(), filter)
	}
	x := c.xp()
	return x != nil && x.subs.find(string(filter)) >= 0
}

// subs yields c's generic subscriptions with their filters as bytes valid
// until the next yield; c is locked and must not change meanwhile.
func (c *client) subs(yield func(filter []byte, r subRef) bool) {
	if c.fref != 0 {
		yield(c.inlineFilter(), subRef{qos: c.fqos})
		return
	}
	if x := c.xp(); x != nil {
		for _, sub := range x.subs.items {
			if !yield([]byte(sub.filter), sub) {
				return
			}
		}
	}
}

// setInline makes f (inlineSub, and c has no other subscription) c's
// inline subscription; false if the arena is full. c is locked.
func (c *client) setInline(f string, qos byte) bool {
	ref := recBytes.alloc(f)
	if ref == 0 {
		return false
	}
	c.fref, c.flen, c.fqos = ref, uint8(len(f)), qos
	return true
}

// dropInline forgets c's inline subscription; c is locked.
func (c *client) dropInline() {
	recBytes.free(c.fref, int(c.flen))
	c.fref, c.flen, c.fqos = 0, 0, 0
}

// spillSub moves c's inline subscription into its extension (c is about
// to have a second one, or one the record cannot hold); c is locked.
func (c *client) spillSub() {
	if c.fref == 0 {
		return
	}
	f, qos := string(c.inlineFilter()), c.fqos
	c.dropInline()
	x := c.x()
	x.subSeq++
	x.subs.add(subRef{filter: f, seq: x.subSeq, qos: qos})
}

// maxInlineFilter is the longest filter an inline subscription holds
// (client.flen is a byte).
const maxInlineFilter = 255

// recBytes holds the bytes client records refer to, the client ids and
// the filters of inline subscriptions: pointer-free chunks that never
// move, carved in 8-byte units, with freed runs reused by size. A
// reference is the index of its first unit (0: none). mu is a leaf lock;
// the bytes of a reference are written before it is given out and not
// changed until it is freed, both under the owning client's mutex (an id's
// under its shard mutex too), so a reader holding that mutex reads them
// without mu.
var recBytes arena

const (
	arenaUnit      = 8
	arenaChunkBits = 13 // units per chunk: 8,192 (64 KiB)
	arenaChunks    = 1 << 15
	arenaMaxUnits  = (maxInlineFilter + arenaUnit - 1) / arenaUnit
)

type arena struct {
	mu   sync.Mutex                  // guards next, runs and chunk allocation
	next uint32                      // next unused unit; 0 is never used
	runs [arenaMaxUnits + 1][]uint32 // freed references by length in units
	dir  [arenaChunks]atomic.Pointer[[arenaUnit << arenaChunkBits]byte]
}

// alloc copies s (1 to maxInlineFilter bytes) into the arena and returns
// its reference, or 0 if the arena is full.
func (a *arena) alloc(s string) uint32 {
	ref := a.take(len(s))
	if ref != 0 {
		copy(a.bytes(ref, len(s)), s)
	}
	return ref
}

// take returns the reference of n (1 to maxInlineFilter) bytes, or 0 if
// the arena is full.
func (a *arena) take(n int) uint32 {
	u := uint32(n+arenaUnit-1) / arenaUnit
	a.mu.Lock()
	var ref uint32
	if fl := a.runs[u]; len(fl) > 0 {
		ref = fl[len(fl)-1]
		a.runs[u] = fl[:len(fl)-1]
	} else {
		if a.next == 0 {
			a.next = 1
		}
		if off := a.next & (1<<arenaChunkBits - 1); off+u > 1<<arenaChunkBits {
			a.next += 1<<arenaChunkBits - off // runs never straddle chunks
		}
		ref = a.next
		ch := ref >> arenaChunkBits
		if ch >= arenaChunks {
			a.mu.Unlock()
			return 0
		}
		if a.dir[ch].Load() == nil {
			a.dir[ch].Store(new([arenaUnit << arenaChunkBits]byte))
		}
		a.next += u
	}
	a.mu.Unlock()
	return ref
}

// bytes returns the n bytes at ref.
func (a *arena) bytes(ref uint32, n int) []byte {
	off := int(ref&(1<<arenaChunkBits-1)) * arenaUnit
	return a.dir[ref>>arenaChunkBits].Load()[off : off+n : off+n]
}

// free gives back the n bytes at ref.
func (a *arena) free(ref uint32, n int) {
	u := (n + arenaUnit - 1) / arenaUnit
	a.mu.Lock()
	a.runs[u] = append(a.runs[u], ref)
	a.mu.Unlock()
}

type will struct {
	topic   string
	payload []byte
	qos     byte
	retain  bool
	// MQTT 5.0: the will's properties as sent (forwarded like a
	// PUBLISH's) and its Will Delay Interval in seconds.
	props []byte
	delay uint32
}

// clientExt holds the state an idle client does not have: the inbox, the
// generic subscriptions, QoS 2 state and the will. It lives in the exts
// side table, so client records hold no pointers at all.
//
// An idle subscribed session keeps only its subscriptions (and a will if
// it has one): the inbox and the transient state are behind pointers that
// trimExt clears once they are empty, so that such a session's extension
// is 64 bytes (a size class of its own; layout_test.go), not 160.
type clientExt struct {
	subs   indexedList[string, subRef] // generic subscriptions, by filter
	subSeq uint32                      // last subRef.seq given out
	will   *will
	// q is the inbox; nil while it is empty (queue makes it, trimExt
	// gives it back to inboxPool).
	q *inbox
	// more holds the retained scans and inbound QoS 2 state; nil while
	// both are empty (busy makes it, trimExt drops it).
	more *extMore
}

// extMore is the part of a clientExt that lasts only while messages move.
type extMore struct {
	// scans are the retained deliveries still to make on the current
	// connection, oldest first (retained.go); a scan whose subscription was
	// replaced or removed is dropped when reached.
	scans  []*retainedScan
	qos2in []uint16 // inbound QoS 2 packet ids awaiting PUBREL
}

// queue returns x's inbox, making it if x has none; its client is locked.
func (x *clientExt) queue() *inbox {
	if x.q == nil {
		x.q = inboxPool.Get().(*inbox)
	}
	return x.q
}

// busy returns x's scans and QoS 2 state, making them if x has none; its
// client is locked.
func (x *clientExt) busy() *extMore {
	if x.more == nil {
		x.more = new(extMore)
	}
	return x.more
}

// qos2 returns the inbound QoS 2 packet ids awaiting PUBREL (nil: none).
func (x *clientExt) qos2() []uint16 {
	if x.more == nil {
		return nil
	}
	return x.more.qos2in
}

// clearQoS2 forgets the inbound QoS 2 packet ids (a session ended).
func (x *clientExt) clearQoS2() {
	if x.more != nil {
		x.more.qos2in = nil
	}
}

// exts is the side table of client extensions, shared by every registry
// in the process: a directory of chunks of pointers, with freed indices
// reused first so that it stays as small as the number of clients that
// have state.
var exts struct {
	mu   sync.Mutex // guards free, next and chunk allocation
	free []uint32
	next uint32
	dir  [dirChunks]atomic.Pointer[[chunkSize]atomic.Pointer[clientExt]]
}

func extSlot(i uint32) *atomic.Pointer[clientExt] {
	return &exts.dir[i>>chunkShift].Load()[i&(chunkSize-1)]
}

// xp returns c's extension or nil; c is locked.
func (c *client) xp() *clientExt {
	if c.xi == 0 {
		return nil
	}
	return extSlot(c.xi).Load()
}

// box returns c's inbox or nil (an empty inbox); c is locked.
func (c *client) box() *inbox {
	if x := c.xp(); x != nil {
		return x.q
	}
	return nil
}

// extPool recycles extensions and inboxPool inboxes with their backing
// array, so that a client whose inbox fills and empties with every message
// allocates nothing in steady state, yet an idle client holds no inbox and
// an idle unsubscribed one no extension.
var (
	extPool   = sync.Pool{New: func() any { return &clientExt{} }}
	inboxPool = sync.Pool{New: func() any { return &inbox{} }}
)

// x returns c's extension, creating it; c is locked.
func (c *client) x() *clientExt {
	if x := c.xp(); x != nil {
		return x
	}
	exts.mu.Lock()
	var i uint32
	if n := len(exts.free); n > 0 {
		i = exts.free[n-1]
		exts.free = exts.free[:n-1]
	} else {
		exts.next++
		i = exts.next
		if i >= dirChunks*chunkSize {
			exts.mu.Unlock()
			panic("edge: client extension table full")
		}
		if exts.dir[i>>chunkShift].Load() == nil {
			exts.dir[i>>chunkShift].Store(new([chunkSize]atomic.Pointer[clientExt]))
		}
	}
	exts.mu.Unlock()
	x := extPool.Get().(*clientExt)
	extSlot(i).Store(x)
	c.xi = i
	return x
}

// trimExt gives back what c's extension holds empty: an empty inbox, no
// scans or QoS 2 state, and then the extension itself if it holds nothing
// at all (no subscriptions, no will either); c is locked.
func (c *client) trimExt() {
	x := c.xp()
	if x == nil {
		return
	}
	if q := x.q; q != nil && q.len() == 0 {
		if q.bytes != 0 {
			q.trim() // gives back what an empty inbox holds (an accounting bug)
		}
		items := q.items[:0]
		if cap(items) > 64 {
			items = nil // do not pool a burst's backing array
		}
		*q = inbox{items: items}
		x.q = nil
		inboxPool.Put(q)
	}
	if m := x.more; m != nil && len(m.scans) == 0 && len(m.qos2in) == 0 {
		x.more = nil
	}
	if x.q != nil || x.more != nil || x.subs.len() > 0 || x.will != nil {
		return
	}
	*x = clientExt{}
	extSlot(c.xi).Store(nil)
	exts.mu.Lock()
	exts.free = append(exts.free, c.xi)
	exts.mu.Unlock()
	c.xi = 0
	extPool.Put(x)
}

const (
	numShards  = 64 // user table shards, each with its own mutex
	chunkShift = 10
	chunkSize  = 1 << chunkShift
	dirChunks  = 8192 // 8M clients
	minTable   = 16
	// seenPerShard bounds the last-seen times kept for offline users that
	// have no record (presence): 64 x 2^16 = 4M users, half per generation.
	seenPerShard = 1 << 16
)

// shard is one part of the user table: an open-addressing hash table
// (linear probing, backward-shift deletion) of hash<<32 | index entries, so
// that it holds no pointers either.
type shard struct {
	mu    sync.Mutex
	slots []uint64 // 0 = empty; index 0 is never used
	n     int
	// seen and seenOld hold the last-seen unix seconds of released profile
	// users (presence, and "known" for the new-inbox rate) in two
	// generations: rotateSeen drops seenOld and makes seen the old one, so
	// an entry is forgotten between one and two rotation periods after it
	// was written, in O(1), and each generation holds at most
	// seenPerShard/2 entries. A user is in at most one of them.
	seen    map[string]int64
	seenOld map[string]int64
	rotated int64 // unix seconds of the last rotation; the shard is 64 bytes, a cache line of its own
}

// registry is the router's user table: client id -> client record, sharded,
// with records addressed by a uint32 index so that the pointer-free session
// records can name their client.
type registry struct {
	shards [numShards]shard
	// acct is the store total (Server.held) and capBytes its cap: a long
	// client id is counted there while its record lives, and refused
	// (lock returns nil) if it does not fit. nil acct: not counted.
	acct     *atomic.Int64
	capBytes int64

	dirMu sync.Mutex // guards free, next and the allocation of chunks
	free  []uint32
	next  uint32
	dir   [dirChunks]atomic.Pointer[[chunkSize]client]
	count atomic.Int64
	// revived, if set, is told (the record locked) that a new record took
	// its last-seen time out of a shard's table: the durable store logs
	// it, or a snapshot that read the record's index before and the table
	// after holds it nowhere (persist.go: logRevived).
	revived func(c *client)
}

func newRegistry() *registry {
	r := &registry{next: 1} // index 0 means "none"
	for i := range r.shards {
		r.shards[i].slots = make([]uint64, minTable)
		r.shards[i].seen = make(map[string]int64)
	}
	return r
}

// idSeed keys hashID, chosen per process: the ids are the clients' to
// pick, and find compares whole ids (up to 65,535 bytes) under the shard
// mutex, so colliding ids must not be cheap to find.
var idSeed = maphash.MakeSeed()

// hashID is maphash under idSeed; the top bits pick the shard, the low
// bits the slot.
func hashID(id []byte) uint32 { return uint32(maphash.Bytes(idSeed, id)) }

// hashIDString is hashID for a string (the same value for the same bytes).
func hashIDString(id string) uint32 { return uint32(maphash.String(idSeed, id)) }

func (r *registry) shardOf(h uint32) *shard { return &r.shards[h>>26] }

// find returns the slot holding id, or the empty slot where it would go.
func (r *registry) find(sh *shard, h uint32, id []byte) (pos int, c *client) {
	mask := len(sh.slots) - 1
	for i := int(h) & mask; ; i = (i + 1) & mask {
		e := sh.slots[i]
		if e == 0 {
			return i, nil
		}
		if uint32(e>>32) == h {
			if c := r.at(uint32(e)); c != nil && string(c.idBytes()) == string(id) {
				return i, c
			}
		}
	}
}

func (r *registry) grow(sh *shard) {
	old := sh.slots
	sh.slots = make([]uint64, 2*len(old))
	mask := len(sh.slots) - 1
	for _, e := range old {
		if e == 0 {
			continue
		}
		i := int(uint32(e>>32)) & mask
		for sh.slots[i] != 0 {
			i = (i + 1) & mask
		}
		sh.slots[i] = e
	}
}

// remove deletes the entry at pos, shifting later entries of its probe run
// back so that no tombstones are needed.
func (sh *shard) remove(pos int) {
	mask := len(sh.slots) - 1
	i := pos
	for j := (i + 1) & mask; ; j = (j + 1) & mask {
		e := sh.slots[j]
		if e == 0 {
			break
		}
		k := int(uint32(e>>32)) & mask // home slot of e
		// e may move to i unless its home lies cyclically in (i, j].
		if i <= j && i < k && k <= j || i > j && (i < k || k <= j) {
			continue
		}
		sh.slots[i] = e
		i = j
	}
	sh.slots[i] = 0
	sh.n--
}

// lock returns the client for id locked, creating it if create is set; nil
// if it does not exist and create is false, or if the table is full. id
// may be any client id (long ids go to longIDs).
func (r *registry) lock(id []byte, create bool) *client {
	h := hashID(id)
	sh := r.shardOf(h)
	sh.mu.Lock()
	pos, c := r.find(sh, h, id)
	if c == nil {
		if !create || len(id) == 0 || len(id) > 65535 {
			sh.mu.Unlock()
			return nil
		}
		if cost := longIDCost(len(id)); cost > 0 && r.acct != nil {
			if r.acct.Add(cost) > r.capBytes {
				r.acct.Add(-cost)
				sh.mu.Unlock()
				return nil
			}
		}
		c = r.alloc()
		if c == nil {
			if cost := longIDCost(len(id)); cost > 0 && r.acct != nil {
				r.acct.Add(-cost)
			}
			sh.mu.Unlock()
			return nil
		}
		c.idn = idLong
		if len(id) <= maxArenaID {
			if ref := recBytes.take(len(id)); ref != 0 {
				copy(recBytes.bytes(ref, len(id)), id)
				c.idref, c.idn = ref, uint8(len(id))
			}
		}
		if c.idn == idLong {
			longIDs.mu.Lock()
			if longIDs.m == nil {
				longIDs.m = make(map[*client][]byte)
			}
			longIDs.m[c] = bytes.Clone(id)
			longIDs.mu.Unlock()
		}
		if (sh.n+1)*4 > len(sh.slots)*3 {
			r.grow(sh)
			pos, _ = r.find(sh, h, id)
		}
		sh.slots[pos] = uint64(h)<<32 | uint64(c.idx)
		sh.n++
		if last, ok := sh.lastSeen(id); ok {
			c.lastSeen = last
			delete(sh.seen, string(id))
			delete(sh.seenOld, string(id))
			if r.revived != nil {
				r.revived(c)
			}
		}
		r.count.Add(1)
		sh.mu.Unlock()
		return c // alloc returned it locked
	}
	c.mu.Lock()
	sh.mu.Unlock()
	return c
}

// alloc takes a free record and returns it locked and reset (gen and epoch
// keep counting), or nil if every index is used.
func (r *registry) alloc() *client {
	r.dirMu.Lock()
	var idx uint32
	if n := len(r.free); n > 0 {
		idx = r.free[n-1]
		r.free = r.free[:n-1]
	} else {
		if r.next >= dirChunks*chunkSize {
			r.dirMu.Unlock()
			return nil
		}
		idx = r.next
		r.next++
		if r.dir[idx>>chunkShift].Load() == nil {
			r.dir[idx>>chunkShift].Store(new([chunkSize]client))
		}
	}
	r.dirMu.Unlock()
	c := &r.dir[idx>>chunkShift].Load()[idx&(chunkSize-1)]
	c.mu.Lock()
	c.idx = idx
	c.owner.Store(0)
	c.handle, c.lastSeen, c.xi, c.made = 0, 0, 0, 0
	c.nextPID, c.idn, c.dead, c.kick, c.persistent = 0, 0, false, false, false
	c.fref, c.flen, c.fqos, c.idref = 0, 0, 0, 0
	return c
}

// at returns the record with index idx, nil for an index never allocated.
// The record may have been released or reused since the caller learnt idx:
// check ownership (owner, epoch, gen) after locking it.
func (r *registry) at(idx uint32) *client {
	if idx == 0 || idx >= dirChunks*chunkSize {
		return nil
	}
	ch := r.dir[idx>>chunkShift].Load()
	if ch == nil {
		return nil
	}
	return &ch[idx&(chunkSize-1)]
}

// known reports whether user has a record or a last-seen time: a user the
// server has seen, for whom an inbox may be made without the new-inbox rate.
func (r *registry) known(user []byte) bool {
	h := hashID(user)
	sh := r.shardOf(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, c := r.find(sh, h, user); c != nil {
		return true
	}
	_, ok := sh.lastSeen(user)
	return ok
}

// lastSeen looks user up in both generations; sh is locked.
func (sh *shard) lastSeen(user []byte) (int64, bool) {
	if t, ok := sh.seen[string(user)]; ok {
		return t, true
	}
	t, ok := sh.seenOld[string(user)]
	return t, ok
}

// rotateSeen starts a new generation of last-seen times if period has
// passed since the last one (the first call only starts the clock).
func (sh *shard) rotateSeen(now, period int64) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	switch {
	case sh.rotated == 0:
		sh.rotated = now
	case now-sh.rotated >= period:
		sh.seenOld = sh.seen
		sh.seen = make(map[string]int64)
		sh.rotated = now
	}
}

// presence returns whether user is online and when it was last seen; known
// is false for a user never seen.
func (r *registry) presence(user []byte) (online bool, lastSeen int64, known bool) {
	h := hashID(user)
	sh := r.shardOf(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, c := r.find(sh, h, user); c != nil {
		c.mu.Lock()
		online, lastSeen = c.handle != 0, c.lastSeen
		c.mu.Unlock()
		return online, lastSeen, online || lastSeen != 0
	}
	lastSeen, known = sh.lastSeen(user)
	return false, lastSeen, known
}

// release frees c's record if it holds nothing (offline, no persistent
// session, empty inbox) and is still the generation gen. c must not be
// locked by the caller.
func (r *registry) release(c *client, gen uint32) {
	c.mu.Lock()
	if c.gen != gen || c.dead {
		c.mu.Unlock()
		return
	}
	id := c.name()
	c.mu.Unlock()
	h := hashIDString(id)
	sh := r.shardOf(h)
	sh.mu.Lock()
	c.mu.Lock()
	if c.gen != gen || c.dead || c.handle != 0 || c.persistent || c.box().len() > 0 || c.nsubs() > 0 {
		c.mu.Unlock()
		sh.mu.Unlock()
		return
	}
	pos, found := r.find(sh, h, []byte(id))
	if found != c {
		panic("edge: registry invariant broken: a live client is missing from its shard")
	}
	sh.remove(pos)
	if c.lastSeen != 0 && c.profileID() { // only profile users have presence
		if len(sh.seen) >= seenPerShard/2 { // bounded: forget an arbitrary user
			for k := range sh.seen {
				delete(sh.seen, k)
				break
			}
		}
		delete(sh.seenOld, id)
		sh.seen[id] = c.lastSeen
	}
	n := int(c.idn)
	if c.idn == idLong {
		longIDs.mu.Lock()
		n = len(longIDs.m[c])
		delete(longIDs.m, c)
		longIDs.mu.Unlock()
	} else {
		recBytes.free(c.idref, n) // idref stays: a stale reader gets bytes, not a panic
	}
	if r.acct != nil {
		r.acct.Add(-longIDCost(n))
	}
	c.dead = true
	c.gen++
	c.trimExt()
	if c.xi != 0 || c.fref != 0 {
		panic("edge: registry invariant broken: released client keeps an extension or a subscription")
	}
	c.mu.Unlock()
	sh.mu.Unlock()
	r.count.Add(-1)
	r.dirMu.Lock()
	r.free = append(r.free, c.idx)
	r.dirMu.Unlock()
}

func (c *client) String() string { return fmt.Sprintf("client %q", c.idBytes()) }

// allocPID returns a packet id not used by an in-flight entry.
func (c *client) allocPID() uint16 {
	for {
		c.nextPID++
		if c.nextPID == 0 {
			c.nextPID = 1
		}
		if c.box().findSent(c.nextPID) < 0 {
			return c.nextPID
		}
	}
}
