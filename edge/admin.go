package edge

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// MinAdminToken is the shortest admin bearer token accepted.
const MinAdminToken = 16

// The admin API's access policy, enforced by AdminGuard on every request to
// the admin listener (edged's routes and the ones mounted beside them):
//
//  1. The Host header must be an IP literal, "localhost", the host of
//     Config.AdminAddr or this machine's host name (os.Hostname, for an
//     admin address on every interface); other names get 421 Misdirected
//     Request. A web page that rebinds its own DNS name to the admin
//     address (DNS rebinding) sends that name and is refused.
//  2. GET /healthz is open to whoever reaches the listener.
//  3. With Config.AdminToken, every other request needs
//     "Authorization: Bearer TOKEN" (compared in constant time); without it
//     the answer is 401 with a WWW-Authenticate challenge.
//  4. Without a token the admin listener must be on a loopback address
//     (New refuses any other: ErrBadConfig). Reads (GET and HEAD outside
//     /debug/pprof/) are then open to its peers; privileged requests (any
//     other method: group changes, knobs; and all of /debug/pprof/, which
//     exposes memory and costs CPU) are served only to loopback peers and
//     never to a request a browser marks as cross-site (Sec-Fetch-Site, or
//     an Origin naming another host): 403.
//
// The token travels in clear text (no TLS): off loopback, keep the admin
// address on a private network.

// AdminGuard wraps h with the admin access policy above.
func (s *Server) AdminGuard(h http.Handler) http.Handler {
	host := adminHost(s.cfg.AdminAddr)
	self, _ := os.Hostname()
	self = strings.ToLower(self)
	token := s.cfg.AdminToken
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !allowedHost(r.Host, host) && !allowedHost(r.Host, self) {
			writeJSON(w, http.StatusMisdirectedRequest, map[string]any{"error": "host " + r.Host + " is not this admin address"})
			return
		}
		if r.Method == http.MethodGet && r.URL.Path == "/healthz" {
			h.ServeHTTP(w, r)
			return
		}
		if len(token) > 0 {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), token) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="edged admin"`)
				writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "admin token required (Authorization: Bearer)"})
				return
			}
		}
		if privileged(r) {
			if !loopbackPeer(r.RemoteAddr) && len(token) == 0 {
				writeJSON(w, http.StatusForbidden, map[string]any{"error": "without an admin token, changes and profiles are served to loopback peers only"})
				return
			}
			if crossSite(r, host) {
				writeJSON(w, http.StatusForbidden, map[string]any{"error": "cross-site request refused"})
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// checkAdmin enforces rule 4 of the admin policy on the configuration.
func (c *Config) checkAdmin() error {
	if c.AdminAddr == "" {
		return nil
	}
	if len(c.AdminToken) > 0 && len(c.AdminToken) < MinAdminToken {
		return fmt.Errorf("check config: admin token shorter than %d bytes: %w", MinAdminToken, ErrBadConfig)
	}
	if len(c.AdminToken) == 0 && !LoopbackAddr(c.AdminAddr) {
		return fmt.Errorf("check config: admin address %s is not loopback and there is no admin token: %w", c.AdminAddr, ErrBadConfig)
	}
	return nil
}

// LoopbackAddr reports whether host:port names a loopback address: a
// loopback IP literal or "localhost". Other names and an empty host (every
// interface) are not loopback.
func LoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// adminHost is the lower-case host of the admin address ("" if none).
func adminHost(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	return strings.ToLower(strings.TrimSuffix(host, "."))
}

// allowedHost applies rule 1 to a Host header (host or host:port). An empty
// Host (HTTP/1.0) carries no name to rebind and is allowed.
func allowedHost(hostport, adminHost string) bool {
	if hostport == "" {
		return true
	}
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	return host == "localhost" || (adminHost != "" && host == adminHost)
}

// privileged reports whether r changes state or takes a profile.
func privileged(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return true
	}
	return strings.HasPrefix(r.URL.Path, "/debug/pprof/")
}

func loopbackPeer(remote string) bool {
	ap, err := netip.ParseAddrPort(remote)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// crossSite reports whether a browser sent r on behalf of another site:
// Sec-Fetch-Site "cross-site" or "same-site" (the Fetch Metadata spec), or
// an Origin whose host fails rule 1. Tools such as curl and edgectl send
// neither header.
func crossSite(r *http.Request, adminHost string) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "cross-site", "same-site":
		return true
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return false
	}
	_, rest, ok := strings.Cut(o, "://")
	return !ok || !allowedHost(rest, adminHost)
}

// Mux returns a new admin ServeMux with the admin HTTP API:
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
//	DELETE /inboxes?user=ID               the same for any id ("." and ".." too; edgectl uses it)
//
// Errors are JSON {"error": "..."} with 400 for invalid names. Routes can
// be added to it (Config.AdminRoutes: the observability endpoints). Mux
// enforces no access policy: wrap it in AdminGuard, as Start does.
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
			writeJSON(w, adminStatus(err), map[string]any{"error": adminErr(err)})
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
			writeJSON(w, adminStatus(err), map[string]any{"error": adminErr(err)})
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
	purge := func(w http.ResponseWriter, user string) {
		n, bytes, ok := s.PurgeInbox(user)
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]any{"error": "no such inbox"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"purged": n, "bytes": bytes})
	}
	mux.HandleFunc("DELETE /inboxes/{user}", func(w http.ResponseWriter, r *http.Request) {
		purge(w, r.PathValue("user"))
	})
	// The query form takes any client id, "." and ".." included (the
	// path form gets those cleaned away by ServeMux, a 307 redirect).
	mux.HandleFunc("DELETE /inboxes", func(w http.ResponseWriter, r *http.Request) {
		user := r.URL.Query().Get("user")
		if user == "" {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": "want ?user=ID"})
			return
		}
		purge(w, user)
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
	Connections int64  `json:"connections"`
	Clients     int64  `json:"clients"`
	Published   uint64 `json:"published"`
	// MessagesOut counts the PUBLISH packets written to clients, summed
	// over the loops (/metrics messages_out; not in /stats, whose fields
	// are fixed).
	MessagesOut  uint64 `json:"-"`
	Stored       uint64 `json:"stored"`
	InboxFull    uint64 `json:"inbox_full"`
	Dropped      uint64 `json:"dropped"`
	RetainedFull uint64 `json:"retained_full"`
	// StoreBytes is the memory held by inboxes and retained messages
	// (what Config.StoreMaxBytes caps); StoreMaxBytes is the cap.
	StoreBytes     int64  `json:"store_bytes"`
	StoreMaxBytes  int64  `json:"store_max_bytes"`
	StoreFull      uint64 `json:"store_full"`
	NewInboxRate   uint64 `json:"new_inbox_rate"`
	NoticesDropped uint64 `json:"notices_dropped"`
	Expired        uint64 `json:"expired"`
	Purged         uint64 `json:"purged"`
	// AccountingRepairs counts empty inboxes found holding bytes (a bug;
	// each is logged, rate-limited, and repaired). Process-wide.
	AccountingRepairs uint64            `json:"accounting_repairs"`
	Closes            map[string]uint64 `json:"closes"`

	// FiltersOverPacket and FiltersOverClient count SUBSCRIBE filters
	// refused with 0x80 past Config.MaxFiltersPerSubscribe and
	// Config.MaxSubscriptions.
	FiltersOverPacket uint64 `json:"filters_over_packet_cap"`
	FiltersOverClient uint64 `json:"filters_over_client_cap"`

	// Push are the push notification counters (nil if push is off).
	Push *PushStats `json:"push,omitempty"`
	// Disk is the durable store's work; nil without a data dir.
	Disk *DiskStats `json:"disk,omitempty"`
	// TLS is set when the server has TLS listeners: handshakes completed
	// (full, resumed), in progress, established sessions and KeyUpdates.
	// Failed handshakes are close reasons (Closes: tls_*).
	TLS *TLSStats `json:"tls,omitempty"`
	WS  *WSStats  `json:"ws,omitempty"`
	// Cluster counts the cross-node traffic (nil without Config.Cluster).
	Cluster *ClusterStats `json:"cluster,omitempty"`
}

// ClusterStats count a node's cross-node traffic (edge/cluster.go).
type ClusterStats struct {
	BatchesSent     uint64 `json:"batches_sent"`     // batches to other nodes (one per destination per loop iteration)
	RecordsSent     uint64 `json:"records_sent"`     // profile messages, receipts and moved entries in them
	BatchesFailed   uint64 `json:"batches_failed"`   // refused or timed out: their PUBACKs were not sent
	BatchesReceived uint64 `json:"batches_received"` // batches for this node (fast path and stream)
	FastStored      uint64 `json:"fast_stored"`      // of them: stored from the fast path (core NATS)
	Duplicates      uint64 `json:"duplicates"`       // of them: stored already (a lost fast-path reply), dropped
	Gaps            uint64 `json:"gaps"`             // of them: fast-path batches refused behind a predecessor in the stream
	Moved           uint64 `json:"moved"`            // inbox entries moved to the node a user went to
	Broadcasts      uint64 `json:"broadcasts"`       // generic publish batches broadcast
	Directory       int    `json:"directory"`        // users in this node's copy of the directory
}

// DiskStats describe the durable store (Config.DataDir).
type DiskStats struct {
	Records      uint64  `json:"records"`       // records logged
	BytesWritten uint64  `json:"bytes_written"` // bytes written to the log
	Writes       uint64  `json:"writes"`        // write(2) batches
	Fsyncs       uint64  `json:"fsyncs"`
	FsyncSeconds float64 `json:"fsync_seconds"` // total time in fsync
	WriteErrors  uint64  `json:"write_errors"`
	Compactions  uint64  `json:"compactions"`
	DiskBytes    int64   `json:"disk_bytes"` // the last snapshot plus the log since
	Failing      bool    `json:"failing"`    // writes fail: PUBACKs held, publishes refused (store_unavailable)
}

// WSStats are the WebSocket listeners' counters.
type WSStats struct {
	Upgrades   uint64 `json:"upgrades"`
	InProgress int64  `json:"in_progress"`
	Sessions   int64  `json:"sessions"`
	Pings      uint64 `json:"pings"`
}

// TLSStats are the TLS listeners' counters.
type TLSStats struct {
	Handshakes uint64 `json:"handshakes"`
	Resumed    uint64 `json:"resumed"`
	InProgress int64  `json:"in_progress"`
	Sessions   int64  `json:"sessions"`
	KeyUpdates uint64 `json:"key_updates"`
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats {
	st := s.counterStats()
	st.Connections, st.Clients = s.conns.Load(), s.reg.count.Load()
	st.RetainedFull, st.StoreBytes, st.StoreMaxBytes = s.stats.retainedFull.Load(), s.held.Load(), s.cfg.StoreMaxBytes
	st.AccountingRepairs, st.Closes = acctRepairs.Load(), s.closes.snapshot()
	st.Disk, st.Push = s.diskStats(), s.pushStatsPtr()
	if s.cfg.TLS != nil {
		t := s.cfg.TLS.Stats()
		st.TLS = &TLSStats{Handshakes: t.Handshakes, Resumed: t.Resumed, InProgress: t.InProgress,
			Sessions: t.Sessions, KeyUpdates: t.KeyUpdates}
	}
	if s.cfg.Cluster != nil {
		c := &s.clstats
		st.Cluster = &ClusterStats{BatchesSent: c.batches.Load(), RecordsSent: c.records.Load(),
			BatchesFailed: c.failed.Load(), BatchesReceived: c.received.Load(), Moved: c.moved.Load(),
			Broadcasts: c.broadcasts.Load(), Directory: s.cfg.Cluster.Users(),
			FastStored: c.fast.Load(), Duplicates: c.dups.Load(), Gaps: c.gaps.Load()}
	}
	if s.cfg.WS != nil {
		w := s.cfg.WS.Stats()
		st.WS = &WSStats{Upgrades: w.Upgrades, InProgress: w.InProgress, Sessions: w.Sessions, Pings: w.Pings}
	}
	return st
}

// counterStats returns the counters of Stats (FillCounters' part of it).
func (s *Server) counterStats() Stats {
	return Stats{
		Published:         s.stats.published.Load(),
		MessagesOut:       s.sentTotal(),
		Stored:            s.stats.stored.Load(),
		InboxFull:         s.stats.inboxFull.Load(),
		Dropped:           s.stats.dropped.Load(),
		StoreFull:         s.stats.storeFull.Load(),
		NewInboxRate:      s.stats.newInboxRate.Load(),
		NoticesDropped:    s.stats.notices.Load(),
		Expired:           s.stats.expired.Load(),
		Purged:            s.stats.purged.Load(),
		FiltersOverPacket: s.stats.overPacket.Load(),
		FiltersOverClient: s.stats.overClient.Load(),
	}
}

// Limits of GET /inboxes.
const (
	defaultInboxList = 100
	maxInboxList     = 10000
)

// adminStatus is the HTTP status for err: 503 when the store cannot write
// (retry later), 400 for bad input.
func adminStatus(err error) int {
	if errors.Is(err, ErrStoreUnavailable) {
		return http.StatusServiceUnavailable
	}
	return http.StatusBadRequest
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
