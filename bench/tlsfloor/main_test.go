package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.LeakCheckMain(m, "tlsfloor")) }

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

// exchange connects over TLS with cfg, has its CONNECT and a PINGREQ
// answered, and checks that DISCONNECT closes; it reports whether the
// session was resumed.
func exchange(t *testing.T, addr string, cfg *tls.Config) bool {
	t.Helper()
	c := dialMQTT(t, addr, cfg, connect)
	ping(t, c)
	c.Write([]byte{0xe0, 0}) // DISCONNECT: the floor closes
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after DISCONNECT: %d bytes, %v; want EOF", n, err)
	}
	return c.ConnectionState().DidResume
}

// TestResumes: the stick answers MQTT over TLS and resumes sessions from
// its tickets (its resumed figures are resumed handshakes), over both TLS
// versions.
func TestResumes(t *testing.T) {
	addr, f := startFloor(t)
	for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			cfg := &tls.Config{RootCAs: f.Pool, ServerName: "127.0.0.1", MinVersion: v, MaxVersion: v,
				ClientSessionCache: tls.NewLRUClientSessionCache(4)}
			if exchange(t, addr, cfg) {
				t.Fatal("the first connection resumed")
			}
			if !exchange(t, addr, cfg) {
				t.Fatal("the second connection did not resume from the ticket")
			}
		})
	}
}

// dialMQTT connects over TLS and has its CONNECT answered.
func dialMQTT(t *testing.T, addr string, cfg *tls.Config, connect []byte) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp4", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(connect); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, []byte{0x20, 2, 0, 0}) {
		t.Fatalf("CONNACK: % x, %v", got, err)
	}
	return c
}

// ping checks that c answers a PINGREQ.
func ping(t *testing.T, c net.Conn) {
	t.Helper()
	if _, err := c.Write([]byte{0xc0, 0}); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2)
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, []byte{0xd0, 0}) {
		t.Fatalf("PINGRESP: % x, %v", got, err)
	}
}

// TestRefusals: plaintext MQTT on the TLS port gets nothing and is closed,
// an unknown packet after CONNECT closes its connection after the
// CONNACK, and a connection established before them goes on.
func TestRefusals(t *testing.T) {
	addr, f := startFloor(t)
	cfg := &tls.Config{RootCAs: f.Pool, ServerName: "127.0.0.1"}
	keep := dialMQTT(t, addr, cfg, connect)
	plain, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	plain.SetDeadline(time.Now().Add(10 * time.Second))
	plain.Write(connect)
	if got, err := io.ReadAll(plain); err != nil || len(got) != 0 {
		t.Fatalf("plaintext CONNECT: read % x, %v; want nothing, then the close", got, err)
	}
	bad := dialMQTT(t, addr, cfg, connect)
	bad.Write([]byte{0x82, 2, 0, 1}) // SUBSCRIBE: not spoken
	if got, err := io.ReadAll(bad); err != nil || len(got) != 0 {
		t.Fatalf("after SUBSCRIBE: read % x, %v; want the close", got, err)
	}
	ping(t, keep)
}

// TestLongPackets: remaining lengths of two and three bytes are decoded
// (a CONNECT with a 200-byte client id; QoS 0 PUBLISHes of 300 B and
// 20,000 B, read and dropped), and the stream stays in step after them.
func TestLongPackets(t *testing.T) {
	addr, f := startFloor(t)
	cfg := &tls.Config{RootCAs: f.Pool, ServerName: "127.0.0.1"}
	id := strings.Repeat("c", 200)
	body := append([]byte{0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, byte(len(id))}, id...)
	long := append([]byte{0x10, byte(len(body)&0x7f | 0x80), byte(len(body) >> 7)}, body...)
	c := dialMQTT(t, addr, cfg, long)
	for _, n := range []int{300, 20_000} {
		pub := mqtt.AppendPublish(nil, "t", bytes.Repeat([]byte("x"), n), 0, false, false, 0)
		if _, err := c.Write(pub); err != nil {
			t.Fatal(err)
		}
		ping(t, c)
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
