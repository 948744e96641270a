package edge

import (
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
)

// TestDollarTopicWillsRefused: a will is a deferred PUBLISH, so a will on a
// '$' topic is refused at CONNECT (CONNACK 5, counted connect_refused), and
// a retained PUBLISH to $SYS/ is refused like any PUBLISH there; a later
// $SYS subscriber reads no forged retained value. A will on an ordinary
// topic still fires.
func TestDollarTopicWillsRefused(t *testing.T) {
	s := startServer(t, nil)
	for _, topic := range []string{"$SYS/broker/version", "$SYS/x", "$share/g/t", "$"} {
		t.Run("will "+topic, func(t *testing.T) {
			c := dial(t, s)
			before := s.CloseCount(ReasonConnRefused)
			p := c.connectWith(mqtt.Connect{ClientID: []byte("forger"), CleanSession: true, KeepAlive: 60,
				WillFlag: true, WillTopic: []byte(topic), WillMessage: []byte("forged"), WillQoS: 1, WillRetain: true})
			if p.Code != mqtt.ConnRefusedNotAuthorized {
				t.Fatalf("CONNACK %#x, want 5 (not authorized)", p.Code)
			}
			c.expectClosed()
			waitFor(t, "the refusal counted", func() bool { return s.CloseCount(ReasonConnRefused) == before+1 })
		})
	}
	// A retained PUBLISH to $SYS/ closes the publisher, not_authorized.
	pub := dial(t, s)
	pub.connect("pub", false)
	pub.send(mqtt.AppendPublish(nil, "$SYS/broker/version", []byte("forged"), 1, true, false, 1))
	pub.expectClosed()
	waitFor(t, "not_authorized counted", func() bool { return s.CloseCount(ReasonNotAuthorized) == 1 })

	// Control: a retained will on an ordinary topic is stored, so the
	// subscriber below would see one if the $ ones had been.
	w := dial(t, s)
	if p := w.connectWith(mqtt.Connect{ClientID: []byte("willer"), CleanSession: true, KeepAlive: 60,
		WillFlag: true, WillTopic: []byte("status/willer"), WillMessage: []byte("gone"), WillRetain: true}); p.Code != 0 {
		t.Fatalf("ordinary will: CONNACK %#x", p.Code)
	}
	w.conn.Close() // no DISCONNECT: the will fires
	// The will is published on the closing connection's loop: wait until
	// it is retained, or the subscriber below may get it live (retain 0)
	// (seen as a flaky failure under -race).
	waitFor(t, "the will retained", func() bool { _, _, ok := s.tree.retained("status/willer"); return ok })

	sub := dial(t, s)
	sub.connect("sub", false)
	if code := sub.subscribe("status/#", 1); code > 1 {
		t.Fatalf("subscribe status/#: %#x", code)
	}
	if p := sub.expect(mqtt.TypePublish); p.Topic != "status/willer" || p.Payload != "gone" || !p.Retain {
		t.Fatalf("ordinary retained will: %+v", p)
	}
	if code := sub.subscribe("$SYS/#", 0); code > 1 {
		t.Fatalf("subscribe $SYS/#: %#x", code)
	}
	sub.expectSilence(200 * time.Millisecond)
}
