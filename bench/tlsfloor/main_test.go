package main

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"os/exec"
	"testing"
	"time"

	"github.com/edgedhq/edged/internal/testenv"
)

// startFloor serves on a free loopback port in this process with fresh
// test certificates and returns its address and the files.
func startFloor(t *testing.T) (string, *testenv.TLSFiles) {
	t.Helper()
	f := testenv.MakeTLSFiles(t)
	ln, err := listenTLS("127.0.0.1:0", f.ECDSACert, f.ECDSAKey)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() { _ = serve(ln) }()
	return ln.Addr().String(), f
}

var connect = []byte{0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, 2, 'c', 'x'}

// exchange connects over TLS with cfg, sends CONNECT and PINGREQ, and
// checks their answers; it reports whether the session was resumed.
func exchange(t *testing.T, addr string, cfg *tls.Config) bool {
	t.Helper()
	c, err := tls.Dial("tcp4", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(append(append([]byte{}, connect...), 0xc0, 0)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 6)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if want := []byte{0x20, 2, 0, 0, 0xd0, 0}; string(got) != string(want) {
		t.Fatalf("answers % x, want % x (CONNACK, PINGRESP)", got, want)
	}
	// DISCONNECT: the floor closes.
	c.Write([]byte{0xe0, 0})
	if n, err := c.Read(got); err != io.EOF {
		t.Fatalf("after DISCONNECT: %d bytes, %v; want EOF", n, err)
	}
	return c.ConnectionState().DidResume
}

// TestResumes: the stick answers MQTT over TLS 1.3 and resumes sessions
// from its tickets (its resumed figures are resumed handshakes), over both
// TLS versions.
func TestResumes(t *testing.T) {
	addr, f := startFloor(t)
	for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		cfg := &tls.Config{RootCAs: f.Pool, ServerName: "127.0.0.1", MinVersion: v, MaxVersion: v,
			ClientSessionCache: tls.NewLRUClientSessionCache(4)}
		if exchange(t, addr, cfg) {
			t.Fatalf("version %x: the first connection resumed", v)
		}
		if !exchange(t, addr, cfg) {
			t.Fatalf("version %x: the second connection did not resume from the ticket", v)
		}
	}
}

// TestRefusals: plaintext MQTT on the TLS port and an unknown packet
// after CONNECT each end only their connection.
func TestRefusals(t *testing.T) {
	addr, f := startFloor(t)
	plain, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	plain.SetDeadline(time.Now().Add(10 * time.Second))
	plain.Write(connect)
	if _, err := io.ReadAll(plain); err != nil {
		t.Fatalf("plaintext CONNECT: %v, want the connection closed", err)
	}
	cfg := &tls.Config{RootCAs: f.Pool, ServerName: "127.0.0.1"}
	c, err := tls.Dial("tcp4", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write(append(append([]byte{}, connect...), 0x82, 2, 0, 1)) // SUBSCRIBE: not spoken
	got, _ := io.ReadAll(c)
	if string(got) != string([]byte{0x20, 2, 0, 0}) {
		t.Fatalf("read % x, want the CONNACK and then the close", got)
	}
	// The others go on.
	if exchange(t, addr, cfg) {
		t.Fatal("resumed without a session cache")
	}
}

// TestStockClient: mosquitto_pub (OpenSSL) connects, publishes at QoS 0
// and disconnects cleanly through the stick.
func TestStockClient(t *testing.T) {
	pub, err := exec.LookPath("mosquitto_pub")
	testenv.Require(t, err == nil, "needs mosquitto_pub (apt-get install mosquitto-clients)")
	addr, f := startFloor(t)
	_, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, pub, "-h", "127.0.0.1", "-p", port, "--cafile", f.CA, "-t", "t", "-m", "hello", "-q", "0").CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub: %v: %s", err, out)
	}
}
