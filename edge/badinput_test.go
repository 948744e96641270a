package edge

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
)

// bystanders connects two clients that must keep working while another
// connection misbehaves; check exchanges a direct message between them.
func bystanders(t *testing.T, s *Server) (check func()) {
	a, b := dial(t, s), dial(t, s)
	a.connect("bystander-a", false)
	b.connect("bystander-b", false)
	n := 0
	return func() {
		t.Helper()
		n++
		mid := fmt.Sprint("ok", n)
		a.publish("u/bystander-b/"+mid, "still here", 1)
		a.expect(mqtt.TypePuback)
		p := b.expect(mqtt.TypePublish)
		if p.Topic != "u/bystander-b/m/bystander-a/"+mid {
			t.Fatalf("bystander got %+v", p)
		}
		b.puback(p.ID)
		if d := a.expect(mqtt.TypePublish); d.Topic != "u/bystander-a/d/bystander-b/"+mid {
			t.Fatalf("bystander receipt %+v", d)
		}
	}
}

func TestBadInput(t *testing.T) {
	connect := mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: []byte("MQTT"), ProtocolLevel: 4, ClientID: []byte("bad"), CleanSession: true, KeepAlive: 60})
	for _, tc := range []struct {
		name   string
		reason Reason
		login  bool
		send   []byte
	}{
		{"not CONNECT first", ReasonProtocol, false, mqtt.AppendPingreq(nil)},
		{"second CONNECT", ReasonProtocol, true, connect},
		{"reserved type", ReasonMalformed, true, []byte{0xF0, 0}},
		{"bad flags", ReasonMalformed, true, []byte{0x82, 0}},
		{"truncated topic", ReasonMalformed, true, []byte{0x30, 3, 0, 9, 'a'}},
		{"remaining length of 5 bytes", ReasonMalformed, true, []byte{0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F}},
		{"oversize (header alone)", ReasonOversize, true, []byte{0x30, 0x80, 0x80, 0x10}},
		{"invalid UTF-8 topic", ReasonBadUTF8, true, mqtt.AppendPublish(nil, []byte{'a', 0xFF}, nil, 0, false, false, 0)},
		{"wildcard in topic", ReasonMalformed, true, mqtt.AppendPublish(nil, "a/+", nil, 0, false, false, 0)},
		{"publish into another inbox's m/", ReasonNotAuthorized, true, mqtt.AppendPublish(nil, "u/x/m/y/z", nil, 1, false, false, 1)},
		{"publish presence", ReasonNotAuthorized, true, mqtt.AppendPublish(nil, "p/bad", []byte("online"), 0, false, false, 0)},
		{"publish to a group as non-member", ReasonNotAuthorized, true, mqtt.AppendPublish(nil, "g/team/m1", nil, 1, false, false, 1)},
		{"publish $SYS", ReasonNotAuthorized, true, mqtt.AppendPublish(nil, "$SYS/x", nil, 0, false, false, 0)},
		{"PUBACK id 0", ReasonMalformed, true, []byte{0x40, 2, 0, 0}},
		{"SUBSCRIBE without filters", ReasonMalformed, true, []byte{0x82, 2, 0, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, func(c *Config) { c.MaxPacketSize = 64 << 10 })
			check := bystanders(t, s)
			c := dial(t, s)
			if tc.login {
				c.connect("bad", false)
			}
			before := s.CloseCount(tc.reason)
			c.send(tc.send)
			c.expectClosed()
			waitFor(t, "close counted as "+tc.reason.String(), func() bool { return s.CloseCount(tc.reason) == before+1 })
			check()
		})
	}
}

func TestHandshakeTimeout(t *testing.T) {
	s := startServer(t, func(c *Config) { c.HandshakeTimeout = 300 * time.Millisecond })
	check := bystanders(t, s)
	silent, partial := dial(t, s), dial(t, s)
	partial.send([]byte{0x10, 40, 0, 4, 'M', 'Q'}) // a CONNECT that never completes
	silent.expectClosed()
	partial.expectClosed()
	if n := s.CloseCount(ReasonHandshakeTimeout); n != 2 {
		t.Fatalf("handshake_timeout count %d, want 2", n)
	}
	check()
}

func TestKeepalive(t *testing.T) {
	s := startServer(t, nil)
	check := bystanders(t, s)
	c := dial(t, s)
	start := time.Now() // before CONNECT: a late CONNACK cannot shorten d
	p := c.connectWith(mqtt.Connect{ClientID: []byte("sleepy"), CleanSession: true, KeepAlive: 1})
	if p.Code != 0 {
		t.Fatalf("CONNACK %d", p.Code)
	}
	c.expectClosed()
	if d := time.Since(start); d < time.Second {
		t.Fatalf("closed after %v, before 1.5 x keepalive", d)
	}
	waitFor(t, "keepalive close counted", func() bool { return s.CloseCount(ReasonKeepalive) == 1 })
	check()
}

func TestPublishFlood(t *testing.T) {
	s := startServer(t, func(c *Config) { c.PublishRate, c.PublishBurst = 100, 100 })
	check := bystanders(t, s)
	c := dial(t, s)
	c.connect("flooder", false)
	var burst []byte
	for range 1000 {
		burst = mqtt.AppendPublish(burst, "flood/x", []byte("spam"), 0, false, false, 0)
	}
	c.send(burst)
	c.expectClosed()
	waitFor(t, "flood close counted", func() bool { return s.CloseCount(ReasonFlood) == 1 })
	check()
}

func TestSlowReader(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.MaxPacketSize = 64 << 10
		c.MaxQueued = 128 << 10
		c.PublishRate = -1
	})
	check := bystanders(t, s)
	slow := dial(t, s)
	slow.connect("slow", false)
	if code := slow.subscribe("feed/#", 0); code != 0 {
		t.Fatalf("SUBACK %d", code)
	}
	pub := dial(t, s)
	pub.connect("feeder", false)
	payload := bytes.Repeat([]byte("x"), 32<<10)
	msg := mqtt.AppendPublish(nil, "feed/a", payload, 0, false, false, 0)
	// The kernel buffers some megabytes on loopback; 64 MiB is far beyond.
	for i := 0; i < 2048 && s.CloseCount(ReasonBacklog) == 0; i++ {
		pub.send(msg)
	}
	waitFor(t, "backlog close counted", func() bool { return s.CloseCount(ReasonBacklog) == 1 })
	check()
}

func TestConnackCodes(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	s := startServer(t, func(c *Config) { c.Auth, c.Secret = AuthToken, secret })
	good, _ := IssueToken(secret, "alice", time.Now().Add(time.Hour))
	expired, _ := IssueToken(secret, "alice", time.Now().Add(-time.Hour))
	for _, tc := range []struct {
		name string
		cp   mqtt.Connect
		code byte
	}{
		{"valid token", mqtt.Connect{ClientID: []byte("alice"), UsernameFlag: true, Username: []byte("alice"), PasswordFlag: true, Password: []byte(good)}, 0},
		{"empty client id takes the username", mqtt.Connect{UsernameFlag: true, Username: []byte("alice"), PasswordFlag: true, Password: []byte(good)}, 0},
		{"protocol level 3", mqtt.Connect{ProtocolName: []byte("MQTT"), ProtocolLevel: 3, ClientID: []byte("alice")}, mqtt.ConnRefusedProtocolVersion},
		{"invalid client id", mqtt.Connect{ClientID: []byte("al ice"), UsernameFlag: true, Username: []byte("al ice"), PasswordFlag: true, Password: []byte(good)}, mqtt.ConnRefusedIdentifierRejected},
		{"no credentials", mqtt.Connect{ClientID: []byte("alice")}, mqtt.ConnRefusedBadUsernamePassword},
		{"username differs from client id", mqtt.Connect{ClientID: []byte("bob"), UsernameFlag: true, Username: []byte("alice"), PasswordFlag: true, Password: []byte(good)}, mqtt.ConnRefusedBadUsernamePassword},
		{"token of another user", mqtt.Connect{ClientID: []byte("bob"), UsernameFlag: true, Username: []byte("bob"), PasswordFlag: true, Password: []byte(good)}, mqtt.ConnRefusedNotAuthorized},
		{"expired token", mqtt.Connect{ClientID: []byte("alice"), UsernameFlag: true, Username: []byte("alice"), PasswordFlag: true, Password: []byte(expired)}, mqtt.ConnRefusedNotAuthorized},
		{"garbage token", mqtt.Connect{ClientID: []byte("alice"), UsernameFlag: true, Username: []byte("alice"), PasswordFlag: true, Password: []byte("v1.x.y")}, mqtt.ConnRefusedNotAuthorized},
		{"will into the profile", mqtt.Connect{ClientID: []byte("alice"), UsernameFlag: true, Username: []byte("alice"), PasswordFlag: true, Password: []byte(good), WillFlag: true, WillTopic: []byte("u/bob/x"), WillMessage: []byte("x")}, mqtt.ConnRefusedNotAuthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, s)
			tc.cp.CleanSession = true
			if tc.cp.ProtocolLevel == 0 {
				tc.cp.ProtocolName, tc.cp.ProtocolLevel = []byte("MQTT"), 4
			}
			c.send(mqtt.AppendConnect(nil, &tc.cp))
			p := c.expect(mqtt.TypeConnack)
			if p.Code != tc.code {
				t.Fatalf("CONNACK code %#x, want %#x", p.Code, tc.code)
			}
			if tc.code != 0 {
				c.expectClosed()
			}
		})
	}
	t.Run("server unavailable over max connections", func(t *testing.T) {
		s := startServer(t, func(c *Config) { c.MaxConnections = 1 })
		a := dial(t, s)
		a.connect("first", false)
		b := dial(t, s)
		if p := b.connectWith(mqtt.Connect{ClientID: []byte("second"), CleanSession: true}); p.Code != mqtt.ConnRefusedServerUnavailable {
			t.Fatalf("CONNACK %#x, want 3", p.Code)
		}
	})
	t.Run("anonymous from loopback", func(t *testing.T) {
		s := startServer(t, nil)
		c := dial(t, s)
		if p := c.connectWith(mqtt.Connect{CleanSession: true}); p.Code != 0 {
			t.Fatalf("empty client id, clean session: CONNACK %#x", p.Code)
		}
		c = dial(t, s)
		if p := c.connectWith(mqtt.Connect{CleanSession: false}); p.Code != mqtt.ConnRefusedIdentifierRejected {
			t.Fatalf("empty client id, persistent session: CONNACK %#x, want 2", p.Code)
		}
	})
}
