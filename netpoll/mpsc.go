package netpoll

import (
	"sync"
	"sync/atomic"
)

// item is one queued unit of cross-loop work.
type item struct {
	to   Handle // the connection, for kindConn
	kind uint8  // kindConn, kindLoop or kindAdopt
	msg  Message
}

// mpsc is a bounded multi-producer single-consumer queue (Dmitry Vyukov's
// bounded queue, specialised to one consumer): producers claim a cell with one
// CAS on the enqueue index, the consumer needs no atomic read-modify-write.
// When the ring is full, producers spill to a mutex-guarded overflow slice so
// that a loop posting to another loop never blocks (two loops posting to each
// other could otherwise deadlock). Once anything has spilled, producers keep
// spilling until the consumer takes the overflow, which keeps each producer's
// messages in order.
type mpsc struct {
	cells []mpscCell
	mask  uint64
	_     [56]byte // keep the producers' index off the consumer's cache line
	enq   atomic.Uint64
	_     [56]byte
	deq   uint64 // consumer only

	spilled  atomic.Bool
	mu       sync.Mutex // guards overflow
	overflow []item
	length   atomic.Int64 // approximate, for stats
}

type mpscCell struct {
	seq atomic.Uint64
	v   item
}

// mpscSize is each loop's ring: 8192 cells (about 0.5 MiB) absorbs a burst of
// one wake-up's worth of deliveries from every other loop.
const mpscSize = 8192

func newMPSC(size int) *mpsc {
	q := &mpsc{cells: make([]mpscCell, size), mask: uint64(size - 1)}
	for i := range q.cells {
		q.cells[i].seq.Store(uint64(i))
	}
	return q
}

// push adds x; it never blocks and never fails.
func (q *mpsc) push(x item) {
	q.length.Add(1)
	if !q.spilled.Load() {
		pos := q.enq.Load()
		for {
			c := &q.cells[pos&q.mask]
			seq := c.seq.Load()
			switch dif := int64(seq) - int64(pos); {
			case dif == 0:
				if q.enq.CompareAndSwap(pos, pos+1) {
					c.v = x
					c.seq.Store(pos + 1)
					return
				}
				pos = q.enq.Load()
				continue
			case dif < 0: // full
			default:
				pos = q.enq.Load()
				continue
			}
			break
		}
	}
	q.mu.Lock()
	q.overflow = append(q.overflow, x)
	q.spilled.Store(true)
	q.mu.Unlock()
}

// pop takes the oldest ring item. It reports false when the ring is empty
// (or its oldest cell is claimed but not yet written: the producer's wake-up
// follows, so the consumer will look again).
func (q *mpsc) pop(x *item) bool {
	c := &q.cells[q.deq&q.mask]
	if c.seq.Load() != q.deq+1 {
		return false
	}
	*x = c.v
	c.v = item{}
	c.seq.Store(q.deq + q.mask + 1)
	q.deq++
	q.length.Add(-1)
	return true
}

// takeOverflow returns the spilled items, in order, and clears the spill
// state; buf is reused for the result. It returns nothing while the ring
// holds a claimed cell (written or not): spilled items are newer than every
// ring item of their producer, and handing them out first would reorder its
// messages. The ring is looked at under mu: a producer that read spilled as
// false before it was set may claim a cell after a look outside it, and its
// next message may spill before the overflow is taken (found by
// TestMPSCOrderPerProducerWithOverflow under -race, ~1 run in 300).
func (q *mpsc) takeOverflow(buf []item) []item {
	if !q.spilled.Load() {
		return buf[:0]
	}
	q.mu.Lock()
	if q.enq.Load() != q.deq {
		q.mu.Unlock()
		return buf[:0]
	}
	buf = append(buf[:0], q.overflow...)
	clear(q.overflow)
	q.overflow = q.overflow[:0]
	q.spilled.Store(false)
	q.mu.Unlock()
	q.length.Add(-int64(len(buf)))
	return buf
}
