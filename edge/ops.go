package edge

import (
	"fmt"
	"net"

	"github.com/edgedhq/edged/netpoll"
)

// Operations: what edged's ops tooling reads and turns on a live server.

// LoopStats returns the event loops' counters.
func (s *Server) LoopStats() []netpoll.LoopStats { return s.eng.Stats() }

// Listeners describes the client listeners, for socket steering: one group
// per address (Config.Addr, then Config.ExtraAddrs), each with a listening
// socket per loop when the kernel has SO_REUSEPORT.
type Listeners struct {
	// ReusePort reports whether each loop has its own SO_REUSEPORT
	// listener in each group (false: the fallback, one listener per
	// address whose connections are handed round the loops).
	ReusePort bool
	// Loops is the number of event loops.
	Loops int
	// Groups are the listener groups by address, in Addrs order.
	Groups []ListenerGroup
}

// ListenerGroup is one address's listening sockets.
type ListenerGroup struct {
	Addr net.Addr
	// FDs are the listening sockets, index = loop (one in the fallback).
	// The server owns them: they are for attaching steering programs,
	// never for closing.
	FDs []int
}

// Listeners returns the client listeners (after New, before and after
// Start).
func (s *Server) Listeners() Listeners {
	l := Listeners{ReusePort: s.eng.ReusePort(), Loops: s.eng.NumLoops()}
	for g, a := range s.eng.Addrs() {
		l.Groups = append(l.Groups, ListenerGroup{Addr: a, FDs: s.eng.GroupFDs(g)})
	}
	return l
}

// PauseAccepts stops (true) or resumes (false) accepting new connections;
// established ones are not affected and new ones wait in the kernel's listen
// backlog (netpoll.Engine.PauseAccepts).
func (s *Server) PauseAccepts(pause bool) { s.eng.PauseAccepts(pause) }

// AcceptsPaused reports whether PauseAccepts(true) is in effect.
func (s *Server) AcceptsPaused() bool { return s.eng.AcceptsPaused() }

// MaxQueued returns the per-connection cap on unread output, in bytes
// (Config.MaxQueued, a knob).
func (s *Server) MaxQueued() int { return s.eng.MaxQueued() }

// SetMaxQueued changes the per-connection cap on unread output for every
// later write; n <= 0 is refused.
func (s *Server) SetMaxQueued(n int) error { return s.eng.SetMaxQueued(n) }

// Backlogs returns the longest output backlogs (up to 16 per loop): the
// connections whose peers do not read.
func (s *Server) Backlogs() []netpoll.Backlog { return s.eng.Backlogs() }

// Inflight returns the current in-flight window.
func (s *Server) Inflight() int { return int(s.inflight.Load()) }

// SetInflight changes the in-flight window for every later delivery; n must
// be in [1, 1024]. A smaller window takes effect as acknowledgements arrive.
func (s *Server) SetInflight(n int) error {
	if n < 1 || n > 1024 {
		return fmt.Errorf("set in-flight window: %d outside [1, 1024]: %w", n, ErrBadConfig)
	}
	s.inflight.Store(int64(n))
	return nil
}

// Counters returns st's monotonic counters by name (messages in and
// PUBLISH packets delivered, inbox entries stored and refused, dropped
// deliveries, closes by reason, the store's and push's work), as the
// activity reporter exports them (/metrics).
func (st Stats) Counters() map[string]int64 {
	m := make(map[string]int64, 32)
	st.fillCounters(m, nil)
	return m
}

// FillCounters writes Stats().Counters() into m, allocating nothing once
// m holds every name (unless push notifications are configured): the
// activity reporter asks for them each second, and an idle server's
// garbage is RSS until the next collection (BENCHMARKS.md, issue #12).
func (s *Server) FillCounters(m map[string]int64) {
	st := s.counterStats()
	var d DiskStats
	if s.diskStatsInto(&d) {
		st.Disk = &d
	}
	st.Push = s.pushStatsPtr()
	st.fillCounters(m, &s.closes)
}

// FillGauges writes Stats().Gauges() into m, allocating nothing once m
// holds every name.
func (s *Server) FillGauges(m map[string]int64) {
	st := Stats{Connections: s.conns.Load(), Clients: s.reg.count.Load(), StoreBytes: s.held.Load()}
	var d DiskStats
	if s.diskStatsInto(&d) {
		st.Disk = &d
	}
	st.fillGauges(m)
}

// fillCounters writes st's counters into m; with closes set, the closes by
// reason are read from it under precomputed names instead of st.Closes.
func (st *Stats) fillCounters(m map[string]int64, closes *reasonCounters) {
	m["messages_in"], m["messages_out"], m["inbox_stored"] = int64(st.Published), int64(st.MessagesOut), int64(st.Stored)
	m["inbox_full"], m["deliveries_dropped"] = int64(st.InboxFull), int64(st.Dropped)
	m["store_full"], m["new_inbox_rate"] = int64(st.StoreFull), int64(st.NewInboxRate)
	m["notices_dropped"], m["inbox_expired"] = int64(st.NoticesDropped), int64(st.Expired)
	m["inbox_purged"] = int64(st.Purged)
	m["subscribe_filters_over_packet_cap"] = int64(st.FiltersOverPacket)
	m["subscribe_filters_over_client_cap"] = int64(st.FiltersOverClient)
	if closes != nil {
		for i := range closes {
			m[closeNames[i]] = int64(closes[i].Load())
		}
	} else {
		for reason, n := range st.Closes {
			m["closes_"+reason] = int64(n)
		}
	}
	if d := st.Disk; d != nil {
		m["store_records"], m["store_written_bytes"], m["store_fsyncs"] = int64(d.Records), int64(d.BytesWritten), int64(d.Fsyncs)
		m["store_write_errors"], m["store_compactions"] = int64(d.WriteErrors), int64(d.Compactions)
	}
	if p := st.Push; p != nil {
		m["push_notifications_sent"] = int64(p.Sent)
		m["push_posts"] = int64(p.Posts)
		m["push_retries"] = int64(p.Retries)
		m["push_collapsed"] = int64(p.Collapsed)
		for reason, n := range p.Dropped {
			m["push_dropped_"+reason] = int64(n)
		}
	}
}

// Gauges returns st's levels by name: connections, clients, the bytes
// held by the store (inboxes and retained messages) and, with a data dir,
// its size on disk and whether it is failing, as the activity reporter
// exports them (/metrics).
func (st Stats) Gauges() map[string]int64 {
	m := make(map[string]int64, 8)
	st.fillGauges(m)
	return m
}

func (st *Stats) fillGauges(m map[string]int64) {
	m["connections"], m["clients"], m["store_bytes"] = st.Connections, st.Clients, st.StoreBytes
	if d := st.Disk; d != nil {
		m["store_disk_bytes"] = d.DiskBytes
		m["store_failing"] = 0
		if d.Failing {
			m["store_failing"] = 1
		}
	}
}

// inboxWatchFloor is the inbox length at which a client is watched for the
// queue alarms: checking at the crossing costs nothing per message, and a
// floor well under the alarm threshold (1,000 by default) lets the report
// show a queue's growth before it alarms.
const inboxWatchFloor = 100

func (s *Server) watchInbox(idx uint32) {
	s.bigMu.Lock()
	if s.big == nil {
		s.big = make(map[uint32]struct{})
	}
	s.big[idx] = struct{}{}
	s.bigMu.Unlock()
}

// InboxQueue is one user's inbox in LongInboxes.
type InboxQueue struct {
	User string
	Len  int // messages waiting, in flight included
}

// LongInboxes returns the inboxes holding at least inboxWatchFloor/2
// messages among those that reached inboxWatchFloor; an inbox that drained
// below that is forgotten. Safe for concurrent use; its cost is in the
// number of long inboxes only.
func (s *Server) LongInboxes() []InboxQueue {
	s.bigMu.Lock()
	idxs := make([]uint32, 0, len(s.big))
	for idx := range s.big {
		idxs = append(idxs, idx)
	}
	s.bigMu.Unlock()
	var out []InboxQueue
	for _, idx := range idxs {
		cl := s.reg.at(idx)
		n := 0
		var user string
		if cl != nil {
			cl.mu.Lock()
			if !cl.dead {
				n, user = cl.box().len(), string(cl.idBytes())
			}
			cl.mu.Unlock()
		}
		if n < inboxWatchFloor/2 {
			s.bigMu.Lock()
			delete(s.big, idx)
			s.bigMu.Unlock()
			continue
		}
		out = append(out, InboxQueue{User: user, Len: n})
	}
	return out
}
