package edge

import (
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/internal/wal"
)

// TestDensityTreeChurnModel: random subscribe/unsubscribe of exact and
// wildcard filters by many clients against a brute-force model.
func TestDensityTreeChurnModel(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	tr := newTopicTree()
	const ncl = 40
	cls := make([]*client, ncl)
	for i := range cls {
		cls[i] = &client{idx: uint32(i + 1)}
	}
	levels := []string{}
	for i := range 70 {
		levels = append(levels, fmt.Sprint("n", i))
	}
	levels = append(levels, "+", "#", "")
	model := map[int]map[string]bool{}
	for i := range ncl {
		model[i] = map[string]bool{}
	}
	randFilter := func() string {
		n := 1 + rng.Intn(4)
		f := ""
		for j := 0; j < n; j++ {
			l := levels[rng.Intn(len(levels))]
			if l == "#" && j != n-1 {
				l = "x"
			}
			if j > 0 {
				f += "/"
			}
			f += l
		}
		return f
	}
	topics := []string{}
	for range 300 {
		n := 1 + rng.Intn(4)
		f := ""
		for j := 0; j < n; j++ {
			l := levels[rng.Intn(len(levels)-3)]
			if rng.Intn(8) == 0 {
				l = ""
			}
			if j > 0 {
				f += "/"
			}
			f += l
		}
		if f != "" {
			topics = append(topics, f)
		}
	}
	var out []tsub
	for step := range 60000 {
		ci := rng.Intn(ncl)
		f := randFilter()
		if rng.Intn(2) == 0 {
			tr.subscribe(f, cls[ci], 1)
			model[ci][f] = true
		} else {
			// unsubscribe something it has, mostly
			for g := range model[ci] {
				if rng.Intn(3) == 0 {
					f = g
					break
				}
			}
			got := tr.unsubscribe(f, cls[ci])
			if got != model[ci][f] {
				t.Fatalf("step %d: unsubscribe(%q) = %v, model %v", step, f, got, model[ci][f])
			}
			delete(model[ci], f)
		}
		if step%97 == 0 {
			for _, tp := range topics {
				out = tr.match([]byte(tp), out)
				var got []int
				for _, s := range out {
					got = append(got, int(s.cl.idx-1))
				}
				slices.Sort(got)
				var want []int
				for i := range ncl {
					for g := range model[i] {
						if matchFilter(g, tp) {
							want = append(want, i)
							break
						}
					}
				}
				if !slices.Equal(got, want) {
					t.Fatalf("step %d: match(%q) = %v, want %v", step, tp, got, want)
				}
			}
		}
	}
	// drain all; the root must be empty
	for i := range ncl {
		for g := range model[i] {
			if !tr.unsubscribe(g, cls[i]) {
				t.Fatalf("drain: %q of %d missing", g, i)
			}
		}
	}
	if tr.root.nkids() != 0 || tr.root.x != nil {
		t.Fatalf("drained tree keeps %d children (x %v)", tr.root.nkids(), tr.root.x != nil)
	}
	_ = fmt.Sprint
}

// TestDensityInlineSubRestart: a persistent client's inline subscription
// (and its moves to the extension and back) survives restarts, both from
// the journal and from a snapshot, and is delivered to after them.
func TestDensityInlineSubRestart(t *testing.T) {
	dir := t.TempDir()
	set := func(c *Config) { c.Fsync = wal.SyncNever }
	s := startDurable(t, dir, set)
	restart := func(step string, compact bool, want ...string) {
		t.Helper()
		if compact {
			if err := s.compact(); err != nil {
				t.Fatal(err)
			}
		}
		s.Close()
		s = startDurable(t, dir, set)
		if got := stateOf(s, "dev").subs; !slices.Equal(got, want) {
			t.Fatalf("%s: subs %q, want %q", step, got, want)
		}
	}
	session := func(f func(dev *rawClient)) {
		dev := dial(t, s)
		dev.connect("dev", true)
		f(dev)
		dev.conn.Close()
		waitFor(t, "offline", func() bool { return s.Connections() == 0 })
	}
	session(func(dev *rawClient) { dev.subscribe("d/dev", 1) })
	restart("inline, journal", false, "d/dev:1")
	restart("inline, snapshot", true, "d/dev:1")
	session(func(dev *rawClient) { dev.subscribe("d/two", 0); dev.unsubscribeMany("d/dev") })
	restart("spilled, journal", false, "d/two:0")
	restart("spilled, snapshot", true, "d/two:0")
	session(func(dev *rawClient) {
		dev.unsubscribeMany("d/two")
		dev.subscribe("d/dev", 0)
		dev.subscribe("d/dev", 1)
	})
	restart("inline again, journal", false, "d/dev:1")
	restart("inline again, snapshot", true, "d/dev:1")
	pub := dial(t, s)
	pub.connect("pub", false)
	pub.publishAcked("d/dev", "hello")
	dev := dial(t, s)
	dev.connect("dev", true)
	if p := dev.expect(mqtt.TypePublish); string(p.Topic) != "d/dev" || string(p.Payload) != "hello" {
		t.Fatalf("got %q on %q", p.Payload, p.Topic)
	}
}

// TestDensityInlineSubHandoff: inline subscriptions (online clean session,
// offline persistent session) and a spilled pair cross a handoff.
func TestDensityInlineSubHandoff(t *testing.T) {
	dir := t.TempDir()
	s1 := startDurable(t, dir, nil)
	a := dial(t, s1)
	a.connect("a", false)
	a.subscribe("d/a", 1)
	b := dial(t, s1)
	b.connect("b", false)
	b.subscribe("d/b", 0)
	b.subscribe("d/b2", 1)
	p := dial(t, s1)
	p.connect("p", true)
	p.subscribe("d/p", 1)
	p.conn.Close()
	waitFor(t, "p offline", func() bool { return s1.Connections() == 2 })
	h, err := s1.Freeze()
	if err != nil {
		t.Fatal(err)
	}
	h2 := dupHandoff(t, h)
	s2 := startServer(t, func(c *Config) { c.DataDir, c.Handoff, c.AdminAddr = dir, h2, "" })
	if err := s1.Finish(); err != nil {
		t.Fatal(err)
	}
	for u, want := range map[string][]string{"a": {"d/a:1"}, "b": {"d/b2:1", "d/b:0"}, "p": {"d/p:1"}} {
		if got := stateOf(s2, u).subs; !slices.Equal(got, want) {
			t.Errorf("%s after the handoff: %q, want %q", u, got, want)
		}
	}
	pub := dial(t, s2)
	pub.connect("pub", false)
	pub.publish("d/a", "x", 0)
	if m := a.expect(mqtt.TypePublish); string(m.Topic) != "d/a" {
		t.Fatalf("a got %q", m.Topic)
	}
}

// TestDensityInlineSubV5: v5 options on an inline subscription (No Local,
// Retain Handling 1) and an identifier moving it to the extension and back.
func TestDensityInlineSubV5(t *testing.T) {
	s := startServer(t, nil)
	pub := dial(t, s)
	pub.connect("pub", false)
	pub.send(mqtt.AppendPublish(nil, "d/v", []byte("retained"), 0, true, false, 0))
	pub.publishAcked("d/sync", "sync")
	c := dial5(t, s)
	c.connect(mqtt.Connect{ClientID: []byte("v"), CleanSession: true}, nil)
	sub := func(props []byte, s5 mqtt.Subscription5) {
		t.Helper()
		c.send(mqtt.AppendSubscribe5(nil, c.nextID(), props, s5))
		if p := c.expect(mqtt.TypeSuback); p.Codes[0] >= 0x80 {
			t.Fatalf("SUBACK %x", p.Codes)
		}
	}
	sub(nil, mqtt.Subscription5{Filter: "d/v", QoS: 1, NoLocal: true, RetainHandling: 1})
	if p := c.expect(mqtt.TypePublish); p.Payload != "retained" {
		t.Fatalf("first subscribe: %+v", p)
	}
	sub(nil, mqtt.Subscription5{Filter: "d/v", QoS: 1, NoLocal: true, RetainHandling: 1})
	if p, err := c.tryRead(100 * time.Millisecond); err == nil {
		t.Fatalf("retain handling 1 on an existing inline subscription sent %+v", p)
	}
	c.publish("d/v", "own", 0, nil)
	if p, err := c.tryRead(100 * time.Millisecond); err == nil {
		t.Fatalf("no local on an inline subscription: got %+v", p)
	}
	sub(mqtt.AppendVBIProp(nil, mqtt.PropSubscriptionID, 9), mqtt.Subscription5{Filter: "d/v", QoS: 1, RetainHandling: 2})
	pub.publish("d/v", "with id", 0)
	p := c.expect(mqtt.TypePublish)
	var ids []uint32
	for id := range mqtt.SubIDs(p.Props.Raw) {
		ids = append(ids, id)
	}
	if p.Payload != "with id" || !slices.Equal(ids, []uint32{9}) {
		t.Fatalf("after the identifier: %q ids %v", p.Payload, ids)
	}
	if st := stateOf(s, "v").subs; !slices.Equal(st, []string{"d/v:1"}) {
		t.Fatalf("subs %q", st)
	}
	c.publish("d/v", "own", 0, nil) // No Local is gone with the new options
	if p := c.expect(mqtt.TypePublish); p.Payload != "own" {
		t.Fatalf("%+v", p)
	}
	sub(nil, mqtt.Subscription5{Filter: "d/v", QoS: 0, RetainHandling: 2})
	pub.publish("d/v", "no id", 0)
	p = c.expect(mqtt.TypePublish)
	ids = ids[:0]
	for id := range mqtt.SubIDs(p.Props.Raw) {
		ids = append(ids, id)
	}
	if p.Payload != "no id" || len(ids) != 0 {
		t.Fatalf("after dropping the identifier: %q ids %v", p.Payload, ids)
	}
}

// TestDensitySubModel drives addSubLocked/removeSubLocked/dropSubs on one
// client with random exact, wildcard and shared filters, QoS and
// identifiers, and checks cl.subs, the inline invariant and the tree
// against a model after every step.
func TestDensitySubModel(t *testing.T) {
	s := startServer(t, func(c *Config) { c.MaxSubscriptions = 3 })
	rng := rand.New(rand.NewSource(2))
	filters := []string{"a/b", "a/c", "a/+", "a/#", "$share/g/a/b", "p/x", "z"}
	type st struct {
		qos byte
		id  uint32
	}
	for _, name := range []string{"m1", "m2"} {
		model := map[string]st{}
		cl := s.reg.lock([]byte(name), true)
		cl.persistent = true
		cl.mu.Unlock()
		for step := range 5000 {
			f := filters[rng.Intn(len(filters))]
			cl.mu.Lock()
			switch r := rng.Intn(10); {
			case r < 6:
				q := byte(rng.Intn(3))
				var id uint32
				if rng.Intn(3) == 0 {
					id = uint32(1 + rng.Intn(5))
				}
				_, had := model[f]
				ok := s.addSubLocked(cl, f, q, id, false)
				if want := had || len(model) < 3; ok != want {
					t.Fatalf("step %d: add %q = %v, want %v (model %v)", step, f, ok, want, model)
				}
				if ok {
					model[f] = st{q, id}
				}
			case r < 9:
				_, had := model[f]
				if got := s.removeSubLocked(cl, []byte(f)); got != had {
					t.Fatalf("step %d: remove %q = %v, want %v", step, f, got, had)
				}
				delete(model, f)
			default:
				s.dropSubs(cl)
				clear(model)
			}
			cl.trimExt()
			got := map[string]st{}
			for f, sub := range cl.subs {
				got[string(f)] = st{sub.qos, sub.id}
			}
			if cl.fref != 0 && cl.xp() != nil && cl.xp().subs.len() != 0 {
				t.Fatalf("step %d: inline and %d in the extension", step, cl.xp().subs.len())
			}
			if cl.nsubs() != len(model) {
				t.Fatalf("step %d: nsubs %d, model %d", step, cl.nsubs(), len(model))
			}
			for f, w := range model {
				if got[f] != w || !cl.hasSub([]byte(f)) {
					t.Fatalf("step %d: %q: %+v (has %v), want %+v; all %v", step, f, got[f], cl.hasSub([]byte(f)), w, got)
				}
			}
			cl.mu.Unlock()
			for _, tp := range []string{"a/b", "a/c", "z", "p/x"} {
				var want *st
				for f, w := range model {
					g := f
					if _, inner, sh := mqtt.SplitShared([]byte(f)); sh {
						g = string(inner)
					}
					if matchFilter(g, tp) {
						if want == nil || w.qos > want.qos {
							w := w
							want = &w
						}
					}
				}
				var mine []tsub
				for _, ts := range s.tree.match([]byte(tp), nil) {
					if ts.cl == cl {
						mine = append(mine, ts)
					}
				}
				if want == nil && len(mine) != 0 || want != nil && (len(mine) != 1 || mine[0].qos != want.qos) {
					t.Fatalf("step %d: match %q for %s: %+v, want %+v (model %v)", step, tp, name, mine, want, model)
				}
			}
		}
		cl.mu.Lock()
		s.dropSubs(cl)
		cl.persistent = false
		cl.trimExt()
		cl.mu.Unlock()
	}
}

// TestDensityFillCountersDurable: FillCounters/FillGauges equal Stats()'s
// with a store (the disk figures) too.
func TestDensityFillCountersDurable(t *testing.T) {
	s := startDurable(t, t.TempDir(), nil)
	c := dial(t, s)
	c.connect("other", false)
	c.publishAcked("u/fill/x", "x")
	m, g := map[string]int64{}, map[string]int64{}
	s.FillCounters(m)
	s.FillGauges(g)
	want, wantG := s.Stats().Counters(), s.Stats().Gauges()
	for k, v := range want {
		if mv, ok := m[k]; !ok || (mv != v && k != "store_written_bytes" && k != "store_records") {
			t.Errorf("counter %s: %d (%v), want %d", k, mv, ok, v)
		}
	}
	if len(m) != len(want) || len(g) != len(wantG) {
		t.Errorf("%d counters, %d gauges; want %d, %d", len(m), len(g), len(want), len(wantG))
	}
	for k := range wantG {
		if _, ok := g[k]; !ok {
			t.Errorf("gauge %s missing", k)
		}
	}
}

// TestDensityIDAccounting: ids of every length class charge and give back
// the store total symmetrically, whether in recBytes or longIDs.
func TestDensityIDAccounting(t *testing.T) {
	s := startServer(t, nil)
	base := s.held.Load()
	for _, n := range []int{1, 40, 64, 65, 100, 254, 255, 300} {
		id := []byte(strings.Repeat("i", n))
		cl := s.reg.lock(id, true)
		if got := string(cl.idBytes()); got != string(id) {
			t.Fatalf("%d: id %q", n, got)
		}
		gen := cl.gen
		cl.mu.Unlock()
		if d := s.held.Load() - base; d != longIDCost(n) {
			t.Errorf("%d bytes: held +%d, want %d", n, d, longIDCost(n))
		}
		s.reg.release(cl, gen)
		if d := s.held.Load() - base; d != 0 {
			t.Errorf("%d bytes: released, held +%d", n, d)
		}
	}
}
