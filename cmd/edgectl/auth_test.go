package main

import (
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge"
	"github.com/edgedhq/edged/internal/obs"
)

// TestAdminTokenVerbs runs every verb that talks to the admin API against a
// real edge server with an admin token and the reporter mounted: without
// the token each is refused (401, exit 1, with a hint), with
// --admin-token-file or $EDGED_ADMIN_TOKEN each works.
func TestAdminTokenVerbs(t *testing.T) {
	const token = "edgectl-admin-token-0123456789"
	var rep *obs.Reporter
	s, err := edge.New(edge.Config{Addr: "127.0.0.1:0", Loops: 1, Auth: edge.AuthLoopbackAnonymous,
		AdminAddr: "127.0.0.1:0", AdminToken: []byte(token),
		AdminRoutes: func(mux *http.ServeMux) error { return rep.Mount(mux) }})
	if err != nil {
		t.Fatal(err)
	}
	var inflight atomic.Int64
	inflight.Store(32)
	rep, err = obs.New(obs.Options{LoopStats: s.LoopStats, Counters: func() map[string]int64 { return s.Stats().Counters() },
		Gauges:   func() map[string]int64 { return s.Stats().Gauges() },
		Info:     func() any { return s.Stats() },
		Knobs:    []obs.Knob{obs.IntKnob("inflight", "window", &inflight, 1, 1024, func(n int64) { s.SetInflight(int(n)) })},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rep.Start()
	defer rep.Close()
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	admin := "http://" + s.AdminAddr().String()
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	os.WriteFile(file, []byte(token+"\n"), 0o600)
	wrong := filepath.Join(dir, "wrong")
	os.WriteFile(wrong, []byte("not-the-admin-token-000\n"), 0o600)
	prof := filepath.Join(dir, "g.pprof")
	verbs := [][]string{
		{"group", "add", "team", "alice"},
		{"group", "list"},
		{"group", "remove", "team", "alice"},
		{"knob", "get", "inflight"},
		{"knob", "set", "inflight", "7"},
		{"stats"},
		{"top", "--once"},
		{"profile", "goroutine", "-o", prof},
	}
	t.Setenv(adminTokenEnv, "")
	for _, v := range verbs {
		name := strings.Join(v, " ")
		_, errOut, code := edgectl(append(v, "--admin", admin)...)
		if code != exitFailed || !strings.Contains(errOut, "401") || !strings.Contains(errOut, "give --admin-token-file") {
			t.Errorf("%s without a token: exit %d, %q; want exit 1 with 401 and a hint", name, code, errOut)
		}
		_, errOut, code = edgectl(append(v, "--admin", admin, "--admin-token-file", wrong)...)
		if code != exitFailed || !strings.Contains(errOut, "token was refused") {
			t.Errorf("%s with a wrong token: exit %d, %q", name, code, errOut)
		}
		if _, errOut, code = edgectl(append(v, "--admin", admin, "--admin-token-file", file)...); code != exitOK {
			t.Errorf("%s with --admin-token-file: exit %d, %q", name, code, errOut)
		}
	}
	if s.Inflight() != 7 {
		t.Fatalf("knob set with the token did not reach the server: inflight %d", s.Inflight())
	}
	if fi, err := os.Stat(prof); err != nil || fi.Size() == 0 {
		t.Fatalf("profile with the token: %v", err)
	}
	t.Setenv(adminTokenEnv, token)
	for _, v := range verbs {
		if _, errOut, code := edgectl(append(v, "--admin", admin)...); code != exitOK {
			t.Errorf("%s with $%s: exit %d, %q", strings.Join(v, " "), adminTokenEnv, code, errOut)
		}
	}
	if _, errOut, code := edgectl("stats", "--admin", admin, "--admin-token-file", filepath.Join(dir, "none")); code != exitFailed || !strings.Contains(errOut, "read admin token file") {
		t.Fatalf("missing token file: exit %d, %q", code, errOut)
	}
}
