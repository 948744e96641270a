package cluster

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestDirectoryModel: random sets, moves and deletes over a small id space
// (so ids come back after their delete, tombstones pile up, the arena is
// compacted and the table grows and shrinks) agree with a map after every
// step.
func TestDirectoryModel(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		r := rand.New(rand.NewPCG(seed, 99))
		d := newDirectory()
		model := map[string]string{}
		ids := 3000
		if seed == 4 {
			ids = 40 // a small table churned: tombstone sweeps, no growth
		}
		for step := 0; step < 60000; step++ {
			u := fmt.Sprintf("user-%d", r.IntN(ids))
			if r.IntN(5) == 0 {
				u = string(make([]byte, r.IntN(300))) + u // long ids: 2-byte lengths
			}
			switch op := r.IntN(10); {
			case op < 6:
				node := fmt.Sprintf("n%d", r.IntN(7))
				if !d.Set(u, node) {
					t.Fatalf("seed %d step %d: Set(%q, %q) refused", seed, step, u, node)
				}
				model[u] = node
			default:
				d.Delete([]byte(u))
				delete(model, u)
			}
			if d.Len() != len(model) {
				t.Fatalf("seed %d step %d: Len %d, model %d", seed, step, d.Len(), len(model))
			}
			if step%1000 == 0 || step == 59999 {
				for k, want := range model {
					if got, ok := d.Get([]byte(k)); !ok || got != want {
						t.Fatalf("seed %d step %d: Get(%q) = %q %v, want %q", seed, step, k, got, ok, want)
					}
				}
			}
			probe := fmt.Sprintf("user-%d", r.IntN(ids))
			got, ok := d.Get([]byte(probe))
			if want, wok := model[probe]; ok != wok || got != want {
				t.Fatalf("seed %d step %d: Get(%q) = %q %v, model %q %v", seed, step, probe, got, ok, want, wok)
			}
		}
		if d.waste*2 > len(d.arena) && d.waste > 4096 {
			t.Fatalf("seed %d: %d of %d arena bytes are waste", seed, d.waste, len(d.arena))
		}
	}
}

// TestDirectoryShrinks: after most users leave, the next insert that needs
// room rebuilds the table at the size the users left need.
func TestDirectoryShrinks(t *testing.T) {
	d := newDirectory()
	for i := 0; i < 100000; i++ {
		d.Set(fmt.Sprintf("u%d", i), "n1")
	}
	big := len(d.slots)
	for i := 0; i < 99000; i++ {
		d.Delete([]byte(fmt.Sprintf("u%d", i)))
	}
	for i := 0; d.dead > 0; i++ { // churn until a rebuild sweeps the tombstones
		d.Set(fmt.Sprintf("v%d", i), "n2")
		d.Delete([]byte(fmt.Sprintf("v%d", i)))
	}
	if len(d.slots) >= big/8 || d.Len() != 1000 {
		t.Fatalf("%d slots for %d users (had %d for 100,000)", len(d.slots), d.Len(), big)
	}
	if n, ok := d.Get([]byte("u99999")); !ok || n != "n1" {
		t.Fatalf("u99999 on %q %v", n, ok)
	}
}

// TestDirectoryNodeNames: the slot's uint16 tells maxNodes names apart;
// past that a name no user points to any more is dropped to make room,
// and with every name in use a new one is refused (not misfiled).
func TestDirectoryNodeNames(t *testing.T) {
	d := newDirectory()
	for i := 0; i < maxNodes; i++ {
		if !d.Set(fmt.Sprintf("u%d", i), fmt.Sprintf("node-%d", i)) {
			t.Fatalf("node %d refused", i)
		}
	}
	if d.Set("extra", "node-new") {
		t.Fatal("a name past maxNodes with every name in use was taken")
	}
	slots := &d.slots[0]
	if d.Set("extra2", "node-new2") || &d.slots[0] != slots {
		t.Fatal("a second refusal rebuilt the table (nothing changed since the first)")
	}
	d.Delete([]byte("u7"))
	if !d.Set("extra", "node-new") {
		t.Fatal("node-new refused with node-7 unused")
	}
	for _, c := range []struct{ u, node string }{{"extra", "node-new"}, {"u8", "node-8"}, {"u65534", "node-65534"}} {
		if n, ok := d.Get([]byte(c.u)); !ok || n != c.node {
			t.Fatalf("%s on %q %v, want %s", c.u, n, ok, c.node)
		}
	}
	if _, ok := d.Get([]byte("u7")); ok {
		t.Fatal("u7 still there")
	}
}

// TestDirectoryBytes: the directory's bytes per user, the per-node cost
// of every user of the cluster (issue #14; a map[string]string was 82 B),
// with ids like the benchmarks' (10 bytes), at 100,000 users (just past a
// doubling: the table is 3/8 full, the worst case) and at 190,000 (just
// before the next).
func TestDirectoryBytes(t *testing.T) {
	d := newDirectory()
	for _, c := range []struct {
		users int
		max   float64
	}{{100000, 40}, {190000, 25}} {
		for j := 0; j < c.users; j++ {
			d.Set(fmt.Sprintf("user%06d", j), fmt.Sprintf("n%d", j%7))
		}
		per := float64(d.Bytes()) / float64(c.users)
		t.Logf("%d users: %d B, %.1f B per user (%d slots, %d arena bytes)", c.users, d.Bytes(), per, len(d.slots), cap(d.arena))
		if per > c.max {
			t.Fatalf("%d users: %.1f B per user in %d slots, want at most %.0f B", c.users, per, len(d.slots), c.max)
		}
	}
}

func BenchmarkDirectoryGet(b *testing.B) {
	d := newDirectory()
	ids := make([][]byte, 100000)
	for i := range ids {
		ids[i] = []byte(fmt.Sprintf("user%06d", i))
		d.Set(string(ids[i]), "n1")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok := d.Get(ids[i%len(ids)]); !ok {
			b.Fatal("miss")
		}
	}
}
