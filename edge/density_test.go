package edge

import (
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/edgedhq/edged/edge/mqtt"
)

// TestTreeNodeSubscribers walks one filter through the forms a tnode keeps
// its subscriptions in: none, one inline, a list from the second client on,
// back to one inline and none; the filter matches exactly the clients that
// hold a subscription at each step, with the QoS last given.
func TestTreeNodeSubscribers(t *testing.T) {
	tr := newTopicTree()
	reg := newRegistry()
	cls := make([]*client, 4)
	for i := range cls {
		cls[i] = reg.lock(fmt.Appendf(nil, "c%d", i), true)
		cls[i].mu.Unlock()
	}
	want := map[*client]byte{}
	check := func(step string) {
		t.Helper()
		got := map[*client]byte{}
		for _, s := range tr.match([]byte("d/1"), nil) {
			if _, dup := got[s.cl]; dup {
				t.Fatalf("%s: %v matched twice", step, s.cl)
			}
			got[s.cl] = s.qos
		}
		if len(got) != len(want) {
			t.Fatalf("%s: matched %v, want %v", step, got, want)
		}
		for cl, q := range want {
			if g, ok := got[cl]; !ok || g != q {
				t.Fatalf("%s: matched %v, want %v", step, got, want)
			}
		}
	}
	sub := func(i int, qos byte) {
		tr.subscribe("d/1", cls[i], qos)
		want[cls[i]] = qos
		check(fmt.Sprintf("subscribe c%d qos %d", i, qos))
	}
	unsub := func(i int, had bool) {
		if got := tr.unsubscribe("d/1", cls[i]); got != had {
			t.Fatalf("unsubscribe c%d = %v, want %v", i, got, had)
		}
		delete(want, cls[i])
		check(fmt.Sprintf("unsubscribe c%d", i))
	}
	check("empty")
	sub(0, 0)
	sub(0, 1) // replaces the inline one
	unsub(1, false)
	sub(1, 0) // a list of two
	sub(2, 1)
	sub(1, 1) // replaces within the list
	unsub(3, false)
	unsub(0, true)
	unsub(2, true) // one left: inline again
	if n := tr.root.child("d").child("1"); n.x != nil || n.one.cl != cls[1] {
		t.Fatalf("one subscriber left: ext %v, one %v; want it inline", n.x, n.one.cl)
	}
	sub(3, 1)
	unsub(1, true)
	unsub(3, true)
	if n := tr.root.nkids(); n != 0 || tr.root.x != nil {
		t.Fatalf("tree not pruned: %d children", n)
	}
}

// TestProfileIDsOutOfLine: profile user ids, whose bytes live out of the
// record (in recBytes), up to the profile's 64 bytes, are profile users:
// direct messages and their receipts reach them, they have presence, and
// the store total does not count their ids (idCharged).
func TestProfileIDsOutOfLine(t *testing.T) {
	s := startServer(t, nil)
	long, longer := strings.Repeat("a", 41), strings.Repeat("b", 64)
	held := s.held.Load()
	a, b := dial(t, s), dial(t, s)
	a.connect(long, false)
	b.connect(longer, false)
	for _, id := range []string{long, longer} {
		cl := s.reg.lock([]byte(id), false)
		if cl == nil || int(cl.idn) != len(id) || string(cl.idBytes()) != id || !cl.profileID() {
			t.Fatalf("%d-byte id: record %v, want it in recBytes and a profile user", len(id), cl)
		}
		cl.mu.Unlock()
	}
	if d := s.held.Load() - held; d != 0 {
		t.Fatalf("store total grew by %d for ids of at most 64 bytes, want 0", d)
	}
	id := a.publish("u/"+longer+"/m1", "hello", 1)
	if p := a.expect(mqtt.TypePuback); p.ID != id {
		t.Fatalf("PUBACK id %d, want %d", p.ID, id)
	}
	p := b.expect(mqtt.TypePublish)
	if p.Topic != "u/"+longer+"/m/"+long+"/m1" || p.Payload != "hello" {
		t.Fatalf("%d-byte user got %+v", len(longer), p)
	}
	b.puback(p.ID)
	if d := a.expect(mqtt.TypePublish); d.Topic != "u/"+long+"/d/"+longer+"/m1" {
		t.Fatalf("%d-byte user got %+v, want the delivered receipt", len(long), d)
	}
	b.conn.Close()
	waitFor(t, "presence of the 64-byte user", func() bool {
		online, last, known := s.reg.presence([]byte(longer))
		return known && !online && last != 0
	})
}

// TestTreeKids churns a node's child table (growth, backward-shift
// deletion, shrinking) against a map.
func TestTreeKids(t *testing.T) {
	var k kids
	want := map[string]*tnode{}
	check := func(step string) {
		t.Helper()
		if k.n != len(want) {
			t.Fatalf("%s: %d children, want %d", step, k.n, len(want))
		}
		for name, c := range want {
			if got := k.get(name); got != c {
				t.Fatalf("%s: get(%q) = %p, want %p", step, name, got, c)
			}
		}
		if k.get("absent") != nil {
			t.Fatalf("%s: found a child never added", step)
		}
	}
	for round := range 3 {
		for i := range 1000 {
			name := fmt.Sprint(i*7919%1000 + round)
			if want[name] == nil {
				c := &tnode{name: name}
				k.add(c)
				want[name] = c
			}
		}
		check(fmt.Sprintf("round %d filled", round))
		for i := range 1000 {
			if i%3 != round {
				name := fmt.Sprint(i)
				k.remove(name)
				delete(want, name)
			}
		}
		check(fmt.Sprintf("round %d thinned", round))
	}
	for name := range want {
		k.remove(name)
		delete(want, name)
	}
	check("emptied")
	if k.slots != nil {
		t.Fatalf("empty table keeps %d slots", len(k.slots))
	}
}

// TestInlineSubscription walks a client's subscriptions through the forms
// they are kept in: one exact filter in the client record (no extension),
// spilled into the extension at the second, a wildcard filter in the
// extension, none; messages reach the client in each form.
func TestInlineSubscription(t *testing.T) {
	s := startServer(t, nil)
	dev, pub := dial(t, s), dial(t, s)
	dev.connect("dev", true)
	pub.connect("pub", false)
	state := func(step string, inline string, ext int) {
		t.Helper()
		cl := s.reg.lock([]byte("dev"), false)
		defer cl.mu.Unlock()
		n := 0
		if x := cl.xp(); x != nil {
			n = x.subs.len()
		}
		if string(cl.inlineFilter()) != inline || n != ext {
			t.Fatalf("%s: inline %q, %d in the extension; want %q, %d", step, cl.inlineFilter(), n, inline, ext)
		}
	}
	delivered := func(step, topic string) {
		t.Helper()
		pub.publish(topic, step, 0)
		if p := dev.expect(mqtt.TypePublish); string(p.Topic) != topic || string(p.Payload) != step {
			t.Fatalf("%s: got %q on %q, want %q on %q", step, p.Payload, p.Topic, step, topic)
		}
	}
	dev.subscribe("d/dev", 1)
	state("one exact filter", "d/dev", 0)
	delivered("inline", "d/dev")
	dev.subscribe("d/dev", 0)
	state("the same filter again", "d/dev", 0)
	dev.subscribe("d/two", 0)
	state("a second filter", "", 2)
	delivered("spilled", "d/dev")
	dev.unsubscribeMany("d/dev", "d/two")
	state("unsubscribed", "", 0)
	if cl := s.reg.lock([]byte("dev"), false); cl.xp() != nil {
		cl.mu.Unlock()
		t.Fatal("an unsubscribed client keeps its extension")
	} else {
		cl.mu.Unlock()
	}
	dev.subscribe("d/+", 0)
	state("a wildcard filter", "", 1)
	delivered("wildcard", "d/x")
	dev.unsubscribeMany("d/+")
	dev.subscribe("d/dev", 0)
	state("exact again", "d/dev", 0)
	dev.conn.Close()
	waitFor(t, "the session to go offline", func() bool {
		cl := s.reg.lock([]byte("dev"), false)
		defer cl.mu.Unlock()
		return cl.handle == 0
	})
	state("offline", "d/dev", 0)
}

// TestFilterArena churns the inline filters' arena: runs are reused by
// length, never straddle a chunk, and keep their bytes until freed.
func TestFilterArena(t *testing.T) {
	a := new(arena)
	live := map[uint32]string{}
	for i := range 20000 {
		f := strings.Repeat(fmt.Sprint(i%10), 1+i*37%maxInlineFilter)
		ref := a.alloc(f)
		if ref == 0 {
			t.Fatalf("alloc %d: arena full", i)
		}
		if _, dup := live[ref]; dup {
			t.Fatalf("alloc %d: reference %d given out twice", i, ref)
		}
		live[ref] = f
		if i%3 == 0 {
			for r, g := range live {
				a.free(r, len(g))
				delete(live, r)
				break
			}
		}
	}
	for ref, f := range live {
		if off := ref & (1<<arenaChunkBits - 1); int(off)+(len(f)+arenaUnit-1)/arenaUnit > 1<<arenaChunkBits {
			t.Fatalf("reference %d (%d bytes) straddles a chunk", ref, len(f))
		}
		if got := string(a.bytes(ref, len(f))); got != f {
			t.Fatalf("reference %d holds %q, want %q", ref, got, f)
		}
	}
}

// TestFillCounters: FillCounters and FillGauges write what Stats().Counters()
// and Gauges() return, and allocate nothing once the map holds every name
// (the activity reporter's sources, asked each second on an idle server).
func TestFillCounters(t *testing.T) {
	s := startServer(t, nil)
	c := dial(t, s)
	c.connect("fill", false)
	c.conn.Close()
	waitFor(t, "the close to be counted", func() bool { return s.Stats().Closes[ReasonEOF.String()] > 0 })
	for _, tc := range []struct {
		name string
		fill func(map[string]int64)
		get  func() map[string]int64
	}{
		{"counters", s.FillCounters, func() map[string]int64 { return s.Stats().Counters() }},
		{"gauges", s.FillGauges, func() map[string]int64 { return s.Stats().Gauges() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := map[string]int64{}
			tc.fill(m)
			if want := tc.get(); !maps.Equal(m, want) {
				t.Fatalf("filled %v, want %v", m, want)
			}
			if n := testing.AllocsPerRun(10, func() { tc.fill(m) }); n != 0 {
				t.Fatalf("%v allocations per fill, want 0", n)
			}
		})
	}
}
