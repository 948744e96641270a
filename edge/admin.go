package edge

import (
	"encoding/json"
	"errors"
	"net/http"
)

// AdminHandler returns the admin HTTP API:
//
//	GET    /healthz                       200 "ok"
//	GET    /groups                        {"groups": [...]}
//	GET    /groups/{group}                {"group": g, "members": [...]}
//	PUT    /groups/{group}/members/{user} 201 added, 200 already a member
//	DELETE /groups/{group}/members/{user} 200 removed, 404 not a member
//	GET    /stats                         connections, clients, messages, closes by reason
//
// Errors are JSON {"error": "..."} with 400 for invalid names. The mux is
// exported through Mux so that observability endpoints can be added.
func (s *Server) AdminHandler() http.Handler { return s.Mux() }

// Mux returns a new admin ServeMux with the routes of AdminHandler.
func (s *Server) Mux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /groups", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"groups": s.groups.List()})
	})
	mux.HandleFunc("GET /groups/{group}", func(w http.ResponseWriter, r *http.Request) {
		g := r.PathValue("group")
		if !ValidID(g) {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid group name"})
			return
		}
		m := s.groups.Members(g)
		if m == nil {
			m = []string{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"group": g, "members": m})
	})
	mux.HandleFunc("PUT /groups/{group}/members/{user}", func(w http.ResponseWriter, r *http.Request) {
		added, err := s.groups.Add(r.PathValue("group"), r.PathValue("user"))
		switch {
		case err != nil:
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": adminErr(err)})
		case added:
			writeJSON(w, http.StatusCreated, map[string]any{"added": true})
		default:
			writeJSON(w, http.StatusOK, map[string]any{"added": false})
		}
	})
	mux.HandleFunc("DELETE /groups/{group}/members/{user}", func(w http.ResponseWriter, r *http.Request) {
		removed, err := s.groups.Remove(r.PathValue("group"), r.PathValue("user"))
		switch {
		case err != nil:
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": adminErr(err)})
		case removed:
			writeJSON(w, http.StatusOK, map[string]any{"removed": true})
		default:
			writeJSON(w, http.StatusNotFound, map[string]any{"error": "not a member"})
		}
	})
	stats := func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, s.Stats()) }
	mux.HandleFunc("GET /server/stats", stats)
	if s.cfg.AdminRoutes == nil {
		mux.HandleFunc("GET /stats", stats) // with a reporter mounted, /stats is its snapshot
	}
	return mux
}

// Stats is a snapshot of the server's counters.
type Stats struct {
	Connections  int64             `json:"connections"`
	Clients      int64             `json:"clients"`
	Published    uint64            `json:"published"`
	Stored       uint64            `json:"stored"`
	InboxFull    uint64            `json:"inbox_full"`
	Dropped      uint64            `json:"dropped"`
	RetainedFull uint64            `json:"retained_full"`
	Closes       map[string]uint64 `json:"closes"`

	// FiltersOverPacket and FiltersOverClient count SUBSCRIBE filters
	// refused with 0x80 past Config.MaxFiltersPerSubscribe and
	// Config.MaxSubscriptions.
	FiltersOverPacket uint64 `json:"filters_over_packet_cap"`
	FiltersOverClient uint64 `json:"filters_over_client_cap"`
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats {
	return Stats{
		Connections:  s.conns.Load(),
		Clients:      s.reg.count.Load(),
		Published:    s.stats.published.Load(),
		Stored:       s.stats.stored.Load(),
		InboxFull:    s.stats.inboxFull.Load(),
		Dropped:      s.stats.dropped.Load(),
		RetainedFull: s.stats.retainedFull.Load(),
		Closes:       s.closes.snapshot(),

		FiltersOverPacket: s.stats.overPacket.Load(),
		FiltersOverClient: s.stats.overClient.Load(),
	}
}

func adminErr(err error) string {
	switch {
	case errors.Is(err, ErrBadGroup):
		return "invalid group name"
	case errors.Is(err, ErrBadUserID):
		return "invalid user id"
	}
	return err.Error()
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
