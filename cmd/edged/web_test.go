package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/edgedhq/edged/internal/testenv"
)

// TestPushAndSysFlags runs edged with --push-webhook and --sys-interval:
// a message to an offline user reaches the webhook, and mosquitto_sub on
// loopback reads $SYS/broker/version.
func TestPushAndSysFlags(t *testing.T) {
	_, e1 := exec.LookPath("mosquitto_pub")
	_, e2 := exec.LookPath("mosquitto_sub")
	testenv.Require(t, e1 == nil && e2 == nil, "mosquitto_pub/mosquitto_sub not installed (apt-get install mosquitto-clients)")
	bodies := make(chan string, 10)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies <- string(b)
	}))
	defer hook.Close()
	s, _, stop := startRun(t, "--listen", "127.0.0.1:0", "--admin", "off", "--steering", "off",
		"--sys-interval", "1s", "--push-webhook", hook.URL+"/push", "--push-interval", "1h")
	defer stop()
	host, port, _ := net.SplitHostPort(s.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "mosquitto_pub", "-h", host, "-p", port, "-i", "alice", "-q", "1", "-t", "u/bob/m1", "-m", "hi").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v: %s", err, out)
	}
	select {
	case b := <-bodies:
		if want := `{"notifications":[{"user":"bob","sender":"alice","message_id":"m1","kind":"message"}]}`; b != want {
			t.Errorf("webhook got %s, want %s", b, want)
		}
	case <-ctx.Done():
		t.Fatal("no push notification within 30 s")
	}
	out, err := exec.CommandContext(ctx, "mosquitto_sub", "-h", host, "-p", port, "-t", "$SYS/broker/version", "-C", "1", "-W", "10").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "edged version ") {
		t.Fatalf("mosquitto_sub $SYS/broker/version: %v: %q", err, out)
	}
}
