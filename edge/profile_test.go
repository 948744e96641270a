package edge

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
)

func TestDirectMessageOnline(t *testing.T) {
	s := startServer(t, nil)
	a, b := dial(t, s), dial(t, s)
	a.connect("alice", false)
	b.connect("bob", false)

	id := a.publish("u/bob/m1", "hello", 1)
	if p := a.expect(mqtt.TypePuback); p.ID != id {
		t.Fatalf("PUBACK id %d, want %d", p.ID, id)
	}
	p := b.expect(mqtt.TypePublish)
	if p.Topic != "u/bob/m/alice/m1" || p.Payload != "hello" || p.QoS != 1 || p.Dup {
		t.Fatalf("bob got %+v", p)
	}
	b.puback(p.ID)
	d := a.expect(mqtt.TypePublish)
	if d.Topic != "u/alice/d/bob/m1" {
		t.Fatalf("alice got %+v, want the delivered receipt", d)
	}
	a.puback(d.ID)
	b.publish("r/alice/m1", "", 1)
	b.expect(mqtt.TypePuback)
	r := a.expect(mqtt.TypePublish)
	if r.Topic != "u/alice/r/bob/m1" {
		t.Fatalf("alice got %+v, want the read receipt", r)
	}
	a.puback(r.ID)
	waitFor(t, "empty inboxes", func() bool { return s.InboxLen("alice") == 0 && s.InboxLen("bob") == 0 })
}

func TestStoreAndForward(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Inflight = 8 })
	a1, a2 := dial(t, s), dial(t, s)
	a1.connect("alice", false)
	a2.connect("carol", false)
	const n = 50
	for i := range n {
		a1.publish("u/bob/a"+fmt.Sprint(i), fmt.Sprint(i), 1)
		a2.publish("u/bob/c"+fmt.Sprint(i), fmt.Sprint(i), 1)
	}
	for range n {
		a1.expect(mqtt.TypePuback)
		a2.expect(mqtt.TypePuback)
	}
	if got := s.InboxLen("bob"); got != 2*n {
		t.Fatalf("bob's inbox holds %d, want %d", got, 2*n)
	}

	// First connection: take 5 messages, ack 3, then drop the connection.
	b := dial(t, s)
	b.connect("bob", false)
	type key struct {
		from string
		seq  int
	}
	parse := func(p pkt) key {
		var k key
		rest := p.Topic[len("u/bob/m/"):]
		k.from = rest[:len(rest)-len(p.Payload)-2]
		fmt.Sscan(p.Payload, &k.seq)
		return k
	}
	got := map[key]int{}
	var unacked []pkt
	for i := range 5 {
		p := b.expect(mqtt.TypePublish)
		if i < 3 {
			b.puback(p.ID)
			got[parse(p)]++
		} else {
			unacked = append(unacked, p)
		}
	}
	waitFor(t, "3 acks", func() bool { return s.InboxLen("bob") == 2*n-3 })
	b.conn.Close()
	waitFor(t, "bob offline", func() bool { return s.Connections() == 2 })

	// Second connection: everything left, the unacked first with DUP, in
	// order per sender, nothing acked before.
	b = dial(t, s)
	b.connect("bob", false)
	last := map[string]int{"alice": -1, "carol": -1}
	for i := range 2*n - 3 {
		p := b.expect(mqtt.TypePublish)
		if i < len(unacked) && (!p.Dup || p.Topic != unacked[i].Topic) {
			t.Fatalf("redelivery %d: got %+v, want DUP of %s", i, p, unacked[i].Topic)
		}
		k := parse(p)
		if got[k] > 0 {
			t.Fatalf("%+v delivered again after PUBACK", k)
		}
		if k.seq <= last[k.from] {
			t.Fatalf("from %s: %d after %d: out of order", k.from, k.seq, last[k.from])
		}
		last[k.from] = k.seq
		got[k]++
		b.puback(p.ID)
	}
	if len(got) != 2*n {
		t.Fatalf("got %d distinct messages, want %d", len(got), 2*n)
	}
	waitFor(t, "empty inbox", func() bool { return s.InboxLen("bob") == 0 })
	b.expectSilence(200 * time.Millisecond)
}

func TestInboxFull(t *testing.T) {
	s := startServer(t, func(c *Config) { c.InboxMessages = 3 })
	a := dial(t, s)
	a.connect("alice", false)
	for i := range 4 {
		a.publish(fmt.Sprint("u/bob/m", i), "x", 1)
		a.expect(mqtt.TypePuback) // accepted either way
	}
	p := a.expect(mqtt.TypePublish)
	if p.Topic != "u/alice/e/bob/m3" || p.Payload != "inbox_full" {
		t.Fatalf("alice got %+v, want the inbox_full notice for m3", p)
	}
	a.puback(p.ID)
	if n := s.InboxLen("bob"); n != 3 {
		t.Fatalf("bob's inbox holds %d, want 3", n)
	}
}

func TestTakeover(t *testing.T) {
	s := startServer(t, nil)
	a := dial(t, s)
	a.connect("alice", false)
	old := dial(t, s)
	old.connect("bob", false)
	a.publish("u/bob/m1", "one", 1)
	a.expect(mqtt.TypePuback)
	if p := old.expect(mqtt.TypePublish); p.Topic != "u/bob/m/alice/m1" || p.Dup {
		t.Fatalf("old got %+v", p)
	}
	// A second device logs in: the old connection is closed and the
	// unacknowledged message is redelivered to the new one with DUP.
	nw := dial(t, s)
	nw.connect("bob", false)
	old.expectClosed()
	p := nw.expect(mqtt.TypePublish)
	if p.Topic != "u/bob/m/alice/m1" || !p.Dup {
		t.Fatalf("new got %+v, want the DUP redelivery", p)
	}
	nw.puback(p.ID)
	if d := a.expect(mqtt.TypePublish); d.Topic != "u/alice/d/bob/m1" {
		t.Fatalf("alice got %+v", d)
	}
	waitFor(t, "takeover counted", func() bool { return s.CloseCount(ReasonTakeover) == 1 })
}

func TestSubscribeACL(t *testing.T) {
	s := startServer(t, nil)
	c := dial(t, s)
	c.connect("alice", false)
	for _, tc := range []struct {
		filter string
		qos    byte
		want   byte
	}{
		{"u/alice/#", 1, 1},
		{"u/alice", 1, 1},
		{"u/alicex/#", 1, mqtt.SubackFailure},
		{"u/bob/#", 1, mqtt.SubackFailure},
		{"u/+/#", 1, mqtt.SubackFailure},
		{"r/bob/#", 1, mqtt.SubackFailure},
		{"g/team/#", 1, mqtt.SubackFailure},
		{"p/bob", 1, 1},
		{"p/+", 1, mqtt.SubackFailure},
		{"news/#", 2, 2},
		{"#", 0, 0},
	} {
		t.Run(tc.filter, func(t *testing.T) {
			if got := c.subscribe(tc.filter, tc.qos); got != tc.want {
				t.Fatalf("SUBACK %#x, want %#x", got, tc.want)
			}
		})
	}
}

func TestGroupsAndPresence(t *testing.T) {
	s := startServer(t, nil)
	for _, u := range []string{"alice", "bob", "carol"} {
		if _, err := s.Groups().Add("team", u); err != nil {
			t.Fatal(err)
		}
	}
	watch := dial(t, s)
	watch.connect("dave", false)
	if code := watch.subscribe("p/bob", 1); code != 1 {
		t.Fatalf("SUBACK %d", code)
	}
	watch.expectSilence(100 * time.Millisecond) // bob never seen: no presence yet

	a, b := dial(t, s), dial(t, s)
	a.connect("alice", false)
	b.connect("bob", false)
	if p := watch.expect(mqtt.TypePublish); p.Topic != "p/bob" || p.Payload != "online" {
		t.Fatalf("presence %+v", p)
	} else {
		watch.puback(p.ID)
	}
	a.publish("g/team/g1", "hi team", 1)
	a.expect(mqtt.TypePuback)
	p := b.expect(mqtt.TypePublish)
	if p.Topic != "u/bob/g/team/alice/g1" || p.Payload != "hi team" {
		t.Fatalf("bob got %+v", p)
	}
	b.puback(p.ID)
	if n := s.InboxLen("carol"); n != 1 { // carol is offline: stored
		t.Fatalf("carol's inbox %d, want 1", n)
	}
	a.expectSilence(100 * time.Millisecond) // no echo to the sender

	b.send(mqtt.AppendDisconnect(nil))
	p = watch.expect(mqtt.TypePublish)
	if p.Topic != "p/bob" || len(p.Payload) < len("offline 1") || p.Payload[:8] != "offline " {
		t.Fatalf("presence %+v", p)
	}
	watch.puback(p.ID)
	// A new subscriber gets the last presence as a retained message.
	w2 := dial(t, s)
	w2.connect("erin", false)
	w2.subscribe("p/bob", 1)
	if p := w2.expect(mqtt.TypePublish); !p.Retain || p.Payload[:8] != "offline " {
		t.Fatalf("retained presence %+v", p)
	}
}

func TestQoS2AndPersistentSession(t *testing.T) {
	s := startServer(t, nil)
	sub := dial(t, s)
	sub.connect("sub2", true)
	if code := sub.subscribe("q2/#", 2); code != 2 {
		t.Fatalf("SUBACK %d", code)
	}
	pub := dial(t, s)
	pub.connect("pub2", false)

	// Inbound QoS 2 with a DUP retransmission: routed once.
	id := pub.publish("q2/a", "exactly-once", 2)
	pub.expect(mqtt.TypePubrec)
	pub.send(mqtt.AppendPublish(nil, "q2/a", []byte("exactly-once"), 2, false, true, id))
	pub.expect(mqtt.TypePubrec)
	pub.send(mqtt.AppendPubrel(nil, id))
	if p := pub.expect(mqtt.TypePubcomp); p.ID != id {
		t.Fatalf("PUBCOMP %d, want %d", p.ID, id)
	}
	p := sub.expect(mqtt.TypePublish)
	if p.QoS != 2 || p.Payload != "exactly-once" {
		t.Fatalf("sub got %+v", p)
	}
	sub.expectSilence(100 * time.Millisecond) // the DUP was not routed again

	// Outbound QoS 2: PUBREC, then the connection drops before PUBCOMP; the
	// persistent session resends PUBREL on reconnect.
	sub.send(mqtt.AppendPubrec(nil, p.ID))
	if r := sub.expect(mqtt.TypePubrel); r.ID != p.ID {
		t.Fatalf("PUBREL %d", r.ID)
	}
	sub.conn.Close()
	waitFor(t, "sub offline", func() bool { return s.Connections() == 1 })
	pub.publish("q2/b", "while-away", 1)
	pub.expect(mqtt.TypePuback)

	sub = dial(t, s)
	c := sub.connectWith(mqtt.Connect{ClientID: []byte("sub2"), KeepAlive: 60})
	if c.Code != 0 || !c.Present {
		t.Fatalf("CONNACK %+v, want session present", c)
	}
	if r := sub.expect(mqtt.TypePubrel); r.ID != p.ID {
		t.Fatalf("got %+v, want PUBREL %d again", r, p.ID)
	}
	sub.send(mqtt.AppendPubcomp(nil, p.ID))
	q := sub.expect(mqtt.TypePublish)
	if q.Topic != "q2/b" || q.QoS != 1 || q.Payload != "while-away" {
		t.Fatalf("queued message %+v", q)
	}
	sub.puback(q.ID)

	// Clean session: the subscription is gone.
	sub.conn.Close()
	waitFor(t, "sub offline", func() bool { return s.Connections() == 1 })
	sub = dial(t, s)
	if c := sub.connectWith(mqtt.Connect{ClientID: []byte("sub2"), CleanSession: true, KeepAlive: 60}); c.Present {
		t.Fatal("clean session: session present set")
	}
	pub.publish("q2/c", "nobody", 1)
	pub.expect(mqtt.TypePuback)
	sub.expectSilence(200 * time.Millisecond)
}

func TestRetainedRaw(t *testing.T) {
	s := startServer(t, nil)
	pub := dial(t, s)
	pub.connect("pub", false)
	pub.send(mqtt.AppendPublish(nil, "home/temp", []byte("21"), 1, true, false, 1))
	pub.expect(mqtt.TypePuback)
	sub := dial(t, s)
	sub.connect("sub", false)
	sub.subscribe("home/+", 0)
	if p := sub.expect(mqtt.TypePublish); !p.Retain || p.Payload != "21" || p.QoS != 0 {
		t.Fatalf("retained %+v", p)
	}
	pub.send(mqtt.AppendPublish(nil, "home/temp", []byte("22"), 0, true, false, 0))
	if p := sub.expect(mqtt.TypePublish); p.Retain || p.Payload != "22" {
		t.Fatalf("live delivery of a retained publish %+v (retain must be 0)", p)
	}
}

func TestRetainedCap(t *testing.T) {
	s := startServer(t, func(c *Config) { c.MaxRetained = 2 })
	pub := dial(t, s)
	pub.connect("pub", false)
	for i := range 3 {
		pub.send(mqtt.AppendPublish(nil, fmt.Sprint("cap/", i), []byte("v"), 1, true, false, uint16(i+1)))
		pub.expect(mqtt.TypePuback)
	}
	if got := s.Stats().RetainedFull; got != 1 {
		t.Fatalf("retained_full %d, want 1", got)
	}
	sub := dial(t, s)
	sub.connect("sub", false)
	sub.subscribe("cap/#", 0)
	got := map[string]bool{}
	for range 2 {
		got[sub.expect(mqtt.TypePublish).Topic] = true
	}
	if !got["cap/0"] || !got["cap/1"] {
		t.Fatalf("retained %v, want cap/0 and cap/1", got)
	}
	sub.expectSilence(100 * time.Millisecond)
}
