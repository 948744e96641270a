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

// Counters returns the server's monotonic counters by name (messages in,
// inbox entries stored and refused, dropped deliveries, closes by reason),
// as the activity reporter exports them.
func (s *Server) Counters() map[string]int64 {
	st := s.Stats()
	m := map[string]int64{
		"messages_in": int64(st.Published), "inbox_stored": int64(st.Stored),
		"inbox_full": int64(st.InboxFull), "deliveries_dropped": int64(st.Dropped),
	}
	for reason, n := range st.Closes {
		m["closes_"+reason] = int64(n)
	}
	return m
}

// Gauges returns the server's levels by name: connections and clients.
func (s *Server) Gauges() map[string]int64 {
	return map[string]int64{"connections": s.Connections(), "clients": s.Clients()}
}
