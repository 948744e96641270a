package edge

import (
	"strings"
	"testing"

	"github.com/edgedhq/edged/edge/mqtt"
)

// TestTopicLevelsBounded: a topic or filter deeper than MaxTopicLevels is
// refused (PUBLISH: closed not_authorized; SUBSCRIBE: 0x80; will: CONNACK
// 5), one at the limit is served.
func TestTopicLevelsBounded(t *testing.T) {
	s := startServer(t, nil)
	ok := strings.Repeat("a/", MaxTopicLevels-1) + "z" // MaxTopicLevels levels
	deep := strings.Repeat("a/", MaxTopicLevels) + "z"

	sub := dial(t, s)
	sub.connect("sub", true)
	sub.send(mqtt.AppendSubscribe(nil, 1, mqtt.Subscription{Filter: ok, QoS: 1}, mqtt.Subscription{Filter: deep, QoS: 1}))
	p := sub.expect(mqtt.TypeSuback)
	if len(p.SubCodes) != 2 || p.SubCodes[0] != 1 || p.SubCodes[1] != mqtt.SubackFailure {
		t.Fatalf("SUBACK codes % x, want 01 80", p.SubCodes)
	}
	pub := dial(t, s)
	pub.connect("pub", true)
	pub.send(mqtt.AppendPublish(nil, ok, []byte("x"), 1, true, false, 1))
	pub.expect(mqtt.TypePuback)
	if got := sub.expect(mqtt.TypePublish); got.Topic != ok {
		t.Fatalf("delivered %q", got.Topic)
	}
	before := s.CloseCounts()["not_authorized"]
	pub.send(mqtt.AppendPublish(nil, deep, []byte("x"), 1, true, false, 2))
	pub.expectClosed()
	if s.CloseCounts()["not_authorized"] != before+1 {
		t.Fatalf("deep PUBLISH not counted as not_authorized: %v", s.CloseCounts())
	}
	w := dial(t, s)
	if c := w.connectWith(mqtt.Connect{CleanSession: true, ClientID: []byte("w"), WillFlag: true,
		WillTopic: []byte(deep), WillMessage: []byte("bye")}); c.Code != mqtt.ConnRefusedNotAuthorized {
		t.Fatalf("deep will: CONNACK %d, want 5", c.Code)
	}
}
