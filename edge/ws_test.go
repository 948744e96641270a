package edge

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/internal/edgetls"
	"github.com/edgedhq/edged/internal/edgews"
	"github.com/edgedhq/edged/internal/testenv"
)

// wsServer is an edged with a ws:// listener on /mqtt (group 0), a plain
// TCP one, and with TLS a wss:// one on /mqtt too.
type wsServer struct {
	*Server
	ws    *edgews.Server
	files *testenv.TLSFiles
	ws0   string // ws:// host:port
	plain string
	wss   string // wss:// host:port, "" without TLS
}

func startWSServer(t testing.TB, withTLS bool, mods ...func(*Config, *edgews.Config)) *wsServer {
	t.Helper()
	wc := edgews.Config{MaxFrame: DefaultMaxPacketSize + mqtt.MaxHeaderLen}
	cfgMod := func(c *Config) {
		for _, m := range mods {
			m(c, &wc)
		}
	}
	probe := &Config{}
	cfgMod(probe) // the edgews config is needed before the edge one is built
	ws := edgews.New(wc)
	var files *testenv.TLSFiles
	var ts *edgetls.Server
	if withTLS {
		files = testenv.MakeTLSFiles(t)
		var err error
		if ts, err = edgetls.New(edgetls.Config{CertFile: files.ECDSACert, KeyFile: files.ECDSAKey}); err != nil {
			t.Fatalf("edgetls: %v", err)
		}
	}
	s := startServer(t, func(c *Config) {
		c.WS, c.WSGroups = ws, []WSGroup{{Group: 0, Path: "/mqtt"}}
		c.ExtraAddrs = []string{"127.0.0.1:0"}
		if withTLS {
			c.ExtraAddrs = append(c.ExtraAddrs, "127.0.0.1:0")
			c.TLS, c.TLSGroups = ts, []int{2}
			c.WSGroups = append(c.WSGroups, WSGroup{Group: 2, Path: "/mqtt"})
		}
		cfgMod(c)
	})
	w := &wsServer{Server: s, ws: ws, files: files, ws0: s.Addrs()[0].String(), plain: s.Addrs()[1].String()}
	if withTLS {
		w.wss = s.Addrs()[2].String()
	}
	return w
}

// wsConn is a minimal WebSocket client over a net.Conn: Write sends one
// masked binary frame, Read returns binary payload and keeps the last
// control frame the server sent.
type wsConn struct {
	net.Conn
	r         *bufio.Reader
	rest      []byte // payload of a binary frame not yet read
	closeCode int    // the status code of the server's close frame, -1: none yet
	pongs     [][]byte
}

func (c *wsConn) Write(p []byte) (int, error) {
	if _, err := c.Conn.Write(maskedFrame(0x82, p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) Read(p []byte) (int, error) {
	for len(c.rest) == 0 {
		op, payload, err := c.readFrame()
		if err != nil {
			return 0, err
		}
		switch op {
		case 0x2, 0x0:
			c.rest = payload
		case 0x8:
			c.closeCode = 0
			if len(payload) >= 2 {
				c.closeCode = int(binary.BigEndian.Uint16(payload))
			}
		case 0xA:
			c.pongs = append(c.pongs, payload)
		default:
			return 0, fmt.Errorf("server sent opcode %#x", op)
		}
	}
	n := copy(p, c.rest)
	c.rest = c.rest[n:]
	return n, nil
}

// readFrame reads one server frame, which must not be masked.
func (c *wsConn) readFrame() (byte, []byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return 0, nil, err
	}
	if h[1]&0x80 != 0 || h[0]&0x70 != 0 || h[0]&0x80 == 0 {
		return 0, nil, fmt.Errorf("server frame header %x: masked, reserved bits or not final", h)
	}
	size := uint64(h[1] & 0x7F)
	switch size {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(c.r, b[:]); err != nil {
			return 0, nil, err
		}
		size = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(c.r, b[:]); err != nil {
			return 0, nil, err
		}
		size = binary.BigEndian.Uint64(b[:])
	}
	p := make([]byte, size)
	_, err := io.ReadFull(c.r, p)
	return h[0] & 0x0F, p, err
}

// maskedFrame builds a client frame with a random masking key.
func maskedFrame(b0 byte, p []byte) []byte {
	var key [4]byte
	rand.Read(key[:])
	return testenv.WSClientFrame(b0, p, key)
}

// upgradeRequest is a valid upgrade request for path with extra headers.
func upgradeRequest(path string, header ...string) string {
	key := make([]byte, 16)
	rand.Read(key)
	h := map[string]string{
		"Host": "127.0.0.1", "Upgrade": "websocket", "Connection": "Upgrade",
		"Sec-WebSocket-Key": base64.StdEncoding.EncodeToString(key), "Sec-WebSocket-Version": "13",
		"Sec-WebSocket-Protocol": "mqtt",
	}
	for i := 0; i+1 < len(header); i += 2 {
		h[header[i]] = header[i+1]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\n", path)
	for k, v := range h {
		if v != "" {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	return b.String()
}

// wsUpgrade sends req on nc and returns the response's status code and the
// connection as a WebSocket client.
func wsUpgrade(t testing.TB, nc net.Conn, req string) (int, *wsConn) {
	t.Helper()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(nc, req); err != nil {
		t.Fatalf("write upgrade: %v", err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, nil
	}
	resp.Body.Close()
	nc.SetDeadline(time.Time{})
	if resp.StatusCode == http.StatusSwitchingProtocols && resp.Header.Get("Sec-WebSocket-Protocol") != "mqtt" {
		t.Fatalf("101 without Sec-WebSocket-Protocol: mqtt: %v", resp.Header)
	}
	return resp.StatusCode, &wsConn{Conn: nc, r: br, closeCode: -1}
}

// dialWS connects a raw MQTT client over ws://; the upgrade must succeed.
func dialWS(t testing.TB, addr string) (*rawClient, *wsConn) {
	t.Helper()
	code, wc := wsUpgrade(t, dialRaw(t, addr), upgradeRequest("/mqtt"))
	if code != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: status %d", code)
	}
	return &rawClient{t: t, conn: wc}, wc
}

func TestWSClients(t *testing.T) {
	s := startWSServer(t, false)
	a, _ := dialWS(t, s.ws0)
	a.connect("alice", false)
	b := &rawClient{t: t, conn: dialRaw(t, s.plain)}
	b.connect("bob", false)
	// Sizes around the frame length encodings (7, 16 and 64 bits).
	for _, size := range []int{1, 125, 126, 65535, 65536, 200 << 10} {
		roundTrip(t, a, fmt.Sprint("t/ws/", size), size)
	}
	directAndReceipts(t, a, b, "alice", "bob", "m1")
	directAndReceipts(t, b, a, "bob", "alice", "m2")
	if st := s.Stats().WS; st == nil || st.Upgrades != 1 || st.Sessions != 1 {
		t.Fatalf("ws stats %+v", st)
	}
}

// directAndReceipts sends a direct message from a to b and checks the
// delivery and the delivered receipt.
func directAndReceipts(t testing.TB, a, b *rawClient, aID, bID, mid string) {
	t.Helper()
	id := a.publish("u/"+bID+"/"+mid, "hi "+bID, 1)
	if p := a.expect(mqtt.TypePuback); p.ID != id {
		t.Fatalf("puback %+v", p)
	}
	p := b.expect(mqtt.TypePublish)
	if p.Topic != "u/"+bID+"/m/"+aID+"/"+mid || p.Payload != "hi "+bID {
		t.Fatalf("delivery %+v", p)
	}
	b.puback(p.ID)
	d := a.expect(mqtt.TypePublish)
	if d.Topic != "u/"+aID+"/d/"+bID+"/"+mid {
		t.Fatalf("receipt %+v", d)
	}
	a.puback(d.ID)
}

func TestWSPingAndFragments(t *testing.T) {
	s := startWSServer(t, false)
	c, wc := dialWS(t, s.ws0)
	c.connect("pinger", false)
	// A PINGREQ split over a fragmented message with a ping frame
	// between its fragments: the pong comes back with the ping's
	// payload, the PINGRESP after the last fragment.
	pingreq := mqtt.AppendPingreq(nil)
	wc.Conn.Write(maskedFrame(0x02, pingreq[:1]))
	wc.Conn.Write(maskedFrame(0x89, []byte("are you there")))
	wc.Conn.Write(maskedFrame(0x80, pingreq[1:]))
	c.expect(mqtt.TypePingresp)
	if len(wc.pongs) != 1 || string(wc.pongs[0]) != "are you there" {
		t.Fatalf("pongs %q", wc.pongs)
	}
	// Two MQTT packets in one frame, one packet in three frames.
	two := append(mqtt.AppendPingreq(nil), mqtt.AppendPingreq(nil)...)
	wc.Conn.Write(maskedFrame(0x82, two))
	c.expect(mqtt.TypePingresp)
	c.expect(mqtt.TypePingresp)
	pub := mqtt.AppendPublish(nil, "t/frag", []byte("split"), 0, false, false, 0)
	c.subscribe("t/frag", 0)
	wc.Conn.Write(maskedFrame(0x02, pub[:3]))
	wc.Conn.Write(maskedFrame(0x00, pub[3:5]))
	wc.Conn.Write(maskedFrame(0x80, pub[5:]))
	if p := c.expect(mqtt.TypePublish); p.Payload != "split" {
		t.Fatalf("got %+v", p)
	}
}

// wsBystanders is bystanders over WebSocket: a ws client and a TCP client
// that must keep exchanging messages while another connection misbehaves.
func wsBystanders(t *testing.T, s *wsServer) (check func()) {
	a, _ := dialWS(t, s.ws0)
	a.connect("ws-bystander-a", false)
	nb := dialRaw(t, s.plain)
	b := &rawClient{t: t, conn: nb}
	b.connect("ws-bystander-b", false)
	n := 0
	return func() {
		t.Helper()
		n++
		directAndReceipts(t, a, b, "ws-bystander-a", "ws-bystander-b", fmt.Sprint("ok", n))
		directAndReceipts(t, b, a, "ws-bystander-b", "ws-bystander-a", fmt.Sprint("ok", n))
	}
}

func TestWSBadUpgrade(t *testing.T) {
	// A ws:// upgrade runs on its loop, within the handshake timeout the
	// connection has for its CONNECT.
	s := startWSServer(t, false, func(c *Config, _ *edgews.Config) { c.HandshakeTimeout = 500 * time.Millisecond })
	check := wsBystanders(t, s)
	for _, tc := range []struct {
		name   string
		reason Reason
		req    string
		status int // 0: closed without a response
	}{
		{"not HTTP", ReasonWSBadHandshake, "\x10\x20MQTT\r\n\r\n", 400},
		{"POST", ReasonWSBadHandshake, strings.Replace(upgradeRequest("/mqtt"), "GET", "POST", 1), 400},
		{"HTTP/1.0", ReasonWSBadHandshake, strings.Replace(upgradeRequest("/mqtt"), "HTTP/1.1", "HTTP/1.0", 1), 400},
		{"no Upgrade header", ReasonWSBadHandshake, upgradeRequest("/mqtt", "Upgrade", ""), 400},
		{"Upgrade: h2c", ReasonWSBadHandshake, upgradeRequest("/mqtt", "Upgrade", "h2c"), 400},
		{"no Connection: Upgrade", ReasonWSBadHandshake, upgradeRequest("/mqtt", "Connection", "keep-alive"), 400},
		{"missing key", ReasonWSBadHandshake, upgradeRequest("/mqtt", "Sec-WebSocket-Key", ""), 400},
		{"key not 16 bytes", ReasonWSBadHandshake, upgradeRequest("/mqtt", "Sec-WebSocket-Key", "c2hvcnQ="), 400},
		{"wrong path", ReasonWSBadPath, upgradeRequest("/other"), 404},
		{"bad version", ReasonWSBadVersion, upgradeRequest("/mqtt", "Sec-WebSocket-Version", "8"), 426},
		{"no version", ReasonWSBadVersion, upgradeRequest("/mqtt", "Sec-WebSocket-Version", ""), 426},
		{"no subprotocol", ReasonWSNoSubprotocol, upgradeRequest("/mqtt", "Sec-WebSocket-Protocol", ""), 400},
		{"other subprotocol", ReasonWSNoSubprotocol, upgradeRequest("/mqtt", "Sec-WebSocket-Protocol", "wamp, mqttv3.1"), 400},
		{"data before the 101", ReasonWSBadHandshake, upgradeRequest("/mqtt") + string(maskedFrame(0x82, mqtt.AppendPingreq(nil))), 400},
		{"request over 8 KiB", ReasonWSBadHandshake, upgradeRequest("/mqtt", "X-Pad", strings.Repeat("x", 9000)), 400},
		{"stalled request", ReasonWSHandshakeTimeout, "GET /mqtt HTTP/1.1\r\nHost: x\r\n", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.CloseCount(tc.reason)
			nc := dialRaw(t, s.ws0)
			code, _ := wsUpgrade(t, nc, tc.req)
			if code != tc.status {
				t.Fatalf("status %d, want %d", code, tc.status)
			}
			expectEOF(t, nc)
			waitFor(t, tc.reason.String()+" counted", func() bool { return s.CloseCount(tc.reason) == before+1 })
			check()
		})
	}
	if s.ws.Stats().InProgress != 0 {
		t.Fatalf("upgrades still in progress: %+v", s.ws.Stats())
	}
}

func TestWSBadFrames(t *testing.T) {
	s := startWSServer(t, false, func(c *Config, w *edgews.Config) {
		c.MaxPacketSize = 64 << 10
		w.MaxFrame = 64<<10 + mqtt.MaxHeaderLen
	})
	check := wsBystanders(t, s)
	big := mqtt.AppendPublish(nil, "t/big", make([]byte, 70<<10), 0, false, false, 0)
	for _, tc := range []struct {
		name   string
		reason Reason
		code   int
		send   []byte
	}{
		{"text frame", ReasonWSTextFrame, 1003, maskedFrame(0x81, []byte("{}"))},
		{"unmasked frame", ReasonWSUnmasked, 1002, []byte{0x82, 2, 0xC0, 0}},
		{"reserved bit", ReasonWSBadFrame, 1002, maskedFrame(0xC2, mqtt.AppendPingreq(nil))},
		{"bad opcode", ReasonWSBadFrame, 1002, maskedFrame(0x83, nil)},
		{"fragmented control frame", ReasonWSBadFrame, 1002, maskedFrame(0x09, []byte("p"))},
		{"long control frame", ReasonWSBadFrame, 1002, maskedFrame(0x89, make([]byte, 126))},
		{"continuation first", ReasonWSBadFrame, 1002, maskedFrame(0x80, mqtt.AppendPingreq(nil))},
		{"non-minimal length", ReasonWSBadFrame, 1002, []byte{0x82, 0x80 | 126, 0, 2, 1, 2, 3, 4, 0xC1, 2}},
		{"oversized frame", ReasonWSTooBig, 1009, maskedFrame(0x82, make([]byte, 70<<10))},
		{"oversized frame header alone", ReasonWSTooBig, 1009, []byte{0x82, 0x80 | 127, 0, 0, 0, 1, 0, 0, 0, 0}},
		{"bad close code", ReasonWSBadFrame, 1002, maskedFrame(0x88, []byte{0x03, 0xED})},
		{"close frame", ReasonWSClose, 1000, maskedFrame(0x88, []byte{0x03, 0xE8, 'b', 'y', 'e'})},
		// MQTT's rules are the same as over TCP, inside frames:
		{"oversize MQTT packet across frames", ReasonOversize, 1009, append(maskedFrame(0x02, big[:40<<10]), maskedFrame(0x80, big[40<<10:])...)},
		{"malformed MQTT packet", ReasonMalformed, 1002, maskedFrame(0x82, []byte{0xF0, 0})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, wc := dialWS(t, s.ws0)
			c.connect("bad-"+strings.ReplaceAll(tc.name, " ", "-"), false)
			before := s.CloseCount(tc.reason)
			wc.Conn.Write(tc.send)
			wsReadToClose(t, wc)
			if wc.closeCode != tc.code {
				t.Fatalf("close code %d, want %d", wc.closeCode, tc.code)
			}
			waitFor(t, tc.reason.String()+" counted", func() bool { return s.CloseCount(tc.reason) == before+1 })
			check()
		})
	}
}

// wsReadToClose reads wc until the server closes it (10 s at most).
func wsReadToClose(t testing.TB, wc *wsConn) {
	t.Helper()
	wc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [512]byte
	for {
		if _, err := wc.Read(b[:]); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("still open after 10 s")
			}
			return
		}
	}
}

// TestWSPartialFrame: a client that stops inside a frame header is closed
// by the partial timeout, as a client that stops inside a packet over TCP.
func TestWSPartialFrame(t *testing.T) {
	s := startWSServer(t, false, func(c *Config, _ *edgews.Config) { c.PartialTimeout = 300 * time.Millisecond })
	check := wsBystanders(t, s)
	c, wc := dialWS(t, s.ws0)
	c.connect("stalled", false)
	wc.Conn.Write([]byte{0x82, 0x80 | 126, 0x01}) // a header that never completes
	expectEOF(t, wc.Conn)
	waitFor(t, "partial_timeout counted", func() bool { return s.CloseCount(ReasonPartialTimeout) == 1 })
	check()
}

func TestWSPublishFlood(t *testing.T) {
	s := startWSServer(t, false, func(c *Config, _ *edgews.Config) { c.PublishRate, c.PublishBurst = 100, 100 })
	check := wsBystanders(t, s)
	c, wc := dialWS(t, s.ws0)
	c.connect("flooder", false)
	var burst []byte
	for range 1000 {
		burst = mqtt.AppendPublish(burst, "flood/x", []byte("spam"), 0, false, false, 0)
	}
	wc.Write(burst)
	wsReadToClose(t, wc)
	waitFor(t, "flood close counted", func() bool { return s.CloseCount(ReasonFlood) == 1 })
	if wc.closeCode != 1008 {
		t.Fatalf("close code %d, want 1008", wc.closeCode)
	}
	check()
}

func TestWSUpgradeCap(t *testing.T) {
	s := startWSServer(t, false, func(_ *Config, w *edgews.Config) { w.MaxHandshakes, w.HandshakeTimeout = 2, 5*time.Second })
	var stalled []net.Conn
	for range 2 {
		nc := dialRaw(t, s.ws0)
		nc.Write([]byte("GET /mqtt HTTP/1.1\r\n"))
		stalled = append(stalled, nc)
	}
	waitFor(t, "2 upgrades in progress", func() bool { return s.ws.Stats().InProgress == 2 })
	nc := dialRaw(t, s.ws0)
	expectEOF(t, nc)
	waitFor(t, "ws_handshakes_busy counted", func() bool { return s.CloseCount(ReasonWSBusy) == 1 })
	for _, c := range stalled {
		c.Close()
	}
	waitFor(t, "upgrades done", func() bool { return s.ws.Stats().InProgress == 0 })
	c, _ := dialWS(t, s.ws0)
	c.connect("after-cap", false)
}

// TestWSPaho: Paho over ws:// (its gorilla/websocket dialer) exchanges a
// direct message and its receipts with a TCP client.
func TestWSPaho(t *testing.T) {
	s := startWSServer(t, false)
	pahoDirect(t, s, "ws://"+s.ws0+"/mqtt", "paho-ws", nil)
}

// TestWSSPaho: the same over wss:// with the test CA.
func TestWSSPaho(t *testing.T) {
	s := startWSServer(t, true)
	for _, vers := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		t.Run(tls.VersionName(vers), func(t *testing.T) {
			pahoDirect(t, s, "wss://"+s.wss+"/mqtt", "paho-wss-"+fmt.Sprint(vers), &tls.Config{RootCAs: s.files.Pool, ServerName: "127.0.0.1", MinVersion: vers, MaxVersion: vers})
		})
	}
}

func pahoDirect(t *testing.T, s *wsServer, url, id string, tc *tls.Config) {
	msgs := make(chan paho.Message, 10)
	opts := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetAutoReconnect(false).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { msgs <- m })
	if tc != nil {
		opts.SetTLSConfig(tc)
	}
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho connect %s: %v (closes %v)", url, tok.Error(), s.CloseCounts())
	}
	defer c.Disconnect(100)
	bob := &rawClient{t: t, conn: dialRaw(t, s.plain)}
	bob.connect(id+"-bob", false)
	// Paho to bob: delivered, bob's PUBACK, the receipt to Paho.
	if tok := c.Publish("u/"+id+"-bob/p1", 1, false, "from paho"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho publish: %v", tok.Error())
	}
	p := bob.expect(mqtt.TypePublish)
	if p.Topic != "u/"+id+"-bob/m/"+id+"/p1" || p.Payload != "from paho" {
		t.Fatalf("bob got %+v", p)
	}
	bob.puback(p.ID)
	expectPaho(t, msgs, "u/"+id+"/d/"+id+"-bob/p1", "")
	// bob to Paho, and Paho's read receipt back to bob.
	bob.publish("u/"+id+"/b1", "from bob", 1)
	bob.expect(mqtt.TypePuback)
	expectPaho(t, msgs, "u/"+id+"/m/"+id+"-bob/b1", "from bob")
	if d := bob.expect(mqtt.TypePublish); d.Topic != "u/"+id+"-bob/d/"+id+"/b1" {
		t.Fatalf("bob's delivered receipt %+v", d)
	} else {
		bob.puback(d.ID)
	}
	if tok := c.Publish("r/"+id+"-bob/b1", 1, false, ""); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho read receipt: %v", tok.Error())
	}
	if r := bob.expect(mqtt.TypePublish); r.Topic != "u/"+id+"-bob/r/"+id+"/b1" {
		t.Fatalf("bob's read receipt %+v", r)
	} else {
		bob.puback(r.ID)
	}
}

func expectPaho(t *testing.T, msgs chan paho.Message, topic, payload string) {
	t.Helper()
	select {
	case m := <-msgs:
		if m.Topic() != topic || string(m.Payload()) != payload {
			t.Fatalf("paho got %s %q, want %s %q", m.Topic(), m.Payload(), topic, payload)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("paho: no %s in 10 s", topic)
	}
}

// TestWSSRawClients: frames inside TLS both ways, with the carry of a
// frame header split across TLS records, a ping answered inside TLS, and a
// bad frame closed with a close frame inside TLS; TLS clients on the same
// engine are unaffected.
func TestWSSRawClients(t *testing.T) {
	s := startWSServer(t, true)
	c, wc, tc := dialWSS(t, s.wss, s.files)
	c.connect("wss-raw", false)
	for _, size := range []int{1, 300, 70 << 10} {
		roundTrip(t, c, fmt.Sprint("t/wss/", size), size)
	}
	// One byte per TLS record: every header and control frame arrives
	// in pieces.
	frame := append(maskedFrame(0x89, []byte("ping!")), maskedFrame(0x82, mqtt.AppendPingreq(nil))...)
	for i := range frame {
		tc.Write(frame[i : i+1])
	}
	c.expect(mqtt.TypePingresp)
	if len(wc.pongs) != 1 || string(wc.pongs[0]) != "ping!" {
		t.Fatalf("pongs %q", wc.pongs)
	}
	before := s.CloseCount(ReasonWSTextFrame)
	tc.Write(maskedFrame(0x81, []byte("text")))
	wsReadToClose(t, wc)
	if wc.closeCode != 1003 {
		t.Fatalf("close code %d, want 1003", wc.closeCode)
	}
	waitFor(t, "ws_text_frame counted", func() bool { return s.CloseCount(ReasonWSTextFrame) == before+1 })
	// A wss client that is not a WebSocket one: refused in its upgrade.
	before = s.CloseCount(ReasonWSBadHandshake)
	tc2, err := tls.Dial("tcp", s.wss, &tls.Config{RootCAs: s.files.Pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer tc2.Close()
	tc2.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: []byte("MQTT"), ProtocolLevel: 4, ClientID: []byte("x"), CleanSession: true}))
	tc2.Write([]byte("\r\n\r\n"))
	expectEOF(t, tc2)
	waitFor(t, "ws_bad_handshake counted", func() bool { return s.CloseCount(ReasonWSBadHandshake) == before+1 })
}

// TestHandoffWS: a zero-downtime upgrade does not carry WebSocket
// connections (their framing state is the transport's, like TLS's record
// state): the old process closes them, plain TCP ones are carried, and a
// WebSocket client that reconnects to the new process gets what was in
// flight again (DUP) and what was queued.
func TestHandoffWS(t *testing.T) {
	dir := t.TempDir()
	wsCfg := func(c *Config) {
		c.DataDir, c.Inflight = dir, 1
		c.WS, c.WSGroups = edgews.New(edgews.Config{}), []WSGroup{{Group: 0, Path: "/mqtt"}}
		c.ExtraAddrs = []string{"127.0.0.1:0"}
	}
	s1 := startServer(t, wsCfg)
	wsAddr := s1.Addrs()[0].String()
	wsBob, wc := dialWS(t, wsAddr)
	wsBob.connect("wsbob", false)
	alice := &rawClient{t: t, conn: dialRaw(t, s1.Addrs()[1].String())}
	alice.connect("alice", false)
	alice.publishAcked("u/wsbob/m1", "one")
	alice.publishAcked("u/wsbob/m2", "two")
	if p := wsBob.expect(mqtt.TypePublish); p.Topic != "u/wsbob/m/alice/m1" {
		t.Fatalf("wsbob got %+v", p)
	}
	s2 := handOffDrainingWS(t, s1, wsCfg, wc)
	if s2.Connections() != 1 {
		t.Fatalf("new server holds %d connections, want 1", s2.Connections())
	}
	alice.send(mqtt.AppendPingreq(nil))
	if p, err := alice.tryRead(3 * time.Second); err != nil || p.Type != mqtt.TypePingresp {
		t.Fatalf("alice ping: %v %+v", err, p)
	}
	wsBob2, _ := dialWS(t, wsAddr)
	wsBob2.connect("wsbob", false)
	for _, want := range []struct {
		topic string
		dup   bool
	}{{"u/wsbob/m/alice/m1", true}, {"u/wsbob/m/alice/m2", false}} {
		p := wsBob2.expect(mqtt.TypePublish)
		if p.Topic != want.topic || p.Dup != want.dup {
			t.Fatalf("after the handoff wsbob got %s dup %v, want %s dup %v", p.Topic, p.Dup, want.topic, want.dup)
		}
		wsBob2.puback(p.ID)
	}
	for range 2 {
		p, err := alice.tryRead(3 * time.Second)
		if err != nil {
			t.Fatalf("alice (carried) got no receipt: %v", err)
		}
		if !strings.HasPrefix(p.Topic, "u/alice/d/wsbob/") {
			t.Fatalf("alice (carried) got %s, want a receipt from wsbob", p.Topic)
		}
		alice.puback(p.ID) // Inflight 1: the next one comes after this
	}
}

// TestHandoffWSS: a wss:// connection is not carried either: the old
// process seals its close frame (1001) in the TLS record after the output
// Export sealed, while its loops are parked, so the client reads a valid
// record and the close code; reconnected over wss:// to the new process it
// gets what was in flight again.
func TestHandoffWSS(t *testing.T) {
	dir := t.TempDir()
	files := testenv.MakeTLSFiles(t)
	cfg := func(c *Config) {
		ts, err := edgetls.New(edgetls.Config{CertFile: files.ECDSACert, KeyFile: files.ECDSAKey})
		if err != nil {
			t.Fatal(err)
		}
		c.DataDir, c.Inflight = dir, 1
		c.ExtraAddrs = []string{"127.0.0.1:0"}
		c.TLS, c.TLSGroups = ts, []int{1}
		c.WS, c.WSGroups = edgews.New(edgews.Config{}), []WSGroup{{Group: 1, Path: "/mqtt"}}
	}
	s1 := startServer(t, cfg)
	wssAddr := s1.Addrs()[1].String()
	bob, wc, _ := dialWSS(t, wssAddr, files)
	bob.connect("wssbob", false)
	alice := &rawClient{t: t, conn: dialRaw(t, s1.Addrs()[0].String())}
	alice.connect("alice", false)
	alice.publishAcked("u/wssbob/m1", "one")
	if p := bob.expect(mqtt.TypePublish); p.Topic != "u/wssbob/m/alice/m1" {
		t.Fatalf("wssbob got %+v", p)
	}
	s2 := handOffDrainingWS(t, s1, cfg, wc) // the close frame in a valid TLS record
	bob2, _, _ := dialWSS(t, wssAddr, files)
	bob2.connect("wssbob", false)
	if p := bob2.expect(mqtt.TypePublish); p.Topic != "u/wssbob/m/alice/m1" || !p.Dup {
		t.Fatalf("after the handoff wssbob got %s dup %v, want m1 again with DUP", p.Topic, p.Dup)
	}
	if s2.Connections() != 2 {
		t.Fatalf("new server holds %d connections, want 2 (alice carried, wssbob back)", s2.Connections())
	}
}

// handOffDrainingWS hands s1, with one TCP connection and the WebSocket one
// wc, over to a new server made with cfg, as cmd/edged's upgrade does: the
// TCP connection is carried, and wc, not carried, is drained: its client
// reads the close frame 1001 (going away). It returns the new server.
func handOffDrainingWS(t *testing.T, s1 *Server, cfg func(*Config), wc *wsConn) *Server {
	t.Helper()
	h, err := s1.Freeze()
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Conns) != 1 {
		t.Fatalf("exported %d connections, want 1 (the TCP one)", len(h.Conns))
	}
	s2 := startServer(t, func(c *Config) { cfg(c); c.Handoff, c.AdminAddr = dupHandoff(t, h), "" })
	if n, err := s1.FinishDrain(h, 0); err != nil || n != 1 {
		t.Fatalf("FinishDrain: %d closed, %v; want 1 (the WebSocket one)", n, err)
	}
	wsReadToClose(t, wc)
	if wc.closeCode != 1001 {
		t.Fatalf("the WebSocket client's close code %d, want 1001 (going away)", wc.closeCode)
	}
	return s2
}

// dialWSS connects a WebSocket client over TLS (trusting files' CA) to
// addr's /mqtt.
func dialWSS(t testing.TB, addr string, files *testenv.TLSFiles) (*rawClient, *wsConn, *tls.Conn) {
	t.Helper()
	tc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: files.Pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	code, wc := wsUpgrade(t, tc, upgradeRequest("/mqtt"))
	if code != http.StatusSwitchingProtocols {
		t.Fatalf("wss upgrade: %d", code)
	}
	return &rawClient{t: t, conn: wc}, wc, tc
}
