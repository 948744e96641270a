package edge

import (
	"fmt"

	"github.com/edgedhq/edged/netpoll"
)

// Operations: what edged's ops tooling reads and turns on a live server.

// LoopStats returns the event loops' counters.
func (s *Server) LoopStats() []netpoll.LoopStats { return s.eng.Stats() }

// Engine returns the server's event-loop engine, for socket steering and the
// engine's own knobs (accept pause, output cap).
func (s *Server) Engine() *netpoll.Engine { return s.eng }

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

// Counters returns the server's monotonic counters by name (messages in and
// PUBLISH packets delivered, inbox entries stored and refused, dropped
// deliveries, closes by reason), as the activity reporter exports them.
func (s *Server) Counters() map[string]int64 {
	st := s.Stats()
	m := map[string]int64{
		"messages_in": int64(st.Published), "messages_out": int64(s.sentTotal()), "inbox_stored": int64(st.Stored),
		"inbox_full": int64(st.InboxFull), "deliveries_dropped": int64(st.Dropped),
		"store_full": int64(st.StoreFull), "new_inbox_rate": int64(st.NewInboxRate),
		"notices_dropped": int64(st.NoticesDropped), "inbox_expired": int64(st.Expired),
		"inbox_purged":                      int64(st.Purged),
		"subscribe_filters_over_packet_cap": int64(st.FiltersOverPacket),
		"subscribe_filters_over_client_cap": int64(st.FiltersOverClient),
	}
	for reason, n := range st.Closes {
		m["closes_"+reason] = int64(n)
	}
	if d := st.Disk; d != nil {
		m["store_records"], m["store_written_bytes"], m["store_fsyncs"] = int64(d.Records), int64(d.BytesWritten), int64(d.Fsyncs)
		m["store_write_errors"], m["store_compactions"] = int64(d.WriteErrors), int64(d.Compactions)
	}
	s.pushCounters(m)
	return m
}

// Gauges returns the server's levels by name: connections, clients and
// the bytes held by the store (inboxes and retained messages).
func (s *Server) Gauges() map[string]int64 {
	m := map[string]int64{"connections": s.Connections(), "clients": s.Clients(), "store_bytes": s.held.Load()}
	if s.wal != nil {
		m["store_disk_bytes"] = s.wal.DiskBytes()
		m["store_failing"] = 0
		if s.wal.Failed() {
			m["store_failing"] = 1
		}
	}
	return m
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
