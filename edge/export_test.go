package edge

import "net/http"

// Test-only views of the Server, kept off its public face: the figures are
// in Stats, the handler is AdminGuard(Mux()).

// CloseCounts returns the number of closed connections per reason.
func (s *Server) CloseCounts() map[string]uint64 { return s.closes.snapshot() }

// CloseCount returns the number of connections closed for reason r.
func (s *Server) CloseCount(r Reason) uint64 { return s.closes[r].Load() }

// Connections returns the number of open client connections.
func (s *Server) Connections() int64 { return s.conns.Load() }

// Clients returns the number of client records (connected, persistent, or
// with undelivered messages).
func (s *Server) Clients() int64 { return s.reg.count.Load() }

// InboxLen returns the number of messages in user's inbox (0 if unknown).
func (s *Server) InboxLen(user string) int {
	cl := s.reg.lock([]byte(user), false)
	if cl == nil {
		return 0
	}
	defer cl.mu.Unlock()
	return cl.box().len()
}

// PushStats returns the push counters (zero if push is off).
func (s *Server) PushStats() PushStats {
	if p := s.Stats().Push; p != nil {
		return *p
	}
	return PushStats{Dropped: map[string]uint64{}}
}

// Counters returns Stats().Counters().
func (s *Server) Counters() map[string]int64 { return s.Stats().Counters() }

// AdminHandler is the admin API as Start serves it.
func (s *Server) AdminHandler() http.Handler { return s.AdminGuard(s.Mux()) }
