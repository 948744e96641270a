package edge

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/edgedhq/edged/netpoll"
)

// client is the server-side state of one client identifier; for the
// messaging profile the client identifier is the user id. A client exists
// while it is connected, holds a persistent session, or has messages in its
// inbox; otherwise it is removed (an empty, offline user costs nothing).
//
// Lock order: registry shard mutex, then client.mu, then topicTree.mu. Never
// hold two client mutexes at once.
type client struct {
	id  string
	idx uint32 // index in the registry directory

	epoch      uint32     // incremented by every CONNECT that takes the session; guarded by mu
	mu         sync.Mutex // guards the fields below (and epoch)
	owner      atomic.Uint64
	handle     netpoll.Handle // connection owning the session; 0 when offline (owner mirrors it for lock-free checks)
	lastSeen   int64          // unix seconds of the last disconnect (presence)
	q          inbox
	ext        *clientExt // subscriptions, QoS 2 state, will: nil for most clients
	nextPID    uint16
	dead       bool // removed from the registry
	kick       bool // a kick message is posted to handle and not yet handled
	persistent bool // clean session 0: subscriptions and generic messages outlive the connection
}

// clientExt holds the state few clients have, so an idle messaging-profile
// client stays small.
type clientExt struct {
	subs   []subRef // generic subscriptions, to remove them with the session
	qos2in []uint16 // inbound QoS 2 packet ids awaiting PUBREL
	will   *will
}

// x returns c's extension, creating it; c is locked.
func (c *client) x() *clientExt {
	if c.ext == nil {
		c.ext = &clientExt{}
	}
	return c.ext
}

// trimExt drops an empty extension; c is locked.
func (c *client) trimExt() {
	if x := c.ext; x != nil && len(x.subs) == 0 && len(x.qos2in) == 0 && x.will == nil {
		c.ext = nil
	}
}

type subRef struct {
	filter string
	qos    byte
}

type will struct {
	topic   string
	payload []byte
	qos     byte
	retain  bool
}

const (
	numShards  = 64 // user table shards, each with its own mutex
	chunkShift = 10
	chunkSize  = 1 << chunkShift
	dirChunks  = 8192 // 8M clients
)

type shard struct {
	mu   sync.Mutex
	m    map[string]*client
	seen map[string]int64 // last-seen unix seconds of released clients (presence)
	_    [32]byte         // keep shard mutexes on separate cache lines
}

// registry is the router's user table: client id -> *client, sharded, plus a
// directory from a small index to the client so that the pointer-free
// session records can name their client with a uint32.
type registry struct {
	shards [numShards]shard

	dirMu sync.Mutex // guards free, next and the writes to dir chunks
	free  []uint32
	next  uint32
	dir   [dirChunks]atomic.Pointer[[chunkSize]atomic.Pointer[client]]
	count atomic.Int64
}

func newRegistry() *registry {
	r := &registry{next: 1} // index 0 means "none"
	for i := range r.shards {
		r.shards[i].m = make(map[string]*client)
		r.shards[i].seen = make(map[string]int64)
	}
	return r
}

func shardOf[T ~string | ~[]byte](id T) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h ^= uint32(id[i])
		h *= 16777619
	}
	return h % numShards
}

// lock returns the client for id locked, creating it if create is set; nil
// if it does not exist and create is false, or if the directory is full.
func (r *registry) lock(id []byte, create bool) *client {
	sh := &r.shards[shardOf(id)]
	sh.mu.Lock()
	c := sh.m[string(id)]
	if c == nil {
		if !create {
			sh.mu.Unlock()
			return nil
		}
		c = &client{id: string(id)}
		if !r.assign(c) {
			sh.mu.Unlock()
			return nil
		}
		sh.m[c.id] = c
		if last, ok := sh.seen[c.id]; ok {
			c.lastSeen = last
			delete(sh.seen, c.id)
		}
		r.count.Add(1)
	}
	c.mu.Lock()
	sh.mu.Unlock()
	return c
}

func (r *registry) assign(c *client) bool {
	r.dirMu.Lock()
	defer r.dirMu.Unlock()
	var idx uint32
	if n := len(r.free); n > 0 {
		idx = r.free[n-1]
		r.free = r.free[:n-1]
	} else {
		if r.next >= dirChunks*chunkSize {
			return false
		}
		idx = r.next
		r.next++
	}
	ch := r.dir[idx>>chunkShift].Load()
	if ch == nil {
		ch = new([chunkSize]atomic.Pointer[client])
		r.dir[idx>>chunkShift].Store(ch)
	}
	ch[idx&(chunkSize-1)].Store(c)
	c.idx = idx
	return true
}

// at returns the client with index idx (which the caller learnt through a
// synchronising path: the CONNECT that created it, or a posted message).
func (r *registry) at(idx uint32) *client {
	if idx == 0 || idx >= dirChunks*chunkSize {
		return nil
	}
	ch := r.dir[idx>>chunkShift].Load()
	if ch == nil {
		return nil
	}
	return ch[idx&(chunkSize-1)].Load()
}

// presence returns whether user is online and when it was last seen; known
// is false for a user never seen.
func (r *registry) presence(user []byte) (online bool, lastSeen int64, known bool) {
	sh := &r.shards[shardOf(user)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if c := sh.m[string(user)]; c != nil {
		c.mu.Lock()
		online, lastSeen = c.handle != 0, c.lastSeen
		c.mu.Unlock()
		return online, lastSeen, online || lastSeen != 0
	}
	lastSeen, known = sh.seen[string(user)]
	return false, lastSeen, known
}

// release removes c from the table if it holds nothing: offline, no
// persistent session, empty inbox. c must not be locked by the caller.
func (r *registry) release(c *client) {
	sh := &r.shards[shardOf(c.id)]
	sh.mu.Lock()
	c.mu.Lock()
	if c.dead || c.handle != 0 || c.persistent || c.q.len() > 0 || c.ext != nil && len(c.ext.subs) > 0 {
		c.mu.Unlock()
		sh.mu.Unlock()
		return
	}
	c.dead = true
	delete(sh.m, c.id)
	if c.lastSeen != 0 {
		sh.seen[c.id] = c.lastSeen
	}
	c.mu.Unlock()
	sh.mu.Unlock()
	r.count.Add(-1)
	r.dirMu.Lock()
	r.dir[c.idx>>chunkShift].Load()[c.idx&(chunkSize-1)].Store(nil)
	r.free = append(r.free, c.idx)
	r.dirMu.Unlock()
}

// inbox entry flags.
const (
	fDurable  = 1 << iota // profile message: kept whatever the clean-session flag says
	fDup                  // sent before: set DUP when sent again
	fReleased             // outbound QoS 2: PUBREC received, PUBREL sent
	fReceipt              // u/<me>/m/<from>/<mid>: its PUBACK sends a delivered receipt
)

// entry is one stored message: a complete PUBLISH packet in a pooled buffer
// whose packet identifier and DUP bit are patched in place when it is sent.
type entry struct {
	buf    *[]byte
	pidOff uint32 // offset of the packet id in *buf; 0 for QoS 0
	pid    uint16
	flags  uint8
}

func (e *entry) qos() byte { return ((*e.buf)[0] >> 1) & 3 }

// topic returns the topic of the stored PUBLISH.
func (e *entry) topic() []byte {
	b := *e.buf
	i := 1
	for b[i]&0x80 != 0 {
		i++
	}
	i++
	n := int(b[i])<<8 | int(b[i+1])
	return b[i+2 : i+2+n]
}

// inbox is a FIFO of entries. The first nsent entries have been sent on the
// current connection and await their acknowledgement (the in-flight window);
// acknowledged entries are removed from the middle by shifting the sent
// prefix, so order is kept without holes. An empty inbox of an offline
// client holds no memory.
type inbox struct {
	items []entry
	head  int
	nsent int
	bytes int
}

func (q *inbox) len() int        { return len(q.items) - q.head }
func (q *inbox) at(i int) *entry { return &q.items[q.head+i] }
func (q *inbox) full(max, maxBytes, n int) bool {
	return q.len() >= max || q.bytes+n > maxBytes
}

func (q *inbox) push(e entry) {
	if q.head > 0 && q.head == len(q.items) {
		q.items = q.items[:0]
		q.head = 0
	} else if q.head >= 1024 && q.head*2 >= len(q.items) {
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items = q.items[:n]
		q.head = 0
	}
	q.items = append(q.items, e)
	q.bytes += len(*e.buf)
}

// remove deletes entry i (0 = front), keeping order, and frees its buffer.
func (q *inbox) remove(i int) {
	e := q.items[q.head+i]
	q.bytes -= len(*e.buf)
	putBuf(e.buf)
	copy(q.items[q.head+1:q.head+i+1], q.items[q.head:q.head+i])
	q.items[q.head] = entry{}
	q.head++
	if i < q.nsent {
		q.nsent--
	}
	if q.head == len(q.items) {
		q.items = q.items[:0]
		q.head = 0
	}
}

// findSent returns the index of the in-flight entry with packet id pid, or -1.
func (q *inbox) findSent(pid uint16) int {
	for i := 0; i < q.nsent; i++ {
		if q.items[q.head+i].pid == pid {
			return i
		}
	}
	return -1
}

// unsend marks the in-flight entries for redelivery with DUP=1 on the next
// connection (PROTOCOL.md, store-and-forward).
func (q *inbox) unsend() {
	for i := 0; i < q.nsent; i++ {
		q.items[q.head+i].flags |= fDup
	}
	q.nsent = 0
}

// dropGeneric removes the non-durable entries (a clean session ended).
func (q *inbox) dropGeneric() {
	w := q.head
	for r := q.head; r < len(q.items); r++ {
		e := q.items[r]
		if e.flags&fDurable == 0 {
			q.bytes -= len(*e.buf)
			putBuf(e.buf)
			continue
		}
		q.items[w] = e
		w++
	}
	clear(q.items[w:])
	q.items = q.items[:w]
	q.nsent = 0
	q.trim()
}

// trim releases the backing array of an empty inbox.
func (q *inbox) trim() {
	if q.len() == 0 {
		q.items = nil
		q.head = 0
		q.nsent = 0
		q.bytes = 0
	}
}

// freeAll releases every entry (the server is dropped).
func (q *inbox) freeAll() {
	for i := q.head; i < len(q.items); i++ {
		putBuf(q.items[i].buf)
	}
	q.items, q.head, q.nsent, q.bytes = nil, 0, 0, 0
}

func (c *client) String() string { return fmt.Sprintf("client %q", c.id) }

// allocPID returns a packet id not used by an in-flight entry.
func (c *client) allocPID() uint16 {
	for {
		c.nextPID++
		if c.nextPID == 0 {
			c.nextPID = 1
		}
		if c.q.findSent(c.nextPID) < 0 {
			return c.nextPID
		}
	}
}
