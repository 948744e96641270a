package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge"
	"github.com/edgedhq/edged/internal/testenv"
)

// TestTLSListenersAndSIGHUP runs edged with a TLS and a plain listener,
// then swaps the certificate files and sends SIGHUP: new handshakes get
// the new certificate, the session from before stays up.
func TestTLSListenersAndSIGHUP(t *testing.T) {
	files := testenv.MakeTLSFiles(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	ready := make(chan *edge.Server, 1)
	var errb testenv.SyncBuffer
	go func() {
		done <- run(ctx, []string{"--listen", "tls://127.0.0.1:0,tcp://127.0.0.1:0", "--admin", "off", "--loops", "2", "--data-dir", t.TempDir(),
			"--tls-cert", files.ECDSACert, "--tls-key", files.ECDSAKey}, &bytes.Buffer{}, &errb, func(s *edge.Server) { ready <- s })
	}()
	var s *edge.Server
	select {
	case s = <-ready:
	case code := <-done:
		t.Fatalf("exited %d: %s", code, errb.String())
	}
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("exit %d: %s", code, errb.String())
		}
	}()
	addrs := s.Addrs()
	cfg := &tls.Config{RootCAs: files.Pool, ServerName: "127.0.0.1"}
	old, err := tls.Dial("tcp", addrs[0].String(), cfg)
	if err != nil {
		t.Fatalf("tls listener: %v", err)
	}
	defer old.Close()
	if alg := old.ConnectionState().PeerCertificates[0].PublicKeyAlgorithm.String(); alg != "ECDSA" {
		t.Fatalf("certificate %s, want ECDSA", alg)
	}
	connack := []byte{0x20, 0x02, 0x00, 0x00}
	mqttConnect(t, old, "old", connack)
	plain, err := net.Dial("tcp", addrs[1].String())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	mqttConnect(t, plain, "plain", connack)

	for _, p := range [][2]string{{files.RSACert, files.ECDSACert}, {files.RSAKey, files.ECDSAKey}} {
		b, _ := os.ReadFile(p[0])
		os.WriteFile(p[1], b, 0o600)
	}
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := tls.Dial("tcp", addrs[0].String(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		alg := c.ConnectionState().PeerCertificates[0].PublicKeyAlgorithm.String()
		c.Close()
		if alg == "RSA" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %s 10 s after SIGHUP: %s", alg, errb.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The session from before the reload still answers (PINGREQ).
	old.Write([]byte{0xc0, 0})
	mqttExpect(t, old, []byte{0xd0, 0})
	if !bytes.Contains([]byte(errb.String()), []byte("SIGHUP: TLS certificate reloaded")) {
		t.Fatalf("no reload log line: %s", errb.String())
	}
}

func mqttConnect(t *testing.T, c net.Conn, id string, want []byte) {
	t.Helper()
	pkt := append([]byte{0x10, byte(12 + len(id)), 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, byte(len(id))}, id...)
	if _, err := c.Write(pkt); err != nil {
		t.Fatal(err)
	}
	mqttExpect(t, c, want)
}

func mqttExpect(t *testing.T, c net.Conn, want []byte) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len(want))
	for n := 0; n < len(want); {
		k, err := c.Read(got[n:])
		if err != nil {
			t.Fatalf("read: %v (got %x)", err, got[:n])
		}
		n += k
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %x, want %x", got, want)
	}
}
