package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/internal/edgetls"
	"github.com/edgedhq/edged/internal/testenv"
)

// tlsServer is an edged with a TLS listener (group 0) and a plain one.
type tlsServer struct {
	*Server
	tls   *edgetls.Server
	files *testenv.TLSFiles
	plain string
}

func startTLSServer(t testing.TB, mod func(*edgetls.Config), files *testenv.TLSFiles, edgeMods ...func(*Config)) *tlsServer {
	t.Helper()
	if files == nil {
		files = testenv.MakeTLSFiles(t)
	}
	tc := edgetls.Config{CertFile: files.ECDSACert, KeyFile: files.ECDSAKey}
	if mod != nil {
		mod(&tc)
	}
	ts, err := edgetls.New(tc)
	if err != nil {
		t.Fatalf("edgetls: %v", err)
	}
	s := startServer(t, func(c *Config) {
		c.TLS, c.TLSGroups = ts, []int{0}
		c.ExtraAddrs = []string{"127.0.0.1:0"}
		for _, m := range edgeMods {
			m(c)
		}
	})
	return &tlsServer{Server: s, tls: ts, files: files, plain: s.eng.Addrs()[1].String()}
}

func (s *tlsServer) clientConfig(vers uint16) *tls.Config {
	return &tls.Config{RootCAs: s.files.Pool, ServerName: "127.0.0.1", MinVersion: vers, MaxVersion: vers}
}

// dialTLS connects a raw MQTT client over TLS; the handshake must succeed.
func dialTLS(t testing.TB, s *tlsServer, cfg *tls.Config) (*rawClient, *tls.Conn) {
	t.Helper()
	tc, err := tls.Dial("tcp", s.Addr().String(), cfg)
	if err != nil {
		t.Fatalf("tls dial: %v", err)
	}
	t.Cleanup(func() { tc.Close() })
	return &rawClient{t: t, conn: tc}, tc
}

// roundTrip checks that c can publish to itself and read it back: through
// the record layer both ways.
func roundTrip(t testing.TB, c *rawClient, topic string, size int) {
	t.Helper()
	if code := c.subscribe(topic, 1); code != 1 {
		t.Fatalf("suback %d", code)
	}
	payload := strings.Repeat("x", size)
	id := c.publish(topic, payload, 1)
	for got := 0; got < 2; {
		p := c.read()
		switch p.Type {
		case mqtt.TypePuback:
			if p.ID != id {
				t.Fatalf("puback %d, want %d", p.ID, id)
			}
			got++
		case mqtt.TypePublish:
			if p.Topic != topic || p.Payload != payload {
				t.Fatalf("publish %q (%d bytes), want %q (%d)", p.Topic, len(p.Payload), topic, size)
			}
			c.puback(p.ID)
			got++
		default:
			t.Fatalf("unexpected %v", p.Type)
		}
	}
}

func TestTLSClients(t *testing.T) {
	files := testenv.MakeTLSFiles(t)
	for _, cert := range []string{"ecdsa", "rsa"} {
		s := startTLSServer(t, func(c *edgetls.Config) {
			if cert == "rsa" {
				c.CertFile, c.KeyFile = files.RSACert, files.RSAKey
			}
		}, files)
		for _, vers := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			for _, size := range []int{10, 40 << 10} { // one record; several records each way
				t.Run(fmt.Sprintf("%s/%s/%dB", cert, tls.VersionName(vers), size), func(t *testing.T) {
					c, tc := dialTLS(t, s, s.clientConfig(vers))
					if st := tc.ConnectionState(); st.Version != vers {
						t.Fatalf("negotiated %s", tls.VersionName(st.Version))
					}
					c.connect(fmt.Sprintf("c-%s-%x-%d", cert, vers, size), false)
					roundTrip(t, c, "t/tls", size)
				})
			}
		}
		// The plain listener of the same server still speaks plain MQTT.
		nc, err := net.Dial("tcp", s.plain)
		if err != nil {
			t.Fatal(err)
		}
		pc := &rawClient{t: t, conn: nc}
		pc.connect("plain-"+cert, false)
		roundTrip(t, pc, "t/plain", 10)
		nc.Close()
	}
}

func TestTLSResumption(t *testing.T) {
	s := startTLSServer(t, nil, nil)
	for _, vers := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(vers), func(t *testing.T) {
			cfg := s.clientConfig(vers)
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
			for i, wantResumed := range []bool{false, true} {
				c, tc := dialTLS(t, s, cfg)
				// TLS 1.3 tickets arrive after the handshake: the
				// CONNACK read makes sure the client has read the ticket.
				c.connect(fmt.Sprintf("resume-%x-%d", vers, i), false)
				if got := tc.ConnectionState().DidResume; got != wantResumed {
					t.Fatalf("connection %d: resumed %v, want %v", i, got, wantResumed)
				}
				roundTrip(t, c, "t/resume", 100)
				tc.Close()
			}
		})
	}
	if st := s.Stats().TLS; st == nil || st.Resumed < 2 || st.Handshakes < 2 {
		t.Fatalf("server stats TLS %+v: want 2 full and 2 resumed handshakes", st)
	}
}

// TestTLSServerKeyUpdate makes the server update its keys (as it does
// before AES-GCM's record limit) every few records: crypto/tls's client
// must follow, both directions keep working.
func TestTLSServerKeyUpdate(t *testing.T) {
	s := startTLSServer(t, func(c *edgetls.Config) { c.KeyUpdateAfter = 4 }, nil)
	c, _ := dialTLS(t, s, s.clientConfig(tls.VersionTLS13))
	c.connect("keyupdate", false)
	for i := 0; i < 5; i++ {
		roundTrip(t, c, fmt.Sprintf("t/ku/%d", i), 20<<10)
	}
	if n := s.tls.Stats().KeyUpdates; n < 3 {
		t.Fatalf("%d key updates, want several", n)
	}
}

func TestTLSCloseNotify(t *testing.T) {
	s := startTLSServer(t, nil, nil)
	c, tc := dialTLS(t, s, s.clientConfig(tls.VersionTLS13))
	c.connect("bye", false)
	before := s.CloseCount(ReasonEOF)
	tc.Close() // sends close_notify
	waitFor(t, "the close_notify close", func() bool { return s.CloseCount(ReasonEOF) == before+1 })
	// The server's own close sends close_notify: the client reads io.EOF,
	// not a truncation error.
	c2, tc2 := dialTLS(t, s, s.clientConfig(tls.VersionTLS12))
	c2.connect("bye2", false)
	c2.send(mqtt.AppendDisconnect(nil))
	buf := make([]byte, 16)
	tc2.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := tc2.Read(buf); err == nil || err.Error() != "EOF" {
		t.Fatalf("read after DISCONNECT: %d bytes, %v; want EOF (close_notify)", n, err)
	}
}

// TestTLSBadInput: each offender is closed with its counted reason, and an
// established TLS session on the same server is not touched.
func TestTLSBadInput(t *testing.T) {
	files := testenv.MakeTLSFiles(t)
	s := startTLSServer(t, func(c *edgetls.Config) {
		// Long enough that a handshake the client refuses (or whose
		// certificate the server refuses) always fails before it: at
		// 500 ms a starved handshake goroutine on a loaded host was
		// counted as a timeout instead (the stalled case waits for it).
		c.HandshakeTimeout = 3 * time.Second
		c.ClientCAFile = files.ClientCA
	}, files)
	good := s.clientConfig(tls.VersionTLS13)
	good.Certificates = []tls.Certificate{files.ClientPair(t, files.ClientCert, files.ClientKey)}
	bystander, _ := dialTLS(t, s, good)
	bystander.connect("bystander", false)

	hello := clientHelloBytes(t)
	cases := []struct {
		name   string
		reason Reason
		run    func(t *testing.T)
	}{
		{"plaintext", ReasonTLSNotTLS, func(t *testing.T) {
			nc := dialRaw(t, s.Addr().String())
			nc.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: []byte("MQTT"), ProtocolLevel: 4, ClientID: []byte("p"), CleanSession: true}))
			expectEOF(t, nc)
		}},
		{"truncated ClientHello", ReasonTLSHandshake, func(t *testing.T) {
			nc := dialRaw(t, s.Addr().String())
			nc.Write(hello[:len(hello)/2])
			nc.(*net.TCPConn).CloseWrite()
			expectEOF(t, nc)
		}},
		{"stalled handshake", ReasonTLSHandshakeTimeout, func(t *testing.T) {
			nc := dialRaw(t, s.Addr().String())
			nc.Write(hello[:10])
			expectEOF(t, nc)
		}},
		{"wrong server certificate", ReasonTLSHandshake, func(t *testing.T) {
			cfg := good.Clone()
			// An empty pool: our CA is unknown. (nil meant the system
			// roots, read and parsed on first use while the server's
			// 500 ms handshake timer ran: under -race on a loaded machine
			// the server could time the handshake out first and count
			// ReasonTLSHandshakeTimeout, and the wait below timed out.)
			cfg.RootCAs = x509.NewCertPool()
			if _, err := tls.Dial("tcp", s.Addr().String(), cfg); err == nil {
				t.Fatal("handshake succeeded with an untrusted server certificate")
			}
		}},
		{"expired client certificate", ReasonTLSClientCert, func(t *testing.T) {
			cfg := good.Clone()
			cfg.Certificates = []tls.Certificate{files.ClientPair(t, files.ExpiredCert, files.ExpiredKey)}
			failAfterHandshake(t, s.Addr().String(), cfg)
		}},
		{"client certificate from another CA", ReasonTLSClientCert, func(t *testing.T) {
			cfg := good.Clone()
			cfg.Certificates = []tls.Certificate{files.ClientPair(t, files.StrangerCert, files.StrangerKey)}
			failAfterHandshake(t, s.Addr().String(), cfg)
		}},
		{"no client certificate", ReasonTLSClientCert, func(t *testing.T) {
			cfg := good.Clone()
			cfg.Certificates = nil
			failAfterHandshake(t, s.Addr().String(), cfg)
		}},
		{"garbage record after the handshake", ReasonTLSRecord, func(t *testing.T) {
			raw := dialRaw(t, s.Addr().String())
			tc := tls.Client(raw, good)
			if err := tc.Handshake(); err != nil {
				t.Fatal(err)
			}
			raw.Write([]byte{23, 3, 3, 0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20})
			expectEOF(t, tc)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := s.CloseCount(tc.reason)
			tc.run(t)
			waitFor(t, tc.reason.String()+" counted", func() bool { return s.CloseCount(tc.reason) == before+1 })
			roundTrip(t, bystander, "t/bystander", 100)
		})
	}
}

func TestTLSHandshakeCap(t *testing.T) {
	s := startTLSServer(t, func(c *edgetls.Config) { c.MaxHandshakes = 2 }, nil)
	est, _ := dialTLS(t, s, s.clientConfig(tls.VersionTLS13))
	est.connect("established", false)
	// The established session's handshake goroutine ends a moment after
	// its client saw the handshake end: wait for it, then one by one.
	waitFor(t, "no handshake in progress", func() bool { return s.tls.Stats().InProgress == 0 })
	var stalled []net.Conn
	for i := int64(1); i <= 2; i++ {
		stalled = append(stalled, dialRaw(t, s.Addr().String()))
		waitFor(t, "the stalled handshake", func() bool { return s.tls.Stats().InProgress == i })
	}
	third := dialRaw(t, s.Addr().String())
	expectEOF(t, third)
	if n := s.CloseCount(ReasonTLSBusy); n != 1 {
		t.Fatalf("tls_handshakes_busy %d, want 1", n)
	}
	roundTrip(t, est, "t/est", 100)
	for _, c := range stalled {
		c.Close()
	}
}

func TestTLSReload(t *testing.T) {
	files := testenv.MakeTLSFiles(t)
	s := startTLSServer(t, nil, files)
	old, otc := dialTLS(t, s, s.clientConfig(tls.VersionTLS13))
	old.connect("old", false)
	if alg := otc.ConnectionState().PeerCertificates[0].PublicKeyAlgorithm.String(); alg != "ECDSA" {
		t.Fatalf("the server presents a %s certificate, want ECDSA", alg)
	}
	// Replace the files with the RSA pair and reload.
	for _, p := range [][2]string{{files.RSACert, files.ECDSACert}, {files.RSAKey, files.ECDSAKey}} {
		b, err := os.ReadFile(p[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p[1], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.tls.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	_, ntc := dialTLS(t, s, s.clientConfig(tls.VersionTLS13))
	if alg := ntc.ConnectionState().PeerCertificates[0].PublicKeyAlgorithm.String(); alg != "RSA" {
		t.Fatalf("after reload the server presents a %s certificate, want RSA", alg)
	}
	roundTrip(t, old, "t/old", 100) // the session from before the reload is untouched
	// A broken file leaves the current certificate in use.
	os.WriteFile(files.ECDSAKey, []byte("not a key"), 0o600)
	if err := s.tls.Reload(); err == nil {
		t.Fatal("reload of a broken key succeeded")
	}
	dialTLS(t, s, s.clientConfig(tls.VersionTLS12))
}

func dialRaw(t testing.TB, addr string) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// expectEOF reads until the server closes c (10 s at most).
func expectEOF(t testing.TB, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [512]byte
	for {
		_, err := c.Read(b[:])
		if err == nil {
			continue
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("connection still open after 10 s")
		}
		return
	}
}

// failAfterHandshake dials with a client certificate the server refuses:
// in TLS 1.3 the client's handshake ends before the server checks it, so
// the refusal shows on the first read.
func failAfterHandshake(t testing.TB, addr string, cfg *tls.Config) {
	t.Helper()
	tc, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return
	}
	defer tc.Close()
	expectEOF(t, tc)
}

// clientHelloBytes records the first flight of a crypto/tls client.
func clientHelloBytes(t testing.TB) []byte {
	t.Helper()
	a, b := net.Pipe()
	go func() {
		tls.Client(a, &tls.Config{InsecureSkipVerify: true}).Handshake()
	}()
	buf := make([]byte, 4096)
	n, err := b.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	b.Close()
	return buf[:n]
}

// TestTLSMosquittoClients: mosquitto_sub and mosquitto_pub (OpenSSL) with
// --cafile, TLS 1.2 and 1.3, and a client certificate.
func TestTLSMosquittoClients(t *testing.T) {
	requireMosquitto(t)
	files := testenv.MakeTLSFiles(t)
	s := startTLSServer(t, func(c *edgetls.Config) { c.ClientCAFile = files.ClientCA }, files)
	auth := []string{"--cafile", files.CA, "--cert", files.ClientCert, "--key", files.ClientKey}
	for _, v := range []string{"tlsv1.2", "tlsv1.3"} {
		t.Run(v, func(t *testing.T) {
			tls := append([]string{"--tls-version", v}, auth...)
			topic := "m/" + v
			wait := mosqSub(t, s.Server, append(tls, "-q", "1", "-t", topic, "-C", "2", "-v")...)
			waitSubscribed(t, s.Server, topic)
			mosqPub(t, s.Server, append(tls, "-q", "1", "-t", topic, "-m", "small")...)
			mosqPub(t, s.Server, append(tls, "-q", "1", "-t", topic, "-m", strings.Repeat("b", 50<<10))...)
			if got, want := wait(), topic+" small\n"+topic+" "+strings.Repeat("b", 50<<10)+"\n"; got != want {
				t.Fatalf("mosquitto_sub printed %d bytes %.60q, want %d", len(got), got, len(want))
			}
		})
	}
	// Without a client certificate the handshake is refused and counted.
	before := s.CloseCount(ReasonTLSClientCert)
	mosqSubExit(t, s.Server, 7, "--cafile", files.CA, "-t", "x", "-C", "1")() // 7: connection lost
	waitFor(t, "tls_client_cert counted", func() bool { return s.CloseCount(ReasonTLSClientCert) > before })
}

func TestTLSPaho(t *testing.T) {
	s := startTLSServer(t, nil, nil)
	got := make(chan string, 1)
	opts := paho.NewClientOptions().AddBroker("ssl://" + s.Addr().String()).SetClientID("paho-tls").
		SetTLSConfig(s.clientConfig(tls.VersionTLS13)).SetAutoReconnect(false)
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	if tok := c.Subscribe("paho/t", 1, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho subscribe: %v", tok.Error())
	}
	if tok := c.Publish("paho/t", 1, false, "over tls"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho publish: %v (closes %v)", tok.Error(), s.CloseCounts())
	}
	select {
	case m := <-got:
		if m != "over tls" {
			t.Fatalf("paho got %q", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("paho: no message in 10 s")
	}
}

// TestTLSOpenSSLKeyUpdate: OpenSSL's s_client sends KeyUpdate with
// update_requested ("K"); the server must switch its read key, answer with
// its own KeyUpdate and switch its write key: the CONNACK that follows
// must decrypt at the client. With ChaCha20 too: s_client can insist on it.
func TestTLSOpenSSLKeyUpdate(t *testing.T) {
	_, err := exec.LookPath("openssl")
	testenv.Require(t, err == nil, "openssl not installed (apt-get install openssl)")
	s := startTLSServer(t, nil, nil)
	for _, suite := range []string{"TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"} {
		t.Run(suite, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "openssl", "s_client", "-connect", s.Addr().String(), "-CAfile", s.files.CA,
				"-tls1_3", "-ciphersuites", suite)
			in, _ := cmd.StdinPipe()
			var out testenv.SyncBuffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { in.Close(); cmd.Wait() }()
			waitFor(t, "the handshake", func() bool { return strings.Contains(out.String(), "Verify return code: 0") })
			before := s.tls.Stats().KeyUpdates
			in.Write([]byte("K\n"))
			waitFor(t, "the key update", func() bool { return s.tls.Stats().KeyUpdates >= before+2 }) // theirs and ours
			in.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: []byte("MQTT"), ProtocolLevel: 4, ClientID: []byte("ossl"), CleanSession: true}))
			waitFor(t, "the CONNACK under the new keys", func() bool { return strings.Contains(out.String(), "\x20\x02\x00\x00") })
		})
	}
}

// countingConn counts the bytes read through it.
type countingConn struct {
	net.Conn
	n atomic.Int64
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(int64(n))
	return n, err
}

// TestTLSCloseNotifyAtShutdown: a server shutting down ends each TLS
// session with close_notify. crypto/tls reads a bare FIN at a record
// boundary as io.EOF too, so the test counts the wire bytes that arrive
// after the CONNACK: one sealed alert record (31 bytes with TLS 1.2's
// AES-GCM, 24 with TLS 1.3's).
func TestTLSCloseNotifyAtShutdown(t *testing.T) {
	s := startTLSServer(t, nil, nil)
	type client struct {
		raw *countingConn
		tc  *tls.Conn
		at  int64
	}
	var clients []client
	for i, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		nc, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		raw := &countingConn{Conn: nc}
		tc := tls.Client(raw, s.clientConfig(v))
		t.Cleanup(func() { tc.Close() })
		c := &rawClient{t: t, conn: tc}
		c.connect(fmt.Sprint("shut", i), false)
		clients = append(clients, client{raw, tc, raw.n.Load()})
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range clients {
		c.tc.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 16)
		n, err := c.tc.Read(buf)
		name := tls.VersionName(c.tc.ConnectionState().Version)
		if err != io.EOF {
			t.Fatalf("%s: read at shutdown: %d bytes, %v; want EOF", name, n, err)
		}
		// One sealed alert record: a 5-byte header, the 2-byte alert,
		// the AEAD tag; TLS 1.3 adds the inner content type, TLS 1.2's
		// AES-GCM an 8-byte explicit nonce.
		want := int64(5 + 2 + 16)
		switch cs := c.tc.ConnectionState(); {
		case cs.Version == tls.VersionTLS13:
			want++
		case cs.CipherSuite != tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 && cs.CipherSuite != tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256:
			want += 8
		}
		if got := c.raw.n.Load() - c.at; got != want {
			t.Fatalf("%s: %d wire bytes after the CONNACK, want %d: one close_notify record", name, got, want)
		}
	}
}

// TestTLSTicketRotation: after a ticket key rotation a ticket sealed with
// the key before still resumes (keysKept keys open tickets); once its key
// has rotated out, the client falls back to a full handshake.
func TestTLSTicketRotation(t *testing.T) {
	s := startTLSServer(t, nil, nil)
	cfg := s.clientConfig(tls.VersionTLS13)
	dial := func() bool {
		t.Helper()
		c, tc := dialTLS(t, s, cfg)
		c.connect("rot", false) // reads the CONNACK, and the ticket before it
		resumed := tc.ConnectionState().DidResume
		tc.Close()
		return resumed
	}
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	dial()
	if !dial() {
		t.Fatal("no resumption before any rotation")
	}
	for i := range 2 {
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
		dial() // a ticket under the current key
		for range i + 1 {
			if err := s.tls.RotateTicketKey(); err != nil {
				t.Fatal(err)
			}
		}
		if !dial() {
			t.Fatalf("a ticket %d rotation(s) old did not resume", i+1)
		}
	}
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	dial()
	for range 3 {
		s.tls.RotateTicketKey()
	}
	if dial() {
		t.Fatal("a ticket whose key rotated out resumed")
	}
}
