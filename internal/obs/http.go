package obs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"net/url"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// maxKnobBody caps a PUT /knobs body.
const maxKnobBody = 4 << 10

// Mount registers the admin routes on mux:
//
//	GET /                   the dashboard (dashboard.go): live charts of the samples
//	GET /dashboard/*        its script and style sheet (embedded)
//	/debug/pprof/*          net/http/pprof (heap, goroutine, mutex, block, profile, trace, ...)
//	GET /metrics            Prometheus text format (private registry)
//	GET StatsPath           JSON Snapshot; ?history=N adds the last N values per figure
//	GET /knobs              JSON [{"name", "value", "help"}]
//	GET /knobs/{name}       one knob
//	PUT /knobs/{name}       body: the new value as text; answers {"name", "old", "new"}
//
// Knob errors are JSON {"error": "..."}: 404 unknown knob, 400 bad value,
// 405 read-only. Mount returns ErrRouteTaken (and registers nothing) if mux
// already serves one of these routes.
func (r *Reporter) Mount(mux *http.ServeMux) error {
	routes := []struct {
		pattern string
		h       http.HandlerFunc
	}{
		{"GET /{$}", serveDash("index.html", "text/html; charset=utf-8")},
		{"GET /dashboard/dash.js", serveDash("dash.js", "text/javascript; charset=utf-8")},
		{"GET /dashboard/dash.css", serveDash("dash.css", "text/css; charset=utf-8")},
		{"/debug/pprof/", pprof.Index},
		{"/debug/pprof/cmdline", pprof.Cmdline},
		{"/debug/pprof/profile", pprof.Profile},
		{"/debug/pprof/symbol", pprof.Symbol},
		{"/debug/pprof/trace", pprof.Trace},
		{"GET /metrics", promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}).ServeHTTP},
		{"GET " + r.opt.StatsPath, r.serveStats},
		{"GET /knobs", r.serveKnobs},
		{"GET /knobs/{name}", r.serveKnob},
		{"PUT /knobs/{name}", r.serveSetKnob},
	}
	for _, rt := range routes {
		method, path, ok := strings.Cut(rt.pattern, " ")
		if !ok {
			method, path = "GET", rt.pattern
		}
		path = strings.Replace(strings.Replace(path, "{name}", "x", 1), "{$}", "", 1)
		req := &http.Request{Method: method, URL: &url.URL{Path: path}, Host: "localhost"}
		if _, p := mux.Handler(req); p != "" && p != "/" {
			return fmt.Errorf("mount %s: %s is served by %q: %w", rt.pattern, path, p, ErrRouteTaken)
		}
	}
	for _, rt := range routes {
		mux.HandleFunc(rt.pattern, rt.h)
	}
	return nil
}

// Handler returns a new ServeMux with only the reporter's routes.
func (r *Reporter) Handler() http.Handler {
	mux := http.NewServeMux()
	if err := r.Mount(mux); err != nil {
		panic("obs: mount on a new mux: " + err.Error()) // cannot happen: the mux is empty
	}
	return mux
}

func (r *Reporter) serveStats(w http.ResponseWriter, req *http.Request) {
	h := 0
	if v := req.URL.Query().Get("history"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "history must be a count of samples"})
			return
		}
		h = n
	}
	s := r.Snapshot(h)
	if r.opt.Info != nil {
		s.Server = r.opt.Info()
	}
	writeJSON(w, http.StatusOK, s)
}

func (r *Reporter) serveKnobs(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, r.Knobs())
}

func (r *Reporter) serveKnob(w http.ResponseWriter, req *http.Request) {
	name := req.PathValue("name")
	for _, k := range r.Knobs() {
		if k.Name == name {
			writeJSON(w, http.StatusOK, k)
			return
		}
	}
	writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("unknown knob %q", name)})
}

func (r *Reporter) serveSetKnob(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, maxKnobBody+1))
	if err != nil || len(body) > maxKnobBody {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unreadable or oversized body"})
		return
	}
	c, err := r.SetKnob(req.PathValue("name"), string(body), req.RemoteAddr)
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, c)
	case errors.Is(err, ErrUnknownKnob):
		writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
	case errors.Is(err, ErrReadOnly):
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": err.Error()})
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	enc.Encode(v)
}
