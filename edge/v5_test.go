package edge

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
)

// client5 is a raw MQTT 5.0 client over a real socket, built on the codec.
type client5 struct {
	t    testing.TB
	conn net.Conn
	buf  []byte
	pid  uint16
}

// pkt5 is a decoded v5 packet with copies of what tests read.
type pkt5 struct {
	Type     mqtt.Type
	QoS      byte
	Retain   bool
	Topic    string
	Payload  string
	ID       uint16
	Code     byte // reason code (CONNACK, acks, DISCONNECT)
	Present  bool
	Codes    []byte
	Assigned string
	RecvMax  uint16
	MaxPkt   uint32
	Props    mqtt.Properties // aliases nothing: Raw is copied, the slices are not kept
	Raw      []byte
}

func dial5(t testing.TB, s *Server) *client5 {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &client5{t: t, conn: c}
}

func (c *client5) send(b []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// connect sends a v5 CONNECT with props and returns the CONNACK.
func (c *client5) connect(cp mqtt.Connect, props []byte) pkt5 {
	c.t.Helper()
	if cp.KeepAlive == 0 {
		cp.KeepAlive = 60
	}
	c.send(mqtt.AppendConnect5(nil, &cp, props))
	return c.expect(mqtt.TypeConnack)
}

// login connects as id with Clean Start and no session expiry.
func (c *client5) login(id string) {
	c.t.Helper()
	if p := c.connect(mqtt.Connect{ClientID: []byte(id), CleanSession: true}, nil); p.Code != 0 {
		c.t.Fatalf("connect %s: reason %#x", id, p.Code)
	}
}

func (c *client5) nextID() uint16 {
	c.pid++
	if c.pid == 0 {
		c.pid = 1
	}
	return c.pid
}

func (c *client5) publish(topic, payload string, qos byte, props []byte) uint16 {
	c.t.Helper()
	var id uint16
	if qos > 0 {
		id = c.nextID()
	}
	c.send(mqtt.AppendPublish5(nil, topic, []byte(payload), qos, false, false, id, props))
	return id
}

func (c *client5) subscribe(filter string, qos byte) byte {
	c.t.Helper()
	c.send(mqtt.AppendSubscribe5(nil, c.nextID(), nil, mqtt.Subscription5{Filter: filter, QoS: qos}))
	return c.expect(mqtt.TypeSuback).Codes[0]
}

func (c *client5) read() pkt5 {
	c.t.Helper()
	p, err := c.tryRead(10 * time.Second)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return p
}

func (c *client5) tryRead(d time.Duration) (pkt5, error) {
	c.conn.SetReadDeadline(time.Now().Add(d))
	var tmp [4096]byte
	for {
		var p mqtt.Packet
		n, err := mqtt.Decode5(c.buf, 0, &p)
		if err != nil {
			return pkt5{}, err
		}
		if n > 0 {
			out := pkt5{Type: p.Type, QoS: p.QoS, Retain: p.Retain, Topic: string(p.Topic), Payload: string(p.Payload),
				ID: p.PacketID, Code: p.ReasonCode, Present: p.SessionPresent, Codes: bytes.Clone(p.ReturnCodes),
				Assigned: string(p.Props.AssignedClientID), RecvMax: p.Props.ReceiveMaximum,
				MaxPkt: p.Props.MaximumPacketSize, Props: p.Props, Raw: bytes.Clone(p.Props.Raw)}
			c.buf = append(c.buf[:0], c.buf[n:]...)
			return out, nil
		}
		k, err := c.conn.Read(tmp[:])
		c.buf = append(c.buf, tmp[:k]...)
		if err != nil && k == 0 {
			return pkt5{}, err
		}
	}
}

func (c *client5) expect(typ mqtt.Type) pkt5 {
	c.t.Helper()
	p := c.read()
	if p.Type != typ {
		c.t.Fatalf("got %v %+v, want %v", p.Type, p, typ)
	}
	return p
}

// expectDisconnect reads the server's DISCONNECT with code, then the close.
func (c *client5) expectDisconnect(code byte) {
	c.t.Helper()
	p := c.read()
	if p.Type != mqtt.TypeDisconnect || p.Code != code {
		c.t.Fatalf("got %v reason %#x, want DISCONNECT %#x", p.Type, p.Code, code)
	}
	c.expectClosed()
}

func (c *client5) expectClosed() {
	c.t.Helper()
	for {
		_, err := c.tryRead(10 * time.Second)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.t.Fatalf("connection still open after 10 s")
		}
		return
	}
}

// ping checks that the connection is still up.
func (c *client5) ping() {
	c.t.Helper()
	c.send(mqtt.AppendPingreq(nil))
	c.expect(mqtt.TypePingresp)
}

func TestV5Connack(t *testing.T) {
	s := startServer(t, nil)
	c := dial5(t, s)
	p := c.connect(mqtt.Connect{CleanSession: true}, nil)
	if p.Code != 0 || !strings.HasPrefix(p.Assigned, "anon-") || p.RecvMax != receiveMax5 ||
		p.MaxPkt != uint32(s.cfg.MaxPacketSize) || p.Props.HasProp(mqtt.PropSharedSubAvailable) ||
		p.Props.HasProp(mqtt.PropSubIDAvailable) || p.Props.TopicAliasMaximum != aliasMax5 {
		t.Fatalf("CONNACK %+v", p)
	}
	c.ping()

	// 3.1.1 clients beside it are unchanged.
	r := dial(t, s)
	r.connect("old", false)
	if got := r.subscribe("a/b", 1); got != 1 {
		t.Fatalf("3.1.1 SUBACK %d", got)
	}
}

func TestV5PublishSubscribe(t *testing.T) {
	s := startServer(t, nil)
	sub := dial5(t, s)
	sub.login("sub")
	if code := sub.subscribe("a/+", 1); code != 1 {
		t.Fatalf("SUBACK %#x", code)
	}
	old := dial(t, s) // a 3.1.1 subscriber of the same topic
	old.connect("old", false)
	old.subscribe("a/#", 1)
	pub := dial5(t, s)
	pub.login("pub")
	id := pub.publish("a/b", "hello", 1, nil)
	if a := pub.expect(mqtt.TypePuback); a.ID != id || a.Code != 0 {
		t.Fatalf("PUBACK %+v", a)
	}
	m := sub.expect(mqtt.TypePublish)
	if m.Topic != "a/b" || m.Payload != "hello" || m.QoS != 1 {
		t.Fatalf("v5 delivery %+v", m)
	}
	sub.send(mqtt.AppendAck5(nil, mqtt.TypePuback, m.ID, 0, nil))
	if o := old.expect(mqtt.TypePublish); o.Topic != "a/b" || o.Payload != "hello" {
		t.Fatalf("3.1.1 delivery %+v", o)
	}
	// QoS 2 in and out, with v5 acknowledgements.
	id = pub.publish("a/c", "two", 2, nil)
	if r := pub.expect(mqtt.TypePubrec); r.ID != id || r.Code != 0 {
		t.Fatalf("PUBREC %+v", r)
	}
	pub.send(mqtt.AppendAck5(nil, mqtt.TypePubrel, id, 0, nil))
	pub.expect(mqtt.TypePubcomp)
	if m := sub.expect(mqtt.TypePublish); m.Payload != "two" {
		t.Fatalf("%+v", m)
	}
	// UNSUBACK reason codes: one that existed, one that did not.
	sub.send(mqtt.AppendUnsubscribe5(nil, 9, nil, "a/+", "x/y"))
	if u := sub.expect(mqtt.TypeUnsuback); !bytes.Equal(u.Codes, []byte{0, mqtt.RCNoSubscriptionExisted}) {
		t.Fatalf("UNSUBACK %x", u.Codes)
	}
}

// TestV5ProfileReasonCodes: PROTOCOL.md's MQTT 5 behaviour: a refused
// PUBLISH or SUBSCRIBE gets 0x87 and the connection stays; a full inbox
// is PUBACK 0x97 instead of an inbox_full notice.
func TestV5ProfileReasonCodes(t *testing.T) {
	s := startServer(t, func(c *Config) { c.InboxMessages = 1 })
	m := dial5(t, s)
	m.login("mallory")
	id := m.publish("u/bob/m/alice/fake", "forged", 1, nil)
	if a := m.expect(mqtt.TypePuback); a.ID != id || a.Code != mqtt.RCNotAuthorized {
		t.Fatalf("forged PUBLISH: %+v", a)
	}
	id = m.publish("$SYS/x", "x", 2, nil)
	if a := m.expect(mqtt.TypePubrec); a.ID != id || a.Code != mqtt.RCNotAuthorized {
		t.Fatalf("$SYS PUBLISH: %+v", a)
	}
	if code := m.subscribe("u/bob/#", 1); code != mqtt.RCNotAuthorized {
		t.Fatalf("SUBSCRIBE u/bob/#: %#x", code)
	}
	if code := m.subscribe("$share/g/u/bob/#", 1); code != mqtt.RCNotAuthorized {
		t.Fatalf("SUBSCRIBE $share/g/u/bob/#: %#x", code)
	}
	m.ping()

	a := dial5(t, s)
	a.login("alice")
	for i, want := range []byte{0, mqtt.RCQuotaExceeded} {
		id := a.publish("u/bob/m"+string(rune('1'+i)), "hi", 1, nil)
		if p := a.expect(mqtt.TypePuback); p.ID != id || p.Code != want {
			t.Fatalf("message %d: PUBACK %+v, want reason %#x", i+1, p, want)
		}
	}
	if n := s.InboxLen("alice"); n != 0 {
		t.Fatalf("alice's inbox holds %d entries: a notice was stored beside the 0x97", n)
	}
	if n := s.InboxLen("bob"); n != 1 {
		t.Fatalf("bob's inbox holds %d", n)
	}
	// bob, a v5 client, receives it in the v5 form and acknowledges it.
	b := dial5(t, s)
	b.login("bob")
	p := b.expect(mqtt.TypePublish)
	if p.Topic != "u/bob/m/alice/m1" {
		t.Fatalf("%+v", p)
	}
	b.send(mqtt.AppendAck5(nil, mqtt.TypePuback, p.ID, 0, nil))
	if r := a.expect(mqtt.TypePublish); r.Topic != "u/alice/d/bob/m1" {
		t.Fatalf("receipt %+v", r)
	}
}

// TestV5BadInput: every bad v5 field has its reason code, then the close;
// bystanders are unaffected.
func TestV5BadInput(t *testing.T) {
	s := startServer(t, func(c *Config) { c.MaxPacketSize = 1024 })
	check := bystanders(t, s)
	pubProps := func(props ...byte) []byte {
		return mqtt.AppendPublish5(nil, "a/b", []byte("x"), 0, false, false, 0, props)
	}
	tests := []struct {
		name string
		pkt  []byte
		code byte
	}{
		{"property twice", pubProps(mqtt.PropPayloadFormat, 0, mqtt.PropPayloadFormat, 0), mqtt.RCProtocolError},
		{"unknown property", pubProps(0x05, 0), mqtt.RCMalformed},
		{"topic alias past the maximum", pubProps(mqtt.PropTopicAlias, 0, aliasMax5+1), mqtt.RCTopicAliasInvalid},
		{"topic alias never set", mqtt.AppendPublish5(nil, "", []byte("x"), 0, false, false, 0,
			mqtt.AppendU16Prop(nil, mqtt.PropTopicAlias, 2)), mqtt.RCProtocolError},
		{"topic alias 0", pubProps(mqtt.PropTopicAlias, 0, 0), mqtt.RCTopicAliasInvalid},
		{"subscription id in PUBLISH", pubProps(mqtt.PropSubscriptionID, 1), mqtt.RCProtocolError},
		{"over maximum packet size", mqtt.AppendPublish5(nil, "a/b", make([]byte, 2000), 0, false, false, 0, nil), mqtt.RCPacketTooLarge},
		{"AUTH", mqtt.AppendAuth(nil, mqtt.RCContinueAuth, nil), mqtt.RCProtocolError},
		{"subscription identifier 0", []byte{0x82, 8, 0, 1, 2, mqtt.PropSubscriptionID, 0, 0, 1, 'a', 0}, mqtt.RCProtocolError},
		{"retain handling 3", []byte{0x82, 7, 0, 1, 0, 0, 1, 'a', 0x30}, mqtt.RCProtocolError},
		{"second CONNECT", mqtt.AppendConnect5(nil, &mqtt.Connect{ClientID: []byte("z")}, nil), mqtt.RCProtocolError},
		{"puback bad reason", []byte{0x40, 3, 0, 1, 0x05}, mqtt.RCMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial5(t, s)
			c.login("bad-" + strings.ReplaceAll(tt.name, " ", "-"))
			c.send(tt.pkt)
			c.expectDisconnect(tt.code)
		})
	}
	// CONNECT-time errors: a CONNACK with the reason code.
	for _, tt := range []struct {
		name  string
		props []byte
		code  byte
	}{
		{"receive maximum 0", mqtt.AppendU16Prop(nil, mqtt.PropReceiveMaximum, 0), mqtt.RCProtocolError},
		{"maximum packet size 0", mqtt.AppendU32Prop(nil, mqtt.PropMaximumPacketSize, 0), mqtt.RCProtocolError},
		{"session expiry twice", append(mqtt.AppendU32Prop(nil, mqtt.PropSessionExpiry, 1), mqtt.AppendU32Prop(nil, mqtt.PropSessionExpiry, 2)...), mqtt.RCProtocolError},
		{"unknown property", []byte{0x7E, 0}, mqtt.RCMalformed},
		{"enhanced auth", mqtt.AppendStringProp(nil, mqtt.PropAuthMethod, "SCRAM-SHA-1"), mqtt.RCBadAuthMethod},
	} {
		t.Run("connect "+tt.name, func(t *testing.T) {
			c := dial5(t, s)
			p := c.connect(mqtt.Connect{ClientID: []byte("x"), CleanSession: true}, tt.props)
			if p.Code != tt.code {
				t.Fatalf("CONNACK reason %#x, want %#x", p.Code, tt.code)
			}
			c.expectClosed()
		})
	}
	// A v5 packet on a 3.1.1 connection is malformed there: closed.
	r := dial(t, s)
	r.connect("old", false)
	r.send(mqtt.AppendAck5(nil, mqtt.TypePuback, 1, mqtt.RCQuotaExceeded, nil))
	r.expectClosed()
	r2 := dial(t, s)
	r2.connect("old2", false)
	r2.send(mqtt.AppendAuth(nil, 0x18, nil))
	r2.expectClosed()
	check()
}

// TestV5ClientLimits: the server keeps to the client's Receive Maximum and
// Maximum Packet Size.
func TestV5ClientLimits(t *testing.T) {
	s := startServer(t, nil)
	c := dial5(t, s)
	props := append(mqtt.AppendU16Prop(nil, mqtt.PropReceiveMaximum, 2), mqtt.AppendU32Prop(nil, mqtt.PropMaximumPacketSize, 100)...)
	if p := c.connect(mqtt.Connect{ClientID: []byte("small"), CleanSession: true}, props); p.Code != 0 {
		t.Fatal(p.Code)
	}
	c.subscribe("t/#", 1)
	pub := dial5(t, s)
	pub.login("pub")
	pub.publish("t/big", strings.Repeat("x", 200), 1, nil) // over 100 bytes: not sent
	pub.expect(mqtt.TypePuback)
	for i := range 4 {
		pub.publish("t/small", string(rune('a'+i)), 1, nil)
		pub.expect(mqtt.TypePuback)
	}
	var got []string
	for range 2 {
		got = append(got, c.expect(mqtt.TypePublish).Payload)
	}
	if _, err := c.tryRead(300 * time.Millisecond); err == nil {
		t.Fatal("a third PUBLISH past Receive Maximum 2")
	}
	if got[0] != "a" || got[1] != "b" {
		t.Fatalf("got %q (the big one must be dropped)", got)
	}
	if s.stats.tooBig.Load() != 1 {
		t.Fatalf("tooBig = %d", s.stats.tooBig.Load())
	}
}

// TestV5DisconnectWill: DISCONNECT 0x04 sends the will, 0x00 does not.
func TestV5DisconnectWill(t *testing.T) {
	s := startServer(t, nil)
	w := dial5(t, s)
	w.login("watcher")
	w.subscribe("will/#", 0)
	for _, tt := range []struct {
		code byte
		sent bool
	}{{mqtt.RCDisconnectWithWill, true}, {mqtt.RCSuccess, false}} {
		c := dial5(t, s)
		cp := mqtt.Connect{ClientID: []byte("dying"), CleanSession: true, WillFlag: true,
			WillTopic: []byte("will/dying"), WillMessage: []byte{'0' + tt.code}}
		if p := c.connect(cp, nil); p.Code != 0 {
			t.Fatal(p.Code)
		}
		c.send(mqtt.AppendDisconnect5(nil, tt.code, nil))
		c.expectClosed()
		p, err := w.tryRead(500 * time.Millisecond)
		if tt.sent && (err != nil || p.Topic != "will/dying") {
			t.Fatalf("DISCONNECT %#x: will not sent (%v %+v)", tt.code, err, p)
		}
		if !tt.sent && err == nil {
			t.Fatalf("DISCONNECT %#x: will sent: %+v", tt.code, p)
		}
	}
}

// TestV5SessionExpiry: a Session Expiry Interval keeps the session (its
// subscription and queued QoS 1 messages) past the connection; Clean
// Start with no expiry does not.
func TestV5SessionExpiry(t *testing.T) {
	s := startServer(t, nil)
	expiry := mqtt.AppendU32Prop(nil, mqtt.PropSessionExpiry, 3600)
	c := dial5(t, s)
	if p := c.connect(mqtt.Connect{ClientID: []byte("dev"), CleanSession: true}, expiry); p.Code != 0 || p.Present {
		t.Fatalf("%+v", p)
	}
	c.subscribe("s/#", 1)
	c.send(mqtt.AppendDisconnect5(nil, 0, nil))
	c.expectClosed()
	pub := dial5(t, s)
	pub.login("pub")
	pub.publish("s/1", "queued", 1, nil)
	pub.expect(mqtt.TypePuback)
	c = dial5(t, s)
	p := c.connect(mqtt.Connect{ClientID: []byte("dev")}, expiry)
	if !p.Present {
		t.Fatalf("session not present: %+v", p)
	}
	if m := c.expect(mqtt.TypePublish); m.Payload != "queued" {
		t.Fatalf("%+v", m)
	}
	// DISCONNECT with Session Expiry 0 ends it.
	c.send(mqtt.AppendDisconnect5(nil, 0, mqtt.AppendU32Prop(nil, mqtt.PropSessionExpiry, 0)))
	c.expectClosed()
	c = dial5(t, s)
	if p := c.connect(mqtt.Connect{ClientID: []byte("dev")}, nil); p.Present {
		t.Fatal("session present after DISCONNECT with expiry 0")
	}
	// Raising the expiry from 0 at DISCONNECT is a protocol error.
	c.send(mqtt.AppendDisconnect5(nil, 0, expiry))
	c.expectDisconnect(mqtt.RCProtocolError)
}

// TestV5ServerDisconnects: takeover and keepalive closes carry their code.
func TestV5ServerDisconnects(t *testing.T) {
	s := startServer(t, nil)
	a := dial5(t, s)
	a.login("dup")
	b := dial5(t, s)
	b.login("dup")
	a.expectDisconnect(mqtt.RCSessionTakenOver)
	k := dial5(t, s)
	if p := k.connect(mqtt.Connect{ClientID: []byte("idle"), CleanSession: true, KeepAlive: 1}, nil); p.Code != 0 {
		t.Fatal(p.Code)
	}
	k.expectDisconnect(mqtt.RCKeepAliveTimeout)
}

// forwardedProps5 is a PUBLISH property block with each property that
// travels to subscribers: payload format 1, the Message Expiry, content
// type text/plain, the response topic, the correlation data and the user
// properties kv (key, value, key, value...).
func forwardedProps5(expiry uint32, response string, corr []byte, kv ...string) []byte {
	b := mqtt.AppendByteProp(nil, mqtt.PropPayloadFormat, 1)
	b = mqtt.AppendU32Prop(b, mqtt.PropMessageExpiry, expiry)
	b = mqtt.AppendStringProp(b, mqtt.PropContentType, "text/plain")
	b = mqtt.AppendStringProp(b, mqtt.PropResponseTopic, response)
	b = mqtt.AppendStringProp(b, mqtt.PropCorrelationData, corr)
	for i := 0; i+1 < len(kv); i += 2 {
		b = mqtt.AppendUserProp(b, kv[i], kv[i+1])
	}
	return b
}

// TestV5PropertiesPassThrough: a v5 PUBLISH's properties reach v5
// subscribers (generic and profile), the Message Expiry as what remains;
// a 3.1.1 subscriber gets the plain message; an expired message is
// dropped instead of delivered.
func TestV5PropertiesPassThrough(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Now().Unix())
	s := startServer(t, func(c *Config) { c.Now = func() time.Time { return time.Unix(now.Load(), 0) } })
	sub := dial5(t, s)
	sub.login("sub5")
	sub.subscribe("pp/#", 1)
	old := dial(t, s)
	old.connect("old", false)
	old.subscribe("pp/#", 1)
	props := forwardedProps5(60, "pp/reply", []byte{7, 8}, "k", "v1", "k", "v2")
	pub := dial5(t, s)
	pub.login("pub")
	pub.publish("pp/a", "body", 1, props)
	pub.expect(mqtt.TypePuback)
	check := func(p pkt5) {
		t.Helper()
		pr := p.Props
		var kv []string
		for k, v := range mqtt.UserProps(p.Raw) {
			kv = append(kv, string(k)+"="+string(v))
		}
		if p.Payload != "body" || pr.PayloadFormat != 1 || pr.MessageExpiry == 0 || pr.MessageExpiry > 60 ||
			string(pr.ContentType) != "text/plain" || string(pr.ResponseTopic) != "pp/reply" ||
			!bytes.Equal(pr.CorrelationData, []byte{7, 8}) || strings.Join(kv, ",") != "k=v1,k=v2" {
			t.Fatalf("delivered %+v user props %q", p, kv)
		}
	}
	m := sub.expect(mqtt.TypePublish)
	check(m)
	sub.send(mqtt.AppendAck5(nil, mqtt.TypePuback, m.ID, 0, nil))
	if o := old.expect(mqtt.TypePublish); o.Topic != "pp/a" || o.Payload != "body" {
		t.Fatalf("3.1.1 delivery %+v", o)
	}

	// Profile: a direct message keeps its properties.
	b := dial5(t, s)
	b.login("bob")
	a := dial5(t, s)
	a.login("alice")
	a.publish("u/bob/m1", "body", 1, props)
	a.expect(mqtt.TypePuback)
	d := b.expect(mqtt.TypePublish)
	if d.Topic != "u/bob/m/alice/m1" {
		t.Fatalf("%+v", d)
	}
	check(d)

	// Expiry: 60 s after, a queued message is dropped, not sent.
	sub.send(mqtt.AppendDisconnect5(nil, 0, nil))
	sub.expectClosed()
	c := dial5(t, s)
	expiry := mqtt.AppendU32Prop(nil, mqtt.PropSessionExpiry, 3600)
	c.connect(mqtt.Connect{ClientID: []byte("later"), CleanSession: true}, expiry)
	c.subscribe("ex/#", 1)
	c.send(mqtt.AppendDisconnect5(nil, 0, nil))
	c.expectClosed()
	pub.publish("ex/1", "stale", 1, mqtt.AppendU32Prop(nil, mqtt.PropMessageExpiry, 30))
	pub.expect(mqtt.TypePuback)
	pub.publish("ex/2", "fresh", 1, mqtt.AppendU32Prop(nil, mqtt.PropMessageExpiry, 300))
	pub.expect(mqtt.TypePuback)
	now.Add(60)
	c = dial5(t, s)
	if p := c.connect(mqtt.Connect{ClientID: []byte("later")}, expiry); !p.Present {
		t.Fatal("no session")
	}
	p := c.expect(mqtt.TypePublish)
	if p.Payload != "fresh" || p.Props.MessageExpiry != 240 {
		t.Fatalf("after 60 s got %+v (expiry %d)", p, p.Props.MessageExpiry)
	}
	if s.stats.expired5.Load() != 1 {
		t.Fatalf("expired5 = %d", s.stats.expired5.Load())
	}
}

// TestV5SessionSurvivesRestart: a v5 session (Session Expiry Interval),
// its subscription and a queued message with its properties come back
// after a stop and start on the same data dir.
func TestV5SessionSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	s := startDurable(t, dir, nil)
	expiry := mqtt.AppendU32Prop(nil, mqtt.PropSessionExpiry, 3600)
	c := dial5(t, s)
	c.connect(mqtt.Connect{ClientID: []byte("dev"), CleanSession: true}, expiry)
	c.subscribe("r/x/#", 1) // r/ is the profile's: refused
	c.subscribe("dev/#", 1)
	c.send(mqtt.AppendDisconnect5(nil, 0, nil))
	c.expectClosed()
	waitFor(t, "dev offline", func() bool { return s.Connections() == 0 })
	pub := dial5(t, s)
	pub.login("pub")
	pub.publish("dev/1", "kept", 1, mqtt.AppendUserProp(nil, "trace", "abc"))
	pub.expect(mqtt.TypePuback)
	s.Close()

	s = startDurable(t, dir, nil)
	c = dial5(t, s)
	if p := c.connect(mqtt.Connect{ClientID: []byte("dev")}, expiry); !p.Present {
		t.Fatal("v5 session not present after restart")
	}
	m := c.expect(mqtt.TypePublish)
	var kv []string
	for k, v := range mqtt.UserProps(m.Raw) {
		kv = append(kv, string(k)+"="+string(v))
	}
	if m.Payload != "kept" || strings.Join(kv, ",") != "trace=abc" {
		t.Fatalf("after restart %+v %q", m, kv)
	}
}

// TestV5TopicAlias: a client sets an alias with a topic and then publishes
// with the alias alone; aliases are per connection.
func TestV5TopicAlias(t *testing.T) {
	s := startServer(t, nil)
	sub := dial5(t, s)
	sub.login("sub")
	sub.subscribe("al/#", 0)
	pub := dial5(t, s)
	pub.login("pub")
	alias := func(a uint16) []byte { return mqtt.AppendU16Prop(nil, mqtt.PropTopicAlias, a) }
	pub.publish("al/one", "1", 0, alias(1))
	pub.publish("al/two", "2", 0, alias(aliasMax5))
	pub.publish("", "3", 0, alias(1))
	pub.publish("", "4", 1, alias(aliasMax5))
	pub.expect(mqtt.TypePuback)
	pub.publish("al/three", "5", 0, alias(1)) // re-pointed
	pub.publish("", "6", 0, alias(1))
	want := []string{"al/one 1", "al/two 2", "al/one 3", "al/two 4", "al/three 5", "al/three 6"}
	for _, w := range want {
		if p := sub.expect(mqtt.TypePublish); p.Topic+" "+p.Payload != w || p.Props.TopicAlias != 0 {
			t.Fatalf("got %q (alias %d), want %q", p.Topic+" "+p.Payload, p.Props.TopicAlias, w)
		}
	}
	other := dial5(t, s)
	other.login("other")
	other.publish("", "x", 0, alias(1))
	other.expectDisconnect(mqtt.RCProtocolError)
}

// TestV5SubscriptionOptions: No Local, Retain As Published and Retain
// Handling 0/1/2 (3.8.3.1).
func TestV5SubscriptionOptions(t *testing.T) {
	s := startServer(t, nil)
	c := dial5(t, s)
	c.login("me")
	sub := func(f string, o mqtt.Subscription5) byte {
		o.Filter = f
		c.send(mqtt.AppendSubscribe5(nil, c.nextID(), nil, o))
		return c.expect(mqtt.TypeSuback).Codes[0]
	}
	// No Local: my own publish does not come back; another's does.
	sub("nl/#", mqtt.Subscription5{QoS: 0, NoLocal: true})
	c.publish("nl/a", "mine", 0, nil)
	other := dial5(t, s)
	other.login("other")
	other.publish("nl/a", "theirs", 0, nil)
	if p := c.expect(mqtt.TypePublish); p.Payload != "theirs" {
		t.Fatalf("No Local: got %+v", p)
	}
	// Retain As Published: the live copy keeps RETAIN; without it, not.
	r := dial(t, s)
	r.connect("r311", false)
	sub("rap/#", mqtt.Subscription5{QoS: 0, RetainAsPublished: true})
	r.subscribe("rap/#", 0)
	other.send(mqtt.AppendPublish5(nil, "rap/x", []byte("kept"), 0, true, false, 0, nil))
	if p := c.expect(mqtt.TypePublish); p.Payload != "kept" || !p.Retain {
		t.Fatalf("Retain As Published: %+v", p)
	}
	if p := r.expect(mqtt.TypePublish); p.Retain {
		t.Fatal("3.1.1 live delivery with RETAIN set")
	}
	// Retain Handling: 0 sends the retained message, 1 only for a new
	// subscription, 2 never.
	rh := dial5(t, s)
	rh.login("rh")
	get := func(f string, h byte) bool {
		rh.send(mqtt.AppendSubscribe5(nil, rh.nextID(), nil, mqtt.Subscription5{Filter: f, RetainHandling: h}))
		rh.expect(mqtt.TypeSuback)
		p, err := rh.tryRead(300 * time.Millisecond)
		return err == nil && p.Type == mqtt.TypePublish && p.Payload == "kept"
	}
	for _, tt := range []struct {
		h    byte
		want bool
	}{{2, false}, {1, false}, {0, true}} { // rap/x exists after the first
		if got := get("rap/x", tt.h); got != tt.want {
			t.Fatalf("Retain Handling %d on an existing subscription: retained sent = %v", tt.h, got)
		}
	}
	if !get("rap/+", 1) {
		t.Fatal("Retain Handling 1 on a new subscription: no retained message")
	}
}

// TestV5SharedSubscriptions: each message of a $share group goes to one
// member, in turn; a plain subscriber still gets every one; an offline
// member is skipped; unsubscribing leaves the group.
func TestV5SharedSubscriptions(t *testing.T) {
	s := startServer(t, nil)
	var members []*client5
	for _, id := range []string{"w1", "w2", "w3"} {
		c := dial5(t, s)
		c.login(id)
		if code := c.subscribe("$share/workers/jobs/#", 1); code != 1 {
			t.Fatalf("SUBACK %#x", code)
		}
		members = append(members, c)
	}
	all := dial5(t, s)
	all.login("all")
	all.subscribe("jobs/#", 0)
	pub := dial5(t, s)
	pub.login("pub")
	const n = 30
	for i := range n {
		pub.publish("jobs/x", string(rune('A'+i)), 1, nil)
		pub.expect(mqtt.TypePuback)
	}
	counts := map[string]int{}
	for range n {
		all.expect(mqtt.TypePublish)
	}
	for i, c := range members {
		for {
			p, err := c.tryRead(300 * time.Millisecond)
			if err != nil {
				break
			}
			counts[string(rune('1'+i))]++
			c.send(mqtt.AppendAck5(nil, mqtt.TypePuback, p.ID, 0, nil))
		}
	}
	total := 0
	for k, v := range counts {
		total += v
		if v != n/3 {
			t.Errorf("member w%s got %d of %d, want %d (round robin)", k, v, n, n/3)
		}
	}
	if total != n {
		t.Fatalf("members got %d messages in all, want %d exactly once each", total, n)
	}
	// One member leaves (UNSUBSCRIBE), one goes offline: the last gets all.
	members[0].send(mqtt.AppendUnsubscribe5(nil, 99, nil, "$share/workers/jobs/#"))
	if u := members[0].expect(mqtt.TypeUnsuback); u.Codes[0] != 0 {
		t.Fatalf("UNSUBACK %#x", u.Codes[0])
	}
	members[1].conn.Close()
	// Offline for the group once its record says so (OnClose counts the
	// connection gone a little before it clears the owner).
	waitFor(t, "w2 offline", func() bool {
		cl := s.reg.lock([]byte("w2"), false)
		if cl == nil {
			return true
		}
		defer cl.mu.Unlock()
		return cl.owner.Load() == 0
	})
	for i := range 4 {
		pub.publish("jobs/y", string(rune('a'+i)), 0, nil)
	}
	for i := range 4 {
		if p := members[2].expect(mqtt.TypePublish); p.Payload != string(rune('a'+i)) {
			t.Fatalf("w3 got %+v", p)
		}
	}
	if _, err := members[0].tryRead(200 * time.Millisecond); err == nil {
		t.Fatal("w1 got a message after leaving the group")
	}
}

// TestV5SubscriptionIdentifiers: a message carries the identifier of the
// subscription it matched; it survives a restart with the session.
func TestV5SubscriptionIdentifiers(t *testing.T) {
	dir := t.TempDir()
	s := startDurable(t, dir, nil)
	expiry := mqtt.AppendU32Prop(nil, mqtt.PropSessionExpiry, 3600)
	c := dial5(t, s)
	c.connect(mqtt.Connect{ClientID: []byte("ids"), CleanSession: true}, expiry)
	for _, sub := range []struct {
		f  string
		id int
	}{{"a/#", 7}, {"b/+", 300000}} {
		c.send(mqtt.AppendSubscribe5(nil, c.nextID(), mqtt.AppendVBIProp(nil, mqtt.PropSubscriptionID, sub.id),
			mqtt.Subscription5{Filter: sub.f, QoS: 1}))
		c.expect(mqtt.TypeSuback)
	}
	c.subscribe("c/#", 1) // none
	pub := dial5(t, s)
	pub.login("pub")
	ids := func(p pkt5) (out []uint32) {
		for id := range mqtt.SubIDs(p.Raw) {
			out = append(out, id)
		}
		return out
	}
	for _, tt := range []struct {
		topic string
		want  uint32
	}{{"a/x", 7}, {"b/y", 300000}, {"c/z", 0}} {
		pub.publish(tt.topic, "m", 1, mqtt.AppendUserProp(nil, "k", "v"))
		pub.expect(mqtt.TypePuback)
		p := c.expect(mqtt.TypePublish)
		got := ids(p)
		if tt.want == 0 && len(got) != 0 || tt.want != 0 && (len(got) != 1 || got[0] != tt.want) {
			t.Fatalf("%s: subscription ids %v, want %d", tt.topic, got, tt.want)
		}
		c.send(mqtt.AppendAck5(nil, mqtt.TypePuback, p.ID, 0, nil))
	}
	c.send(mqtt.AppendDisconnect5(nil, 0, nil))
	c.expectClosed()
	s.Close()
	s = startDurable(t, dir, nil)
	c = dial5(t, s)
	c.connect(mqtt.Connect{ClientID: []byte("ids")}, expiry)
	pub = dial5(t, s)
	pub.login("pub")
	pub.publish("b/q", "after", 0, nil)
	if p := c.expect(mqtt.TypePublish); len(ids(p)) != 1 || ids(p)[0] != 300000 {
		t.Fatalf("after restart: %+v", p)
	}
}

// TestV5WillDelay: a will with a Will Delay Interval goes out after the
// delay, with its properties; a reconnect within the delay cancels it.
func TestV5WillDelay(t *testing.T) {
	s := startServer(t, nil)
	w := dial5(t, s)
	w.login("watcher")
	w.subscribe("wd/#", 0)
	connectWill := func(id string) *client5 {
		c := dial5(t, s)
		cp := mqtt.Connect{ClientID: []byte(id), CleanSession: true, WillFlag: true,
			WillTopic: []byte("wd/" + id), WillMessage: []byte("gone")}
		cp.WillProps.Raw = append(mqtt.AppendU32Prop(nil, mqtt.PropWillDelay, 1), mqtt.AppendUserProp(nil, "why", "test")...)
		if p := c.connect(cp, nil); p.Code != 0 {
			t.Fatal(p.Code)
		}
		return c
	}
	a := connectWill("a")
	start := time.Now()
	a.conn.Close() // no DISCONNECT: the will is due, after 1 s
	if _, err := w.tryRead(500 * time.Millisecond); err == nil {
		t.Fatal("will sent before its delay")
	}
	p := w.expect(mqtt.TypePublish)
	var kv []string
	for k, v := range mqtt.UserProps(p.Raw) {
		kv = append(kv, string(k)+"="+string(v))
	}
	if p.Topic != "wd/a" || strings.Join(kv, ",") != "why=test" || time.Since(start) < time.Second {
		t.Fatalf("will %+v %q after %v", p, kv, time.Since(start))
	}
	b := connectWill("b")
	b.conn.Close()
	again := dial5(t, s)
	again.login("b") // back within the delay
	if p, err := w.tryRead(1500 * time.Millisecond); err == nil {
		t.Fatalf("will sent although the client reconnected: %+v", p)
	}
}

// TestV5Handoff: an upgrade carries MQTT 5.0 connections like 3.1.1 ones,
// with their negotiated state (conn5) and inbound topic aliases.
func TestV5Handoff(t *testing.T) {
	dir := t.TempDir()
	s1 := startDurable(t, dir, nil)
	old := dial(t, s1)
	old.connect("old", false)
	v5 := dial5(t, s1)
	expiry := mqtt.AppendU32Prop(nil, mqtt.PropSessionExpiry, 3600)
	v5.connect(mqtt.Connect{ClientID: []byte("new"), CleanSession: true}, expiry)
	v5.subscribe("h/#", 1)
	// al takes topic aliases from the server (Topic Alias Maximum 2).
	al := dial5(t, s1)
	al.connect(mqtt.Connect{ClientID: []byte("al"), CleanSession: true}, mqtt.AppendU16Prop(nil, mqtt.PropTopicAliasMaximum, 2))
	al.subscribe("h/#", 0)
	pub := dial5(t, s1)
	pub.login("pub")
	alias := func(a uint16) []byte { return mqtt.AppendU16Prop(nil, mqtt.PropTopicAlias, a) }
	pub.publish("h/aliased", "before", 0, alias(3))
	if p := v5.expect(mqtt.TypePublish); p.Topic != "h/aliased" || p.Payload != "before" {
		t.Fatalf("%+v", p)
	}
	if p := al.expect(mqtt.TypePublish); p.Topic != "h/aliased" || p.Props.TopicAlias != 1 {
		t.Fatalf("al before the handoff: %+v", p)
	}
	h, err := s1.Freeze()
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Conns) != 4 {
		t.Fatalf("exported %d connections, want 4 (3.1.1 and MQTT 5.0 alike)", len(h.Conns))
	}
	h2 := dupHandoff(t, h)
	s2 := startServer(t, func(c *Config) { c.DataDir, c.Handoff, c.AdminAddr = dir, h2, "" })
	if err := s1.Finish(); err != nil {
		t.Fatal(err)
	}
	old.send(mqtt.AppendPingreq(nil))
	old.expect(mqtt.TypePingresp)
	// The v5 connections go on: the publisher's alias still names its
	// topic, and the subscriber still gets v5 PUBLISHes (a property block).
	pub.publish("", "after", 1, alias(3))
	pub.expect(mqtt.TypePuback)
	if p := v5.expect(mqtt.TypePublish); p.Topic != "h/aliased" || p.Payload != "after" {
		t.Fatalf("after the handoff: %+v", p)
	} else {
		v5.send(mqtt.AppendAck5(nil, mqtt.TypePuback, p.ID, 0, nil))
	}
	// Toward al the new process starts with no aliases: it sets alias 1
	// again with the topic (al's Topic Alias Maximum came along), then
	// sends it alone.
	if p := al.expect(mqtt.TypePublish); p.Topic != "h/aliased" || p.Props.TopicAlias != 1 || p.Payload != "after" {
		t.Fatalf("al after the handoff: %+v", p)
	}
	pub.publish("h/aliased", "again", 0, nil)
	if p := al.expect(mqtt.TypePublish); p.Topic != "" || p.Props.TopicAlias != 1 || p.Payload != "again" {
		t.Fatalf("al after the handoff, second: %+v", p)
	}
	v5.expect(mqtt.TypePublish)
	pub.publish("", "x", 0, alias(4)) // never set: still a protocol error on the new server
	pub.expectDisconnect(mqtt.RCProtocolError)
	if n := s2.Connections(); n != 3 {
		t.Fatalf("new server holds %d connections, want 3", n)
	}
}

// TestV5DrainDisconnect: in a drain (the new binary cannot read the
// state), an MQTT 5.0 client hears DISCONNECT 0x8B (server shutting down)
// before the end of its stream, and finds its session on the new server.
func TestV5DrainDisconnect(t *testing.T) {
	dir := t.TempDir()
	s1 := startDurable(t, dir, nil)
	old := dial(t, s1)
	old.connect("old", true)
	v5 := dial5(t, s1)
	expiry := mqtt.AppendU32Prop(nil, mqtt.PropSessionExpiry, 3600)
	v5.connect(mqtt.Connect{ClientID: []byte("new"), CleanSession: true}, expiry)
	v5.subscribe("d/#", 1)
	h, err := s1.Freeze()
	if err != nil {
		t.Fatal(err)
	}
	h.Drain, h.State = true, nil
	h2 := dupHandoff(t, &Handoff{Version: h.Version, Listeners: h.Listeners, Lock: h.Lock}) // a drain sends no connection
	h2.Drain = true
	s2 := startServer(t, func(c *Config) { c.DataDir, c.Handoff, c.AdminAddr = dir, h2, "" })
	done := make(chan int, 1)
	go func() { n, _ := s1.FinishDrain(h, 0); done <- n }()
	v5.expectDisconnect(mqtt.RCServerShuttingDown)
	v5.expectClosed()
	old.expectClosed()
	if n := <-done; n != 2 {
		t.Fatalf("drained %d connections, want 2", n)
	}
	again := dial5(t, s2)
	if p := again.connect(mqtt.Connect{ClientID: []byte("new")}, expiry); !p.Present {
		t.Fatal("the v5 session did not survive the drain")
	}
}

// TestV5ReceiveMaximum: the server's Receive Maximum (CONNACK) bounds the
// QoS 1 and 2 PUBLISHes a client has sent and the server not yet
// acknowledged: one past it is DISCONNECT 0x93 (3.3.4). QoS 2 ones are
// unacknowledged until PUBREL; QoS 1 ones while their PUBACK waits for the
// store's fsync, so a durable server and one write of more than
// receiveMax5 PUBLISHes (read in one pass, before any fsync).
func TestV5ReceiveMaximum(t *testing.T) {
	t.Run("qos1", func(t *testing.T) {
		s := startDurable(t, t.TempDir(), func(c *Config) { c.PublishRate = -1 })
		c := dial5(t, s)
		if p := c.connect(mqtt.Connect{ClientID: []byte("burst"), CleanSession: true}, nil); p.Code != 0 || p.RecvMax != receiveMax5 {
			t.Fatalf("CONNACK %+v", p)
		}
		var b []byte
		for i := range receiveMax5 + 1 {
			b = mqtt.AppendPublish5(b, "rm/x", []byte{byte(i)}, 1, false, false, uint16(i+1), nil)
		}
		c.send(b)
		acks := 0
		for {
			p := c.read()
			if p.Type == mqtt.TypePuback {
				acks++
				continue
			}
			if p.Type != mqtt.TypeDisconnect || p.Code != mqtt.RCReceiveMaximumExceeded {
				t.Fatalf("got %v %#x after %d PUBACKs, want DISCONNECT 0x93", p.Type, p.Code, acks)
			}
			break
		}
		c.expectClosed()
		if acks > receiveMax5 {
			t.Fatalf("%d PUBACKs, past Receive Maximum %d", acks, receiveMax5)
		}
		// Within the maximum, with PUBACKs awaited: fine.
		ok := dial5(t, s)
		ok.login("steady")
		for range 3 {
			b = b[:0]
			for i := range receiveMax5 {
				b = mqtt.AppendPublish5(b, "rm/y", nil, 1, false, false, uint16(i+1), nil)
			}
			ok.send(b)
			for range receiveMax5 {
				ok.expect(mqtt.TypePuback)
			}
		}
		ok.ping()
	})
	t.Run("qos2", func(t *testing.T) {
		s := startServer(t, func(c *Config) { c.PublishRate = -1 })
		c := dial5(t, s)
		c.login("q2")
		var b []byte
		for i := range receiveMax5 {
			b = mqtt.AppendPublish5(b, "rm/z", nil, 2, false, false, uint16(i+1), nil)
		}
		c.send(b)
		for range receiveMax5 {
			c.expect(mqtt.TypePubrec)
		}
		// One PUBREL frees one place: the next PUBLISH fits, the one after not.
		c.send(mqtt.AppendAck5(nil, mqtt.TypePubrel, 1, 0, nil))
		c.expect(mqtt.TypePubcomp)
		c.send(mqtt.AppendPublish5(nil, "rm/z", nil, 2, false, false, 1, nil))
		c.expect(mqtt.TypePubrec)
		c.send(mqtt.AppendPublish5(nil, "rm/z", nil, 2, false, false, receiveMax5+1, nil))
		c.expectDisconnect(mqtt.RCReceiveMaximumExceeded)
	})
}

// TestV5SessionExpiryCountdown: a persistent v5 session is discarded its
// Session Expiry Interval after the disconnect (3.1.2.11.2): resumed
// within it, gone after it, both for a reconnect and for the sweep, which
// ends it without one; a DISCONNECT may change the interval; the profile's
// inbox outlives the session (PROTOCOL.md). The clock is the server's
// Config.Now; the sweeper runs on its real one-second tick.
func TestV5SessionExpiryCountdown(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Now().Unix())
	s := startServer(t, func(c *Config) { c.Now = func() time.Time { return time.Unix(now.Load(), 0) } })
	expiry := func(n uint32) []byte { return mqtt.AppendU32Prop(nil, mqtt.PropSessionExpiry, n) }
	others := int64(1) // pub, then alice too
	leave := func(c *client5, props []byte) {
		t.Helper()
		c.send(mqtt.AppendDisconnect5(nil, 0, props))
		c.expectClosed()
		waitFor(t, "offline", func() bool { return s.Connections() == others })
	}
	pub := dial5(t, s)
	pub.login("pub")
	publish := func(topic string) {
		t.Helper()
		pub.publish(topic, topic, 1, nil)
		pub.expect(mqtt.TypePuback)
	}

	dev := dial5(t, s)
	if p := dev.connect(mqtt.Connect{ClientID: []byte("dev"), CleanSession: true}, expiry(5)); p.Code != 0 || p.Props.SessionExpiry != 5 {
		t.Fatalf("CONNACK %+v", p)
	}
	dev.subscribe("se/#", 1)
	leave(dev, nil)
	publish("se/1")
	now.Add(4) // within the interval: resumed, with what waited
	dev = dial5(t, s)
	if p := dev.connect(mqtt.Connect{ClientID: []byte("dev")}, expiry(5)); !p.Present {
		t.Fatal("session not present 4 s into a 5 s expiry")
	}
	if m := dev.expect(mqtt.TypePublish); m.Topic != "se/1" {
		t.Fatalf("%+v", m)
	}
	dev.send(mqtt.AppendAck5(nil, mqtt.TypePuback, 1, 0, nil))
	leave(dev, nil) // the interval runs again from here

	now.Add(6) // past it: the sweep ends the session with no reconnect
	waitFor(t, "the sweep to end dev's session", func() bool { return s.stats.sessions5.Load() == 1 })
	publish("se/2") // no session: not queued for dev
	a := dial5(t, s)
	a.login("alice")
	others++
	a.publish("u/dev/x1", "kept", 1, nil) // the profile's inbox outlives the session
	if p := a.expect(mqtt.TypePuback); p.Code != 0 {
		t.Fatalf("PUBACK %#x", p.Code)
	}
	dev = dial5(t, s)
	if p := dev.connect(mqtt.Connect{ClientID: []byte("dev")}, expiry(5)); p.Present {
		t.Fatal("session present after its expiry")
	}
	if m := dev.expect(mqtt.TypePublish); m.Topic != "u/dev/m/alice/x1" {
		t.Fatalf("got %+v, want the inbox message only", m)
	}
	dev.send(mqtt.AppendAck5(nil, mqtt.TypePuback, 1, 0, nil))
	if m, err := dev.tryRead(300 * time.Millisecond); err == nil && m.Type == mqtt.TypePublish {
		t.Fatalf("an ended session delivered %+v", m)
	}

	// A DISCONNECT shortens the interval; a reconnect after it, before
	// any sweep, finds no session: the deadline is checked at CONNECT.
	dev.subscribe("se/#", 1)
	leave(dev, expiry(2))
	s.sweepMu.Lock() // no sweep meanwhile
	now.Add(3)
	dev = dial5(t, s)
	p := dev.connect(mqtt.Connect{ClientID: []byte("dev")}, expiry(3600))
	s.sweepMu.Unlock()
	if p.Present {
		t.Fatal("session present 3 s after a DISCONNECT set a 2 s expiry")
	}
	// Expiry 0xFFFFFFFF never ends.
	dev.subscribe("se/#", 1)
	leave(dev, expiry(0xFFFFFFFF))
	now.Add(10 * 365 * 24 * 3600)
	dev = dial5(t, s)
	if p := dev.connect(mqtt.Connect{ClientID: []byte("dev")}, expiry(0xFFFFFFFF)); !p.Present {
		t.Fatal("a never-expiring session ended")
	}
}

// TestV5SessionExpiryRestart: the deadline of an offline session survives
// a restart; a session connected at the stop gets its interval again from
// the restart.
func TestV5SessionExpiryRestart(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Now().Unix())
	dir := t.TempDir()
	clock := func(c *Config) { c.Now = func() time.Time { return time.Unix(now.Load(), 0) } }
	expiry := mqtt.AppendU32Prop(nil, mqtt.PropSessionExpiry, 100)
	s := startDurable(t, dir, clock)
	c := dial5(t, s)
	c.connect(mqtt.Connect{ClientID: []byte("off"), CleanSession: true}, expiry)
	c.subscribe("x/#", 1)
	c.send(mqtt.AppendDisconnect5(nil, 0, nil))
	c.expectClosed()
	on := dial5(t, s)
	on.connect(mqtt.Connect{ClientID: []byte("on"), CleanSession: true}, expiry)
	on.subscribe("x/#", 1)
	waitFor(t, "off offline", func() bool { return s.Connections() == 1 })
	now.Add(60)
	s.Close()

	// off: 40 s left; on: 100 s from this restart.
	now.Add(50)
	s = startDurable(t, dir, clock)
	for _, tt := range []struct {
		id      string
		present bool
	}{{"off", false}, {"on", true}} {
		c := dial5(t, s)
		if p := c.connect(mqtt.Connect{ClientID: []byte(tt.id)}, expiry); p.Present != tt.present {
			t.Fatalf("%s: session present %v after the restart, want %v", tt.id, p.Present, tt.present)
		}
		c.send(mqtt.AppendDisconnect5(nil, 0, nil))
		c.expectClosed()
	}
}

// TestV5ServerKeepAlive: with Config.MaxKeepAlive, a v5 client asking for
// a longer keepalive, or none, gets Server Keep Alive in CONNACK and is
// closed (DISCONNECT 0x8D) after 1.5 x that when silent; one within the
// bound gets no Server Keep Alive; a 3.1.1 client keeps its own.
func TestV5ServerKeepAlive(t *testing.T) {
	s := startServer(t, func(c *Config) { c.MaxKeepAlive = time.Second })
	for _, ka := range []uint16{0, 600} {
		c := dial5(t, s)
		cp := mqtt.Connect{ClientID: []byte("ka"), CleanSession: true, KeepAlive: ka}
		c.send(mqtt.AppendConnect5(nil, &cp, nil)) // connect() would turn 0 into 60
		p := c.expect(mqtt.TypeConnack)
		if p.Code != 0 || !p.Props.HasProp(mqtt.PropServerKeepAlive) || p.Props.ServerKeepAlive != 1 {
			t.Fatalf("keepalive %d: CONNACK %+v, want Server Keep Alive 1", ka, p)
		}
		c.expectDisconnect(mqtt.RCKeepAliveTimeout) // within expectDisconnect's 10 s: 1.5 x 1 s, not x 600
	}
	c := dial5(t, s)
	if p := c.connect(mqtt.Connect{ClientID: []byte("ok"), CleanSession: true, KeepAlive: 1}, nil); p.Props.HasProp(mqtt.PropServerKeepAlive) {
		t.Fatalf("CONNACK %+v: Server Keep Alive within the bound", p)
	}
	// A 3.1.1 client with keepalive 60 is not closed after 1.5 s.
	r := dial(t, s)
	r.connectWith(mqtt.Connect{ClientID: []byte("old"), CleanSession: true, KeepAlive: 60})
	r.expectSilence(2 * time.Second)
	r.send(mqtt.AppendPingreq(nil))
	r.expect(mqtt.TypePingresp)
}

// TestV5TopicAliasOut: toward a client whose CONNECT has a Topic Alias
// Maximum, the server sets an alias with the topic, then sends the alias
// alone, re-points the oldest when all are in use, and never aliases the
// inbox's topics (unique per message); with its properties (the stored v5
// form) too.
func TestV5TopicAliasOut(t *testing.T) {
	s := startServer(t, nil)
	sub := dial5(t, s)
	if p := sub.connect(mqtt.Connect{ClientID: []byte("sub"), CleanSession: true},
		mqtt.AppendU16Prop(nil, mqtt.PropTopicAliasMaximum, 2)); p.Code != 0 {
		t.Fatal(p.Code)
	}
	sub.subscribe("ao/#", 1)
	plain := dial5(t, s) // no Topic Alias Maximum: full topics, no aliases
	plain.login("plain")
	plain.subscribe("ao/#", 0)
	pub := dial5(t, s)
	pub.login("pub")
	steps := []struct {
		topic string
		alias uint16
		sent  string // the topic on the wire: "" when the alias stands alone
	}{
		{"ao/first", 1, "ao/first"},
		{"ao/first", 1, ""},
		{"ao/second", 2, "ao/second"},
		{"ao/first", 1, ""},
		{"ao/third", 1, "ao/third"}, // both in use: alias 1 re-pointed
		{"ao/first", 2, "ao/first"}, // then 2
		{"ao/third", 1, ""},
		{"ao/first", 2, ""},
	}
	user := mqtt.AppendUserProp(nil, "k", "v")
	for i, st := range steps {
		var props []byte
		if i%2 == 1 {
			props = user // the stored v5 form (writeStored), not only writePublish5
		}
		pub.publish(st.topic, st.topic, 1, props)
		pub.expect(mqtt.TypePuback)
		p := sub.expect(mqtt.TypePublish)
		if p.Topic != st.sent || p.Props.TopicAlias != st.alias || p.Payload != st.topic {
			t.Fatalf("step %d (%s): topic %q alias %d payload %q, want topic %q alias %d", i, st.topic, p.Topic, p.Props.TopicAlias, p.Payload, st.sent, st.alias)
		}
		if props != nil && string(p.Props.Raw) != string(append(mqtt.AppendU16Prop(nil, mqtt.PropTopicAlias, st.alias), user...)) {
			t.Fatalf("step %d: properties % x", i, p.Props.Raw)
		}
		sub.send(mqtt.AppendAck5(nil, mqtt.TypePuback, p.ID, 0, nil))
		if q := plain.expect(mqtt.TypePublish); q.Topic != st.topic || q.Props.TopicAlias != 0 {
			t.Fatalf("step %d: the client without aliases got %q alias %d", i, q.Topic, q.Props.TopicAlias)
		}
	}
	a := dial5(t, s)
	a.login("alice")
	for _, mid := range []string{"m1", "m2"} {
		id := a.publish("u/sub/"+mid, "x", 1, nil)
		for { // the PUBACK, after the receipt of the one before, if that came first
			if p := a.read(); p.Type == mqtt.TypePuback && p.ID == id {
				break
			} else if p.Type != mqtt.TypePublish {
				t.Fatalf("alice got %+v", p)
			}
		}
		p := sub.expect(mqtt.TypePublish)
		if p.Topic != "u/sub/m/alice/"+mid || p.Props.TopicAlias != 0 {
			t.Fatalf("inbox delivery: topic %q alias %d", p.Topic, p.Props.TopicAlias)
		}
		sub.send(mqtt.AppendAck5(nil, mqtt.TypePuback, p.ID, 0, nil))
	}
	// A new connection starts with no aliases: the topic comes again.
	sub.send(mqtt.AppendDisconnect5(nil, 0, nil))
	sub.expectClosed()
	sub = dial5(t, s)
	sub.connect(mqtt.Connect{ClientID: []byte("sub2"), CleanSession: true}, mqtt.AppendU16Prop(nil, mqtt.PropTopicAliasMaximum, 2))
	sub.subscribe("ao/#", 0)
	pub.publish("ao/first", "again", 0, nil)
	if p := sub.expect(mqtt.TypePublish); p.Topic != "ao/first" || p.Props.TopicAlias != 1 {
		t.Fatalf("new connection: topic %q alias %d", p.Topic, p.Props.TopicAlias)
	}
}

// TestV5RetainedProperties: a retained v5 PUBLISH keeps its properties for
// later subscribers (payload format, content type, response topic,
// correlation data, user properties), with the subscriber's subscription
// identifier and the Message Expiry counting down; once expired it is no
// longer sent (3.3.2.3.3); it survives a restart with them; a 3.1.1
// subscriber gets it plain.
func TestV5RetainedProperties(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Now().Unix())
	dir := t.TempDir()
	clock := func(c *Config) { c.Now = func() time.Time { return time.Unix(now.Load(), 0) } }
	s := startDurable(t, dir, clock)
	props := forwardedProps5(100, "rt/reply", []byte{1, 2}, "unit", "C", "unit", "F")
	pub := dial5(t, s)
	pub.login("pub")
	pub.send(mqtt.AppendPublish5(nil, "rt/temp", []byte("21.5"), 1, true, false, 1, props))
	pub.expect(mqtt.TypePuback)
	check := func(s *Server, who string, left uint32) {
		t.Helper()
		c := dial5(t, s)
		c.login(who)
		c.send(mqtt.AppendSubscribe5(nil, 1, mqtt.AppendVBIProp(nil, mqtt.PropSubscriptionID, 5), mqtt.Subscription5{Filter: "rt/#", QoS: 1}))
		c.expect(mqtt.TypeSuback)
		p := c.expect(mqtt.TypePublish)
		pr := p.Props
		var kv []string
		for k, v := range mqtt.UserProps(p.Raw) {
			kv = append(kv, string(k)+"="+string(v))
		}
		if p.Topic != "rt/temp" || p.Payload != "21.5" || !p.Retain || pr.PayloadFormat != 1 || pr.MessageExpiry != left ||
			string(pr.ContentType) != "text/plain" || string(pr.ResponseTopic) != "rt/reply" ||
			!bytes.Equal(pr.CorrelationData, []byte{1, 2}) || strings.Join(kv, ",") != "unit=C,unit=F" || pr.SubscriptionID != 5 {
			t.Fatalf("%s: retained delivery %+v, user properties %q (want expiry %d)", who, p, kv, left)
		}
		c.send(mqtt.AppendAck5(nil, mqtt.TypePuback, p.ID, 0, nil))
	}
	now.Add(30)
	check(s, "later", 70)
	old := dial(t, s)
	old.connect("old", false)
	old.send(mqtt.AppendSubscribe(nil, 1, mqtt.Subscription{Filter: "rt/#", QoS: 1}))
	old.expect(mqtt.TypeSuback)
	if p := old.expect(mqtt.TypePublish); p.Topic != "rt/temp" || p.Payload != "21.5" || !p.Retain {
		t.Fatalf("3.1.1 retained delivery %+v", p)
	}
	s.Close()

	now.Add(20)
	s = startDurable(t, dir, clock)
	check(s, "after-restart", 50)
	now.Add(50) // expired: no longer sent
	c := dial5(t, s)
	c.login("too-late")
	c.subscribe("rt/#", 1)
	if p, err := c.tryRead(300 * time.Millisecond); err == nil {
		t.Fatalf("an expired retained message was sent: %+v", p)
	}
}
