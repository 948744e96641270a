//go:build linux

package main

import (
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/edgedhq/edged/internal/testenv"
	"golang.org/x/sys/unix"
)

// startFloor serves on a free loopback port in this process and returns
// its address. The loop never returns; it ends with the test binary.
func startFloor(t *testing.T) string {
	t.Helper()
	lfd, err := listenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(lfd)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = serve(lfd, 0) }()
	return fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
}

// TestStockClients: mosquitto_sub gets at QoS 1 what mosquitto_pub sends at
// QoS 1 through the floor (the stick must carry real MQTT, or its figures
// measure nothing).
func TestStockClients(t *testing.T) {
	subBin, err := exec.LookPath("mosquitto_sub")
	testenv.Require(t, err == nil, "needs mosquitto_sub (apt-get install mosquitto-clients)")
	pubBin, err := exec.LookPath("mosquitto_pub")
	testenv.Require(t, err == nil, "needs mosquitto_pub (apt-get install mosquitto-clients)")
	_, port, _ := net.SplitHostPort(startFloor(t))
	sub := exec.Command(subBin, "-h", "127.0.0.1", "-p", port, "-q", "1", "-t", "floor/t", "-C", "1", "-W", "10")
	var out strings.Builder
	sub.Stdout = &out
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sub.Wait() }()
	// The subscriber has no ready signal: publish until it has one.
	for i := 0; ; i++ {
		if b, err := exec.Command(pubBin, "-h", "127.0.0.1", "-p", port, "-q", "1", "-t", "floor/t", "-m", "hello").CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub: %v: %s", err, b)
		}
		select {
		case err := <-done:
			if err != nil || out.String() != "hello\n" {
				t.Fatalf("mosquitto_sub = %q, %v", out.String(), err)
			}
			return
		case <-time.After(100 * time.Millisecond):
		}
		if i == 50 {
			t.Fatal("mosquitto_sub got nothing in 5 s")
		}
	}
}

// TestUnknownPacket: a packet the stick does not speak closes that
// connection only.
func TestUnknownPacket(t *testing.T) {
	addr := startFloor(t)
	other, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{0xf0, 0}) // AUTH: MQTT 5 only
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after AUTH: %v, want EOF", err)
	}
	other.Write([]byte{0xc0, 0}) // PINGREQ on the other connection
	other.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 2)
	if _, err := io.ReadFull(other, b); err != nil || b[0] != 0xd0 || b[1] != 0 {
		t.Fatalf("PINGRESP = %x, %v", b, err)
	}
}
