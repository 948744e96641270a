package edge

import (
	"bytes"
	"log/slog"
	"sync/atomic"
)

// A user's inbox: the FIFO of stored PUBLISH packets and its accounting.

// inbox entry flags.
const (
	fDurable  = 1 << iota // profile message: kept whatever the clean-session flag says
	fDup                  // sent before: set DUP when sent again
	fReleased             // outbound QoS 2: PUBREC received, PUBREL sent
	fReceipt              // u/<me>/m/<from>/<mid>: its PUBACK sends a delivered receipt
	// fProps: *buf is a v5 PUBLISH with the publisher's properties (its
	// Message Expiry Interval holds the absolute unix deadline), sent
	// without them to a 3.1.1 client (v5.go: writeStored).
	fProps
)

// entry is one stored message: a complete PUBLISH packet in a pooled buffer
// whose packet identifier and DUP bit are patched in place when it is sent.
type entry struct {
	buf    *[]byte
	seq    uint64 // the store's seq of its put record; 0: not logged (persist.go)
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
//
// bytes is the memory the inbox holds (heldSize of each entry, plus
// inboxOverhead while it is not empty), not the bytes its packets use: a
// 33 KiB message holds a 64 KiB buffer. Every change to bytes is added to
// *acct as well (the server's store total), so that the sum of all inboxes
// is known without a scan; acct is set by the first push.
type inbox struct {
	items []entry
	head  int
	nsent int
	bytes int
	acct  *atomic.Int64
	cnt   *atomic.Int64 // the server's entry total ($SYS messages/stored); set with acct
}

func (q *inbox) len() int {
	if q == nil {
		return 0
	}
	return len(q.items) - q.head
}

// held returns the bytes q holds (0 for nil).
func (q *inbox) held() int {
	if q == nil {
		return 0
	}
	return q.bytes
}

func (q *inbox) at(i int) *entry { return &q.items[q.head+i] }

// full reports whether a PUBLISH of n encoded bytes does not fit under the
// bounds of max entries and maxBytes held.
func (q *inbox) full(max, maxBytes, n int) bool {
	add := heldSize(n)
	if q.len() == 0 {
		add += inboxOverhead
	}
	return q.len() >= max || q.held()+add > maxBytes
}

func (q *inbox) account(d int) {
	q.bytes += d
	if q.acct != nil {
		q.acct.Add(int64(d))
	}
}

func (q *inbox) countEntries(d int) {
	if q.cnt != nil {
		q.cnt.Add(int64(d))
	}
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
	d := bufCap(cap(*e.buf)) + entryOverhead
	if q.len() == 0 {
		d += inboxOverhead
	}
	q.items = append(q.items, e)
	q.account(d)
	q.countEntries(1)
}

// remove deletes entry i (0 = front), keeping order, and frees its buffer.
func (q *inbox) remove(i int) {
	e := q.items[q.head+i]
	d := bufCap(cap(*e.buf)) + entryOverhead
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
		d += inboxOverhead
	}
	q.account(-d)
	q.countEntries(-1)
}

// findSent returns the index of the in-flight entry with packet id pid, or -1.
func (q *inbox) findSent(pid uint16) int {
	if q == nil {
		return -1
	}
	for i := 0; i < q.nsent; i++ {
		if q.items[q.head+i].pid == pid {
			return i
		}
	}
	return -1
}

// pendingScan bounds how many of the newest unsent entries pending
// examines, so that a SUBSCRIBE with thousands of filters costs the loop
// O(filters), not O(filters x inbox length); duplicates older than that
// are bounded by the inbox bounds alone.
const pendingScan = 64

// pending reports whether one of the pendingScan newest entries not yet
// sent has the given topic.
func (q *inbox) pending(topic []byte) bool {
	if q == nil {
		return false
	}
	for i, k := len(q.items)-1, 0; i >= q.head+q.nsent && k < pendingScan; i, k = i-1, k+1 {
		if bytes.Equal(q.items[i].topic(), topic) {
			return true
		}
	}
	return false
}

// unsend marks the in-flight entries for redelivery with DUP=1 on the next
// connection (PROTOCOL.md, store-and-forward).
func (q *inbox) unsend() {
	if q == nil {
		return
	}
	for i := 0; i < q.nsent; i++ {
		q.items[q.head+i].flags |= fDup
	}
	q.nsent = 0
}

// dropGeneric removes the non-durable entries (a clean session ended).
func (q *inbox) dropGeneric() {
	q.drop(func(e *entry) bool { return e.flags&fDurable == 0 })
}

// drop removes the entries for which fn returns true, keeping order, and
// returns how many; fn may read the entry (its buffer is freed after).
func (q *inbox) drop(fn func(e *entry) bool) int {
	if q == nil {
		return 0
	}
	q.nsent = 0
	return q.dropFrom(0, fn)
}

// dropFrom is drop for the entries from index k on: the first k (at least
// the in-flight prefix, k >= nsent, so that a PUBACK for one still finds
// it) are kept.
func (q *inbox) dropFrom(k int, fn func(e *entry) bool) int {
	if q == nil {
		return 0
	}
	if k < q.nsent {
		panic("edge: inbox invariant broken: dropping in-flight entries")
	}
	had := q.len() > 0
	d, n := 0, 0
	w := q.head + k
	for r := w; r < len(q.items); r++ {
		e := q.items[r]
		if fn(&e) {
			d += bufCap(cap(*e.buf)) + entryOverhead
			putBuf(e.buf)
			n++
			continue
		}
		q.items[w] = e
		w++
	}
	clear(q.items[w:])
	q.items = q.items[:w]
	if had && q.len() == 0 {
		d += inboxOverhead
	}
	q.account(-d)
	q.countEntries(-n)
	q.trim()
	return n
}

// acctRepairs counts the empty inboxes trim found holding bytes (an
// accounting bug); repairLog rate-limits the lines it logs.
var (
	acctRepairs atomic.Uint64
	repairLog   logLimiter
)

// trim releases the backing array of an empty inbox. An empty inbox that
// still holds bytes breaks the accounting invariant; trim runs on event
// loops, where a panic would take every connection of the process down,
// so it logs (rate-limited, to slog.Default: an inbox does not know its
// server), counts the repair (Stats.AccountingRepairs) and gives the bytes
// back to the store total instead.
func (q *inbox) trim() {
	if q == nil {
		return
	}
	if q.len() == 0 {
		if q.bytes != 0 {
			acctRepairs.Add(1)
			if repairLog.allow() {
				slog.Default().Error("edge: inbox accounting repaired: an empty inbox held bytes", "bytes", q.bytes)
			}
			q.account(-q.bytes)
		}
		q.items = nil
		q.head = 0
		q.nsent = 0
	}
}

// freeAll releases every entry (the server is dropped).
func (q *inbox) freeAll() {
	for i := q.head; i < len(q.items); i++ {
		putBuf(q.items[i].buf)
	}
	q.countEntries(-q.len())
	q.account(-q.bytes)
	q.items, q.head, q.nsent = nil, 0, 0
}
