package obs

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/edgedhq/edged/internal/echo"
	"github.com/edgedhq/edged/netpoll"
	"go.uber.org/goleak"
)

// TestMain runs the benchmark's client side when re-executed as a child
// (OBS_CHILD_DIAL=addr,n,src) and checks for leaked goroutines otherwise.
func TestMain(m *testing.M) {
	if spec := os.Getenv("OBS_CHILD_DIAL"); spec != "" {
		os.Exit(childDial(spec))
	}
	goleak.VerifyTestMain(m)
}

// childDial opens n connections from src to addr, prints "ready", and holds
// them until stdin closes.
func childDial(spec string) int {
	parts := strings.Split(spec, ",")
	if len(parts) != 3 {
		fmt.Fprintln(os.Stderr, "OBS_CHILD_DIAL wants addr,n,src")
		return 2
	}
	n, err := strconv.Atoi(parts[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(parts[2])}}
	conns := make([]net.Conn, 0, n)
	for i := 0; i < n; i++ {
		c, err := d.Dial("tcp", parts[0])
		if err != nil {
			fmt.Fprintf(os.Stderr, "dial %d: %v\n", i, err)
			return 1
		}
		conns = append(conns, c)
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
	return 0
}

// startEngine runs a netpoll engine on 127.0.0.1:0 for the test.
func startEngine(t testing.TB, cfg netpoll.Config) *netpoll.Engine {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Handler == nil {
		cfg.Handler = echo.Handler{}
	}
	if cfg.Logf == nil {
		cfg.Logf = t.Logf
	}
	e, err := netpoll.New(cfg)
	if err != nil {
		t.Fatalf("netpoll.New: %v", err)
	}
	if err := e.Start(); err != nil {
		e.Close()
		t.Fatalf("start engine: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// startAdmin serves the reporter's routes on a real listener and returns
// the base URL.
func startAdmin(t testing.TB, r *Reporter) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: r.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		http.DefaultClient.CloseIdleConnections()
	})
	return "http://" + ln.Addr().String()
}

// logBuffer is a concurrency-safe log sink.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func httpDo(t testing.TB, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	c.CloseIdleConnections()
	return resp.StatusCode, string(b)
}

// metricValue finds "name{labels} value" (labels exactly as given, or none)
// in Prometheus text output.
func metricValue(text, series string) (float64, bool) {
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// waitFor polls cond every 10 ms until it holds or the bound passes.
func waitFor(t testing.TB, what string, bound time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", bound, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lintMetrics fails t for every problem the Prometheus client library's
// linter (the one behind `promtool check metrics`) finds in a /metrics body.
func lintMetrics(t testing.TB, text string) {
	t.Helper()
	problems, err := promlint.New(strings.NewReader(text)).Lint()
	if err != nil {
		t.Fatalf("lint /metrics: %v", err)
	}
	for _, p := range problems {
		t.Errorf("/metrics: %s: %s", p.Metric, p.Text)
	}
}
