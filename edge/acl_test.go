package edge

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
)

// TestShortFiltersNearProfileSpace subscribes to one-character filters that
// share a first byte with the profile prefixes (a review found that "p"
// crashed the server by reading filter[1]); each is a valid generic filter.
func TestShortFiltersNearProfileSpace(t *testing.T) {
	s := startServer(t, nil)
	c := dial(t, s)
	c.connect("alice", false)
	for _, f := range []string{"p", "u", "r", "g", "+"} {
		if code := c.subscribe(f, 1); code != 1 {
			t.Fatalf("SUBSCRIBE %q: SUBACK 0x%02x, want granted QoS 1", f, code)
		}
	}
	c.publish("p", "plain", 1)
	for i := 0; ; i++ {
		p := c.read()
		if p.Type == mqtt.TypePublish && p.Topic == "p" && p.Payload == "plain" {
			break
		}
		if i == 3 {
			t.Fatalf("no PUBLISH on topic p among the first packets (last %+v)", p)
		}
	}
}

// TestLongInboxes: an offline user's inbox that grows past the watch floor
// is reported for the queue alarms, and forgotten once delivered.
func TestLongInboxes(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Inflight = 1024 })
	alice := dial(t, s)
	alice.connect("alice", false)
	for i := 0; i < 150; i++ {
		alice.publish(fmt.Sprintf("u/bob/m%d", i), "x", 1)
		alice.expect(mqtt.TypePuback)
	}
	got := s.LongInboxes()
	if len(got) != 1 || got[0].User != "bob" || got[0].Len != 150 {
		t.Fatalf("LongInboxes = %+v, want bob with 150", got)
	}
	bob := dial(t, s)
	bob.connect("bob", false)
	for i := 0; i < 150; i++ {
		p := bob.expect(mqtt.TypePublish)
		bob.puback(p.ID)
	}
	for i := 0; i < 150; i++ { // the delivered receipts now fill alice's inbox
		p := alice.expect(mqtt.TypePublish)
		alice.puback(p.ID)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(s.LongInboxes()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("LongInboxes after delivery = %+v, want none", s.LongInboxes())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
