package edge

import (
	"strings"
	"testing"

	"github.com/edgedhq/edged/edge/mqtt"
)

// TestClientIDs: any UTF-8 client id is a plain MQTT client (spec 3.1.3.1
// lets the server accept any); only profile ids have an inbox.
func TestClientIDs(t *testing.T) {
	s := startServer(t, nil)
	check := bystanders(t, s)
	ids := []string{"clean retained", "home assistant", "ESP8266Client-3f/a", "device:42", "ünïcødé-☃",
		"a+b#c", strings.Repeat("x", 65), strings.Repeat("long/", 13107)} // 65,535 bytes
	sub := dial(t, s)
	sub.connect("node red", false)
	if code := sub.subscribe("sensors/#", 1); code != 1 {
		t.Fatalf("SUBACK %d", code)
	}
	for i, id := range ids {
		c := dial(t, s)
		p := c.connectWith(mqtt.Connect{ClientID: []byte(id), CleanSession: i%2 == 0, KeepAlive: 60})
		if p.Code != mqtt.ConnAccepted {
			t.Fatalf("client id %.20q (%d bytes): CONNACK %d, want 0", id, len(id), p.Code)
		}
		pid := c.publish("sensors/t", id, 1)
		if a := c.expect(mqtt.TypePuback); a.ID != pid {
			t.Fatalf("PUBACK %d, want %d", a.ID, pid)
		}
		m := sub.expect(mqtt.TypePublish)
		if m.Topic != "sensors/t" || m.Payload != id {
			t.Fatalf("subscriber got %q %.20q, want %.20q", m.Topic, m.Payload, id)
		}
		sub.puback(m.ID)
	}
	check()

	t.Run("takeover of a long id", func(t *testing.T) {
		id := strings.Repeat("ü", 100)
		a, b := dial(t, s), dial(t, s)
		a.connect(id, true)
		if code := a.subscribe("lamp/#", 1); code != 1 {
			t.Fatalf("SUBACK %d", code)
		}
		p := b.connectWith(mqtt.Connect{ClientID: []byte(id), KeepAlive: 60})
		if p.Code != 0 || !p.Present {
			t.Fatalf("second connect: %+v, want session present", p)
		}
		a.expectClosed()
		pub := dial(t, s)
		pub.connect("switch", false)
		pub.publish("lamp/on", "1", 1)
		pub.expect(mqtt.TypePuback)
		if m := b.expect(mqtt.TypePublish); m.Topic != "lamp/on" {
			t.Fatalf("taken-over session got %+v", m)
		}
	})

	t.Run("no profile messages without a user id", func(t *testing.T) {
		for _, topic := range []string{"u/bystander-b/m9", "r/bystander-b/m9", "g/team/m9"} {
			c := dial(t, s)
			c.connect("clean retained", false)
			before := s.CloseCount(ReasonNotAuthorized)
			c.publish(topic, "x", 1)
			c.expectClosed()
			waitFor(t, "not_authorized counted", func() bool { return s.CloseCount(ReasonNotAuthorized) == before+1 })
		}
		c := dial(t, s)
		c.connect("clean retained", false)
		if code := c.subscribe("u/clean retained/#", 1); code != mqtt.SubackFailure {
			t.Fatalf("SUBACK %d for u/<non-profile id>/#, want 0x80", code)
		}
		// No last-seen is kept for it once it leaves (no presence).
		c.conn.Close()
		waitFor(t, "clean retained released", func() bool {
			_, _, known := s.reg.presence([]byte("clean retained"))
			return !known
		})
		check()
	})
}

// TestMosquittoClientIDWithSpace is the conformance-suite case: a stock
// client with a space in its id exchanges generic messages.
func TestMosquittoClientIDWithSpace(t *testing.T) {
	requireMosquitto(t)
	s := startServer(t, nil)
	wait := mosqSub(t, s, "-q", "1", "-i", "home assistant", "-t", "test/retained", "-C", "1", "-v")
	waitSubscribed(t, s, "test/retained")
	mosqPub(t, s, "-q", "1", "-i", "clean retained", "-t", "test/retained", "-m", "hello")
	if got := wait(); got != "test/retained hello\n" {
		t.Fatalf("mosquitto_sub printed %q", got)
	}
	mosqPub(t, s, "-q", "1", "-r", "-i", "clean retained", "-t", "test/kept", "-m", "kept")
	if got := mosqSub(t, s, "-q", "1", "-i", "device:42", "-t", "test/kept", "-C", "1", "-v")(); got != "test/kept kept\n" {
		t.Fatalf("retained for device:42: %q", got)
	}
}
