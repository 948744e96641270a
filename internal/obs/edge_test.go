package obs

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge"
	"github.com/edgedhq/edged/internal/testenv"
)

// edgeSources are the sources an edge.Server gives the reporter: the same
// lines cmd/edged uses to plug it in.
func edgeSources(s *edge.Server) Options {
	return Options{
		FillCounters: s.FillCounters,
		FillGauges:   s.FillGauges,
		Info:         func() any { return s.Stats() },
	}
}

// startEdge runs a real edge server on a loopback port (cfg's Addr, Loops,
// Auth and Logger are set here) and builds a reporter on its sources.
func startEdge(t *testing.T, cfg edge.Config) (*edge.Server, Options, *Reporter) {
	t.Helper()
	cfg.Addr, cfg.Loops, cfg.Auth = "127.0.0.1:0", 2, edge.AuthLoopbackAnonymous
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := edge.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	opt := edgeSources(s)
	opt.Logger = cfg.Logger
	r, err := New(opt)
	if err != nil {
		t.Fatal(err)
	}
	return s, opt, r
}

// TestEdgeEndToEnd runs a real edged server, mounts the reporter beside the
// server's own admin routes, publishes with mosquitto_pub and checks that
// the figures follow.
func TestEdgeEndToEnd(t *testing.T) {
	_, err := exec.LookPath("mosquitto_pub")
	testenv.Require(t, err == nil, "mosquitto_pub not installed (apt-get install mosquitto-clients)")
	s, opt, r := startEdge(t, edge.Config{})
	mux := s.Mux()
	if err := r.Mount(mux); err == nil {
		t.Fatal("Mount beside edge's own GET /stats succeeded; want ErrRouteTaken")
	}
	opt.StatsPath = "/obs/stats"
	if r, err = New(opt); err != nil {
		t.Fatal(err)
	}
	if err := r.Mount(mux); err != nil {
		t.Fatalf("Mount with StatsPath %s: %v", opt.StatsPath, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	base := "http://" + ln.Addr().String()
	r.Sample()

	const n = 200
	host, port, _ := net.SplitHostPort(s.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pub := exec.CommandContext(ctx, "mosquitto_pub", "-h", host, "-p", port, "-q", "1", "-t", "obs/load", "-l")
	pub.Stdin = strings.NewReader(strings.Repeat("reading\n", n))
	if out, err := pub.CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v: %s", err, out)
	}
	waitFor(t, "the server to count the publishes", 10*time.Second, func() bool { return s.Stats().Published >= n })
	time.Sleep(10 * time.Millisecond)
	r.Sample()
	_, m := httpDo(t, "GET", base+"/metrics", "")
	if v, ok := metricValue(m, "edged_messages_in_total"); !ok || v < n {
		t.Fatalf("edged_messages_in_total = %v (%v), want >= %d", v, ok, n)
	}
	if v, ok := metricValue(m, `edged_closes_total{reason="disconnect"}`); !ok || v < 1 {
		t.Fatalf(`edged_closes_total{reason="disconnect"} = %v (%v), want >= 1`, v, ok)
	}
	if _, ok := metricValue(m, "edged_connections"); !ok {
		t.Fatal("/metrics lacks edged_connections")
	}
	lintMetrics(t, m)
	code, body := httpDo(t, "GET", base+"/obs/stats", "")
	if code != 200 || !strings.Contains(body, `"messages_in"`) || !strings.Contains(body, `"published": 200`) {
		t.Fatalf("/obs/stats: %d %.400s", code, body)
	}
	if code, body := httpDo(t, "GET", base+"/healthz", ""); code != 200 {
		t.Fatalf("the server's own route broke: %d %s", code, body)
	}
}

// TestEdgePushMetrics: the push notification counters reach /metrics under
// promlint-clean names, drops as one counter labelled by reason.
func TestEdgePushMetrics(t *testing.T) {
	_, err := exec.LookPath("mosquitto_pub")
	testenv.Require(t, err == nil, "mosquitto_pub not installed (apt-get install mosquitto-clients)")
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) }))
	defer hook.Close()
	s, _, r := startEdge(t, edge.Config{Push: edge.PushConfig{Webhook: hook.URL}})
	base := startAdmin(t, r)
	host, port, _ := net.SplitHostPort(s.Addr().String())
	if out, err := exec.Command("mosquitto_pub", "-h", host, "-p", port, "-i", "alice", "-q", "1", "-t", "u/bob/m1", "-m", "hi").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v: %s", err, out)
	}
	waitFor(t, "the notification posted", 10*time.Second, func() bool { return s.Stats().Push.Sent == 1 })
	r.Sample()
	_, m := httpDo(t, "GET", base+"/metrics", "")
	for series, want := range map[string]float64{
		"edged_push_notifications_sent_total":           1,
		"edged_push_posts_total":                        1,
		`edged_push_dropped_total{reason="queue_full"}`: 0,
		`edged_push_dropped_total{reason="failed"}`:     0,
	} {
		if v, ok := metricValue(m, series); !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", series, v, ok, want)
		}
	}
	lintMetrics(t, m)
}
