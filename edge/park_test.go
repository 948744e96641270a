package edge

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
)

// TestWaitingScansDoNotSpin: more connections waiting on their retained
// scans (they never ack, so their inboxes stay full) than one iteration's
// scan budget do not make the loop wake itself forever (found in review:
// every turn cost budget, the budget ran out, and the loop posted itself a
// wake-up each iteration).
func TestWaitingScansDoNotSpin(t *testing.T) {
	old := scanBudget
	scanBudget = 8 // 20 waiting connections outnumber it
	t.Cleanup(func() { scanBudget = old })
	s := startServer(t, func(c *Config) { c.Loops, c.Inflight = 1, 4 })
	pub := dial(t, s)
	pub.connect("pub", true)
	for i := range 50 {
		pub.send(mqtt.AppendPublish(nil, fmt.Sprintf("t%d", i), []byte("v"), 1, true, false, uint16(i+1)))
		pub.expect(mqtt.TypePuback)
	}
	for i := range 20 {
		c := dial(t, s)
		c.connect(fmt.Sprintf("w%d", i), false)
		if code := c.subscribe("#", 1); code != 1 {
			t.Fatalf("SUBACK %d", code)
		}
	}
	ls := s.loops[0]
	// All 20 reach their window and wait: wake-ups stop.
	deadline := time.Now().Add(10 * time.Second)
	var before int64
	for {
		before = ls.scanWakes.Load()
		time.Sleep(200 * time.Millisecond)
		if ls.scanWakes.Load() == before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the loop still wakes itself for scans that can only wait: %d wake-ups in 200 ms", ls.scanWakes.Load()-before)
		}
	}
	// A canary on the same loop is served promptly meanwhile.
	a := dial(t, s)
	a.connect("alice", false)
	b := dial(t, s)
	b.connect("bob", false)
	a.publish("u/bob/m1", "hi", 1)
	a.expect(mqtt.TypePuback)
	if p := b.expect(mqtt.TypePublish); p.Topic != "u/bob/m/alice/m1" {
		t.Fatalf("bob got %q", p.Topic)
	}
}
