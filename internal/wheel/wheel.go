// Package wheel is netpoll's per-loop hierarchical timer wheel, internal so
// that netpoll's public face does not carry it.
package wheel

import "math/bits"

// Wheel is a hierarchical timer wheel (Varghese and Lauck, as in the Linux
// kernel and Kafka): wheelLevels levels of 64 buckets, level l covering ticks
// in units of 64^l. Add, Cancel and each expiry are O(1); a timer is moved
// down a level at most wheelLevels-1 times. Timers are intrusive doubly
// linked lists threaded through pointer-free nodes indexed by id (a
// connection's slot), so the wheel adds no GC work and allocates only when a
// new chunk of ids is first used.
//
// Semantics: a timer added with deadline at fires during the first Advance
// whose target is >= max(at, now+1). A Wheel belongs to one goroutine.
type Wheel struct {
	now   int64
	count int
	heads [wheelLevels * wheelSlots]uint32 // id+1 of the first node, 0 = empty
	nodes []*[wheelChunk]timerNode
}

const (
	wheelBits   = 6
	wheelSlots  = 1 << wheelBits
	wheelLevels = 7 // 42 bits of ticks: at a 10 ms tick, longer than any deadline anyone sets
	wheelChunk  = 4096
	maxDelta    = 1<<(wheelBits*wheelLevels) - 1
)

// timerNode is 24 bytes: next, prev (id+1, 0 = none), the bucket (-1 = not
// scheduled) and the deadline in ticks.
type timerNode struct {
	next, prev uint32
	bucket     int32
	at         int64
}

// New returns a wheel whose current tick is now.
func New(now int64) *Wheel { return &Wheel{now: now} }

// Now returns the last tick Advance reached.
func (w *Wheel) Now() int64 { return w.now }

// Len returns the number of scheduled timers.
func (w *Wheel) Len() int { return w.count }

func (w *Wheel) node(id uint32) *timerNode {
	ci := int(id / wheelChunk)
	for ci >= len(w.nodes) {
		ch := new([wheelChunk]timerNode)
		for i := range ch {
			ch[i].bucket = -1
		}
		w.nodes = append(w.nodes, ch)
	}
	return &w.nodes[ci][id%wheelChunk]
}

// Add schedules (or reschedules) timer id to fire at tick at.
func (w *Wheel) Add(id uint32, at int64) {
	n := w.node(id)
	if n.bucket >= 0 {
		w.unlink(id, n)
	}
	if at <= w.now {
		at = w.now + 1
	}
	if at-w.now > maxDelta {
		at = w.now + maxDelta
	}
	n.at = at
	w.place(id, n)
	w.count++
}

func (w *Wheel) place(id uint32, n *timerNode) {
	level := (bits.Len64(uint64(n.at^w.now)) - 1) / wheelBits
	b := int32(level*wheelSlots + int(n.at>>(uint(level)*wheelBits))&(wheelSlots-1))
	n.bucket = b
	n.prev = 0
	n.next = w.heads[b]
	if n.next != 0 {
		w.node(n.next - 1).prev = id + 1
	}
	w.heads[b] = id + 1
}

func (w *Wheel) unlink(id uint32, n *timerNode) {
	if n.prev != 0 {
		w.node(n.prev - 1).next = n.next
	} else {
		w.heads[n.bucket] = n.next
	}
	if n.next != 0 {
		w.node(n.next - 1).prev = n.prev
	}
	n.next, n.prev, n.bucket = 0, 0, -1
	w.count--
}

// Cancel unschedules timer id and reports whether it was scheduled.
func (w *Wheel) Cancel(id uint32) bool {
	if int(id/wheelChunk) >= len(w.nodes) {
		return false
	}
	n := w.node(id)
	if n.bucket < 0 {
		return false
	}
	w.unlink(id, n)
	return true
}

// Advance moves the wheel to tick to, calling fire for each timer that
// expires, in deadline order across ticks. fire may Add or Cancel timers.
func (w *Wheel) Advance(to int64, fire func(id uint32)) {
	if w.count == 0 {
		if to > w.now {
			w.now = to
		}
		return
	}
	for w.now < to {
		w.now++
		// Cascade from the highest level whose digit just rolled over, so
		// timers falling through several levels land in level 0 this tick.
		for l := wheelLevels - 1; l >= 1; l-- {
			if w.now&(1<<(uint(l)*wheelBits)-1) != 0 {
				continue
			}
			b := l*wheelSlots + int(w.now>>(uint(l)*wheelBits))&(wheelSlots-1)
			head := w.heads[b]
			w.heads[b] = 0
			for head != 0 {
				id := head - 1
				n := w.node(id)
				head = n.next
				w.place(id, n)
			}
		}
		b := int(w.now) & (wheelSlots - 1)
		for w.heads[b] != 0 {
			id := w.heads[b] - 1
			w.unlink(id, w.node(id))
			fire(id)
		}
		if w.count == 0 {
			w.now = to
		}
	}
}

// Next returns the tick by which Advance must next be called: the earliest
// non-empty level-0 bucket, or the next cascade point. ok is false when no
// timer is scheduled.
func (w *Wheel) Next() (tick int64, ok bool) {
	if w.count == 0 {
		return 0, false
	}
	end := (w.now | (wheelSlots - 1)) + 1
	for t := w.now + 1; t < end; t++ {
		if w.heads[int(t)&(wheelSlots-1)] != 0 {
			return t, true
		}
	}
	return end, true
}
