package edge

import (
	"testing"

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
