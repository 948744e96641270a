package edge

import (
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
)

// TestMaxConnectionsRefusedPromptly: a connection over MaxConnections is
// answered CONNACK 0x03 and closed when it is accepted, not held until the
// handshake timeout, and counted under max_connections (not
// connect_refused). A slot freed below the cap admits the next client.
func TestMaxConnectionsRefusedPromptly(t *testing.T) {
	s := startServer(t, func(c *Config) { c.MaxConnections = 2; c.HandshakeTimeout = time.Minute })
	a, b := dial(t, s), dial(t, s)
	a.connect("a", false)
	b.connect("b", false)

	// A client that sends nothing still learns why and is closed at once.
	start := time.Now()
	silent := dial(t, s)
	p, err := silent.tryRead(5 * time.Second)
	if err != nil || p.Type != mqtt.TypeConnack || p.Code != mqtt.ConnRefusedServerUnavailable {
		t.Fatalf("silent client over the cap: %+v, %v; want CONNACK 3", p, err)
	}
	if _, err := silent.tryRead(5 * time.Second); err == nil {
		t.Fatal("silent client over the cap: more data instead of a close")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("over-cap connection held %v (handshake timeout is a minute)", d)
	}
	// A client that sends CONNECT at once reads CONNACK 3 (sent ahead).
	eager := dial(t, s)
	if p := eager.connectWith(mqtt.Connect{ClientID: []byte("c"), CleanSession: true}); p.Code != mqtt.ConnRefusedServerUnavailable {
		t.Fatalf("eager client over the cap: CONNACK %#x, want 3", p.Code)
	}
	eager.expectClosed()
	waitFor(t, "two max_connections closes", func() bool { return s.CloseCount(ReasonMaxConns) == 2 })
	if n := s.CloseCount(ReasonConnRefused); n != 0 {
		t.Fatalf("over-cap refusals counted as connect_refused: %d", n)
	}
	if n := s.Connections(); n != 2 {
		t.Fatalf("%d connections open, want the 2 admitted", n)
	}
	a.conn.Close()
	waitFor(t, "a's close", func() bool { return s.Connections() == 1 })
	d := dial(t, s)
	d.connect("d", false)
}
