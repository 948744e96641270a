package obs

import (
	"strconv"
	"sync"

	"github.com/edgedhq/edged/netpoll"
)

// KindConnBacklog is the queue kind of Backlogs: a connection's output not
// yet taken by the kernel, in bytes.
const KindConnBacklog = "conn_backlog"

// Backlogs tracks the connections whose unwritten output is over a floor,
// for Options.Queues, at a cost proportional to those connections only.
// Note and Tick run on the connection's loop (from the Handler and from
// netpoll.LoopHandler.OnTick); Queues runs anywhere.
type Backlogs struct {
	floor int64
	name  func(h netpoll.Handle) string
	loops []backlogLoop
}

// backlogLoop is one loop's share: live is owned by the loop; mu guards
// pub, the copy Queues reads.
type backlogLoop struct {
	live map[netpoll.Handle]int64
	mu   sync.Mutex
	pub  []backlogEntry
	_    [40]byte // keep loops off each other's cache lines
}

type backlogEntry struct {
	h netpoll.Handle
	n int64
}

// NewBacklogs tracks backlogs of at least floor bytes on an engine with
// loops loops. name, if not nil, names a connection in Queues (it is called
// from the caller of Queues, so it must be safe there); the default is
// "L<loop>/<slot>".
func NewBacklogs(loops int, floor int64, name func(netpoll.Handle) string) *Backlogs {
	b := &Backlogs{floor: max(floor, 1), name: name, loops: make([]backlogLoop, loops)}
	for i := range b.loops {
		b.loops[i].live = map[netpoll.Handle]int64{}
	}
	if b.name == nil {
		b.name = func(h netpoll.Handle) string {
			return "L" + strconv.Itoa(int(h>>56)) + "/" + strconv.FormatUint(uint64(uint32(h)), 10)
		}
	}
	return b
}

// Note starts tracking c if its backlog is at or over the floor; call it on
// c's loop after writing to c.
func (b *Backlogs) Note(c *netpoll.Conn) {
	if q := int64(c.Queued()); q >= b.floor {
		b.loops[c.LoopID()].live[c.Handle()] = q
	}
}

// Tick refreshes the tracked connections of loop l, dropping those that
// drained below the floor or closed, and publishes them for Queues. Call it
// from OnTick.
func (b *Backlogs) Tick(l *netpoll.Loop) {
	bl := &b.loops[l.ID()]
	if len(bl.live) == 0 && len(bl.pub) == 0 {
		return
	}
	for h := range bl.live {
		c := l.Conn(h)
		if c == nil || int64(c.Queued()) < b.floor {
			delete(bl.live, h)
			continue
		}
		bl.live[h] = int64(c.Queued())
	}
	bl.mu.Lock()
	bl.pub = bl.pub[:0]
	for h, n := range bl.live {
		bl.pub = append(bl.pub, backlogEntry{h, n})
	}
	bl.mu.Unlock()
}

// Queues returns the tracked backlogs, for Options.Queues.
func (b *Backlogs) Queues() []QueueInfo {
	var es []backlogEntry
	for i := range b.loops {
		bl := &b.loops[i]
		bl.mu.Lock()
		es = append(es, bl.pub...)
		bl.mu.Unlock()
	}
	out := make([]QueueInfo, len(es))
	for i, e := range es {
		out[i] = QueueInfo{Kind: KindConnBacklog, Name: b.name(e.h), Len: e.n}
	}
	return out
}
