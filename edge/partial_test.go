package edge

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
)

// staller logs in with keepalive 0 (no keepalive deadline at all) and sends
// the first part bytes of a PUBLISH of size bytes, then stalls.
func staller(t *testing.T, s *Server, id string, size, part int) *rawClient {
	t.Helper()
	c := dial(t, s)
	p := c.connectWith(mqtt.Connect{ClientID: []byte(id), CleanSession: true, KeepAlive: 0})
	if p.Code != 0 {
		t.Fatalf("connect %s: CONNACK %d", id, p.Code)
	}
	pub := mqtt.AppendPublish(nil, "u/"+id+"/m1", []byte(strings.Repeat("x", size)), 1, false, false, 1)
	c.send(pub[:part])
	return c
}

func TestPartialPacketTimeoutWithKeepaliveZero(t *testing.T) {
	const timeout = 500 * time.Millisecond
	s := startServer(t, func(c *Config) { c.MaxPacketSize = 64 << 10; c.PartialTimeout = timeout })
	check := bystanders(t, s)
	idle := dial(t, s) // keepalive 0 too, but no partial packet: stays
	if p := idle.connectWith(mqtt.Connect{ClientID: []byte("idle"), CleanSession: true}); p.Code != 0 {
		t.Fatalf("CONNACK %d", p.Code)
	}
	start := time.Now()
	var stalled []*rawClient
	for i := range 3 {
		stalled = append(stalled, staller(t, s, fmt.Sprint("stall", i), 60_000, 30_000+i*10_000))
	}
	for i, c := range stalled {
		c.expectClosed()
		if d := time.Since(start); d < timeout {
			t.Fatalf("staller %d closed after %v, before the partial timeout", i, d)
		}
	}
	waitFor(t, "partial_timeout closes counted", func() bool { return s.CloseCount(ReasonPartialTimeout) == 3 })
	check()
	time.Sleep(2 * timeout)
	idle.send(mqtt.AppendPingreq(nil))
	idle.expect(mqtt.TypePingresp)
	if n := s.CloseCount(ReasonPartialTimeout); n != 3 {
		t.Fatalf("partial_timeout count %d, want 3", n)
	}
}

// TestPartialBudgetClosesGrowersNotTheCanary fills the server-wide
// partial-packet budget with stalled large PUBLISHes while a canary pair
// exchanges QoS 1 messages: the stallers past the budget are closed
// (partial_budget), the canary loses nothing.
func TestPartialBudgetClosesGrowersNotTheCanary(t *testing.T) {
	const maxPacket = 64 << 10
	// Each staller's 50 KB partial packet takes a 128 KiB buffer: two fit,
	// with 64 KiB to spare for anyone's small partial packets.
	const budget = 2*128<<10 + 64<<10
	s := startServer(t, func(c *Config) {
		c.MaxPacketSize = maxPacket
		c.MaxPartialBytes = budget
		c.PartialTimeout = time.Minute // the budget, not the deadline, acts here
	})
	a, b := dial(t, s), dial(t, s)
	a.connect("canary-a", false)
	b.connect("canary-b", false)
	sent, got := 0, 0
	exchange := func(n int) {
		t.Helper()
		for range n {
			sent++
			a.publish(fmt.Sprintf("u/canary-b/c%d", sent), "tweet", 1)
			a.expect(mqtt.TypePuback)
			p := b.expect(mqtt.TypePublish)
			if want := fmt.Sprintf("u/canary-b/m/canary-a/c%d", sent); p.Topic != want {
				t.Fatalf("canary got %q, want %q", p.Topic, want)
			}
			got++
			b.puback(p.ID)
			r := a.expect(mqtt.TypePublish) // the delivered receipt
			if r.Topic != fmt.Sprintf("u/canary-a/d/canary-b/c%d", sent) {
				t.Fatalf("canary receipt %+v", r)
			}
			if r.QoS > 0 {
				a.puback(r.ID)
			}
		}
	}
	const stallers = 6
	var cs []*rawClient
	for i := range stallers {
		cs = append(cs, staller(t, s, fmt.Sprint("grow", i), 60_000, 50_000))
		exchange(20)
	}
	var open int
	for _, c := range cs {
		if _, err := c.tryRead(300 * time.Millisecond); err != nil && isTimeout(err) {
			open++
		}
	}
	closed := s.CloseCount(ReasonPartialBudget)
	if open < 1 || open > 2 || int(closed)+open != stallers {
		t.Fatalf("%d stallers open, %d closed for partial_budget: want 1-2 open (the budget holds two) and the rest closed", open, closed)
	}
	exchange(50)
	if got != sent {
		t.Fatalf("canary: %d of %d delivered", got, sent)
	}
	for r, n := range s.CloseCounts() {
		if n != 0 && r != ReasonPartialBudget.String() {
			t.Errorf("%d closes for %s: only partial_budget closes expected", n, r)
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
