package edge

import (
	"bytes"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
)

// startServer runs an in-process edged on a loopback port.
func startServer(t testing.TB, mod func(*Config)) *Server {
	t.Helper()
	cfg := Config{Addr: "127.0.0.1:0", Loops: 2, Auth: AuthLoopbackAnonymous, AdminAddr: "127.0.0.1:0"}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// pkt is a decoded packet with its own copies of the fields tests read.
type pkt struct {
	Type     mqtt.Type
	Dup      bool
	QoS      byte
	Retain   bool
	Topic    string
	Payload  string
	ID       uint16
	Code     byte
	Present  bool
	SubCodes []byte
}

// rawClient is a minimal MQTT client that never acknowledges on its own.
type rawClient struct {
	t    testing.TB
	conn net.Conn
	buf  []byte
	pid  uint16
}

func dial(t testing.TB, s *Server) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, conn: c}
}

func (c *rawClient) send(b []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *rawClient) connectWith(cp mqtt.Connect) pkt {
	c.t.Helper()
	if cp.ProtocolLevel == 0 {
		cp.ProtocolName, cp.ProtocolLevel = []byte("MQTT"), 4
	}
	c.send(mqtt.AppendConnect(nil, &cp))
	p := c.read()
	if p.Type != mqtt.TypeConnack {
		c.t.Fatalf("got %v, want CONNACK", p.Type)
	}
	return p
}

// connect logs in as id (anonymous, clean session unless persistent).
func (c *rawClient) connect(id string, persistent bool) {
	c.t.Helper()
	p := c.connectWith(mqtt.Connect{ClientID: []byte(id), CleanSession: !persistent, KeepAlive: 60})
	if p.Code != 0 {
		c.t.Fatalf("connect %s: CONNACK code %d", id, p.Code)
	}
}

func (c *rawClient) nextID() uint16 {
	c.pid++
	if c.pid == 0 {
		c.pid = 1
	}
	return c.pid
}

func (c *rawClient) publish(topic, payload string, qos byte) uint16 {
	c.t.Helper()
	var id uint16
	if qos > 0 {
		id = c.nextID()
	}
	c.send(mqtt.AppendPublish(nil, topic, []byte(payload), qos, false, false, id))
	return id
}

func (c *rawClient) subscribe(filter string, qos byte) byte {
	c.t.Helper()
	c.send(mqtt.AppendSubscribe(nil, c.nextID(), mqtt.Subscription{Filter: filter, QoS: qos}))
	p := c.expect(mqtt.TypeSuback)
	return p.SubCodes[0]
}

func (c *rawClient) puback(id uint16) { c.send(mqtt.AppendPuback(nil, id)) }

// read returns the next packet, failing the test after 10 s.
func (c *rawClient) read() pkt {
	c.t.Helper()
	p, err := c.tryRead(10 * time.Second)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return p
}

func (c *rawClient) tryRead(d time.Duration) (pkt, error) {
	c.conn.SetReadDeadline(time.Now().Add(d))
	var tmp [4096]byte
	for {
		var p mqtt.Packet
		n, err := mqtt.Decode(c.buf, 0, &p)
		if err != nil {
			return pkt{}, err
		}
		if n > 0 {
			out := pkt{Type: p.Type, Dup: p.Dup, QoS: p.QoS, Retain: p.Retain, Topic: string(p.Topic),
				Payload: string(p.Payload), ID: p.PacketID, Code: p.ReturnCode, Present: p.SessionPresent,
				SubCodes: bytes.Clone(p.ReturnCodes)}
			c.buf = append(c.buf[:0], c.buf[n:]...)
			return out, nil
		}
		k, err := c.conn.Read(tmp[:])
		c.buf = append(c.buf, tmp[:k]...)
		if err != nil && k == 0 {
			return pkt{}, err
		}
	}
}

func (c *rawClient) expect(typ mqtt.Type) pkt {
	c.t.Helper()
	p := c.read()
	if p.Type != typ {
		c.t.Fatalf("got %v %+v, want %v", p.Type, p, typ)
	}
	return p
}

// expectClosed waits for the server to close the connection.
func (c *rawClient) expectClosed() {
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

// expectSilence asserts nothing arrives within d.
func (c *rawClient) expectSilence(d time.Duration) {
	c.t.Helper()
	if p, err := c.tryRead(d); err == nil {
		c.t.Fatalf("unexpected %v %+v", p.Type, p)
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var _ = os.Getenv

func mqttConnectWill(id, topic, msg string) mqtt.Connect {
	return mqtt.Connect{ClientID: []byte(id), CleanSession: true, KeepAlive: 60,
		WillFlag: true, WillQoS: 1, WillTopic: []byte(topic), WillMessage: []byte(msg)}
}
