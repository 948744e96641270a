package main

import (
	"context"
	"errors"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
)

// TestSecondEdgedOnALivePort runs two edged binaries on one fixed port: the
// second must refuse to start, naming the address, instead of joining the
// first's SO_REUSEPORT group (the kernel would split new clients between the
// processes and strand their messages in the other one's inboxes); the first
// keeps serving every client.
func TestSecondEdgedOnALivePort(t *testing.T) {
	bin := buildEdged(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	args := []string{"--listen", addr, "--admin", "off", "--steering", "off", "--steer-pin", "off", "--loops", "2"}
	first, errA := startBinary(t, bin, args...)
	defer func() {
		first.Process.Kill()
		first.Wait()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitError || !strings.Contains(string(out), "listen "+addr) || !strings.Contains(string(out), "address in use") {
		t.Fatalf("second edged on %s: %v, output %q; want exit %d naming the address", addr, err, out, exitError)
	}
	for i := range 20 {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write(mqtt.AppendConnect(nil, &mqtt.Connect{CleanSession: true, KeepAlive: 30, ClientID: []byte("c" + string(rune('a'+i)))}))
		ack := make([]byte, 4)
		if _, err := io.ReadFull(c, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
			t.Fatalf("client %d on the first edged: CONNACK % x, %v; log:\n%s", i, ack, err, errA.String())
		}
		c.Close()
	}
}
