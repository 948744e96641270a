package edge

import (
	"fmt"
	"testing"
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
	if n := tr.root.children["d"].children["1"]; n.more != nil || n.one.cl != cls[1] {
		t.Fatalf("one subscriber left: more %v, one %v; want it inline", n.more, n.one.cl)
	}
	sub(3, 1)
	unsub(1, true)
	unsub(3, true)
	if len(tr.root.children) != 0 {
		t.Fatalf("tree not pruned: %v", tr.root.children)
	}
}
