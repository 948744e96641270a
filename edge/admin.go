package edge

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
)

// AdminHandler returns the admin HTTP API:
//
//	GET    /healthz                       200 "ok"
//	GET    /groups                        {"groups": [...]}
//	GET    /groups/{group}                {"group": g, "members": [...]}
//	PUT    /groups/{group}/members/{user} 201 added, 200 already a member
//	DELETE /groups/{group}/members/{user} 200 removed, 404 not a member
//	GET    /stats                         connections, clients, messages, closes by reason
//	GET    /inboxes?limit=N               {"inboxes": [...], "total": n, "bytes": b}: the N
//	                                      largest inboxes by bytes held (default 100, at most 10,000)
//	DELETE /inboxes/{user}                200 {"purged": n, "bytes": b}, 404 no such inbox
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
	mux.HandleFunc("GET /inboxes", func(w http.ResponseWriter, r *http.Request) {
		limit := defaultInboxList
		if v := r.URL.Query().Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > maxInboxList {
				writeJSON(w, http.StatusBadRequest, map[string]any{"error": "limit must be 1-10000"})
				return
			}
			limit = n
		}
		top, total, bytes := s.Inboxes(limit)
		writeJSON(w, http.StatusOK, map[string]any{"inboxes": top, "total": total, "bytes": bytes})
	})
	mux.HandleFunc("DELETE /inboxes/{user}", func(w http.ResponseWriter, r *http.Request) {
		n, bytes, ok := s.PurgeInbox(r.PathValue("user"))
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]any{"error": "no such inbox"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"purged": n, "bytes": bytes})
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
	Connections  int64  `json:"connections"`
	Clients      int64  `json:"clients"`
	Published    uint64 `json:"published"`
	Stored       uint64 `json:"stored"`
	InboxFull    uint64 `json:"inbox_full"`
	Dropped      uint64 `json:"dropped"`
	RetainedFull uint64 `json:"retained_full"`
	// StoreBytes is the memory held by inboxes and retained messages
	// (what Config.StoreMaxBytes caps); StoreMaxBytes is the cap.
	StoreBytes     int64             `json:"store_bytes"`
	StoreMaxBytes  int64             `json:"store_max_bytes"`
	StoreFull      uint64            `json:"store_full"`
	NewInboxRate   uint64            `json:"new_inbox_rate"`
	NoticesDropped uint64            `json:"notices_dropped"`
	Expired        uint64            `json:"expired"`
	Purged         uint64            `json:"purged"`
	Closes         map[string]uint64 `json:"closes"`
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats {
	return Stats{
		Connections:    s.conns.Load(),
		Clients:        s.reg.count.Load(),
		Published:      s.stats.published.Load(),
		Stored:         s.stats.stored.Load(),
		InboxFull:      s.stats.inboxFull.Load(),
		Dropped:        s.stats.dropped.Load(),
		RetainedFull:   s.stats.retainedFull.Load(),
		StoreBytes:     s.held.Load(),
		StoreMaxBytes:  s.cfg.StoreMaxBytes,
		StoreFull:      s.stats.storeFull.Load(),
		NewInboxRate:   s.stats.newInboxRate.Load(),
		NoticesDropped: s.stats.notices.Load(),
		Expired:        s.stats.expired.Load(),
		Purged:         s.stats.purged.Load(),
		Closes:         s.closes.snapshot(),
	}
}

// Limits of GET /inboxes.
const (
	defaultInboxList = 100
	maxInboxList     = 10000
)

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
