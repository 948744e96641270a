package capture

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/edgedhq/edged/edge"
	"github.com/edgedhq/edged/internal/testenv"
)

// serveEnv makes the test binary an edged server on the address it holds
// (the end-to-end test starts one inside a network namespace that way).
const serveEnv = "EDGECAP_SERVE"

// TestMain runs the test binary as a server in serve mode (serveEnv set) and
// otherwise runs the tests, failing the run on a leaked file descriptor or
// goroutine.
func TestMain(m *testing.M) {
	if addr := os.Getenv(serveEnv); addr != "" {
		os.Exit(serve(addr))
	}
	os.Exit(testenv.LeakCheckMain(m, "capture"))
}

// serve runs an anonymous-loopback edged on addr, prints "ready ADDR" and
// stops when its stdin closes.
func serve(addr string) int {
	srv, err := edge.New(edge.Config{Addr: addr, Auth: edge.AuthLoopbackAnonymous, Logger: quietLogger()})
	if err == nil {
		err = srv.Start()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "serve: %v\n", err)
		return 1
	}
	fmt.Printf("ready %s\n", srv.Addr())
	io.Copy(io.Discard, bufio.NewReader(os.Stdin))
	if err := srv.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "serve: %v\n", err)
		return 1
	}
	return 0
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startServer starts an in-process edged on a free loopback port.
func startServer(t testing.TB, cfg edge.Config) *edge.Server {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	cfg.Logger = quietLogger()
	srv, err := edge.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}
