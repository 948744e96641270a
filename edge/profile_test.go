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
