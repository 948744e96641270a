package cluster

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// TestPacked: random claims over a small id space agree with a map, a
// node's setShard reports exactly the users whose node changed, and
// malformed values are read up to the damage without a panic.
func TestPacked(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	n := &Node{names: make(map[string]string)}
	model := map[string]string{}
	rev := uint64(0)
	for step := range 20000 {
		u := fmt.Sprintf("user.%d", r.IntN(2000))
		if r.IntN(10) == 0 {
			u += string(make([]byte, 300+r.IntN(300))) // long ids: the length's high byte
		}
		node := fmt.Sprintf("n%d", r.IntN(5))
		s := shardOf([]byte(u))
		rev++
		moves := n.setShard(s, rev, setPacked(n.shards[s].val, u, node))
		if model[u] == node && len(moves) != 0 || model[u] != node && (len(moves) != 1 || moves[0] != move{u, node}) {
			t.Fatalf("step %d: %q %s -> %s: moves %q", step, u, model[u], node, moves)
		}
		model[u] = node
		if n.users != len(model) {
			t.Fatalf("step %d: %d users, model %d", step, n.users, len(model))
		}
	}
	for u, want := range model {
		if got, ok := n.Home([]byte(u)); !ok || got != want {
			t.Fatalf("Home(%q) = %q %v, want %q", u, got, ok, want)
		}
	}
	if _, ok := n.Home([]byte("nobody")); ok {
		t.Fatal("Home of an unknown user")
	}
	if moves := n.setShard(0, 1, nil); moves != nil {
		t.Fatalf("an older revision was applied: %q", moves)
	}

	// A value not written by a node: kept up to its first bad node name.
	bad := appendEntry(appendEntry(appendEntry(nil, "carol", "n1"), "dave", "a.b"), "erin", "n2")
	s := shardOf([]byte("carol"))
	rev++
	if moves := n.setShard(s, rev, append(setPacked(n.shards[s].val, "carol", "n1"), bad...)); len(moves) == 0 {
		t.Fatal("no move for carol")
	}
	if _, ok := lookupPacked(n.shards[s].val, []byte("dave")); ok {
		t.Error("dave's entry, naming an invalid node, was kept")
	}
	if _, ok := lookupPacked(n.shards[s].val, []byte("erin")); ok {
		t.Error("erin's entry, after the damage, was kept")
	}
	if h, ok := n.Home([]byte("carol")); !ok || h != "n1" {
		t.Errorf("carol: %q %v", h, ok)
	}

	val := appendEntry(appendEntry(nil, "alice", "n1"), "bob", "n2")
	for cut := range len(val) {
		var got []string
		eachPacked(val[:cut], func(u, nd []byte) { got = append(got, string(u)+"@"+string(nd)) })
		want := 0
		if cut >= 10 { // alice's entry: 2+5+1+2
			want = 1
		}
		if len(got) != want {
			t.Fatalf("cut at %d: %q", cut, got)
		}
	}
	if nd, ok := lookupPacked(val, []byte("bob")); !ok || string(nd) != "n2" {
		t.Fatalf("bob: %q %v", nd, ok)
	}
	for _, k := range []string{"s0", "s4095", "s12"} {
		if s, ok := parseShardKey(k); !ok || shardKey(s) != k {
			t.Errorf("parseShardKey(%q) = %d %v", k, s, ok)
		}
	}
	for _, k := range []string{"", "s", "s4096", "s-1", "s01", "x1", "s1a"} {
		if s, ok := parseShardKey(k); ok {
			t.Errorf("parseShardKey(%q) = %d, want refused", k, s)
		}
	}
}

// TestClaimsShareShards: three nodes claim 150 users each at once, all in
// the same 3 shards, so their compare-and-sets collide; every claim still
// lands (none overwrites another node's), then a takeover moves a user
// and only the node it left hears Moved for it.
func TestClaimsShareShards(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 3 embedded NATS servers")
	}
	nodes, recs := startNodes(t, 3)
	shards := map[int]bool{shardOf([]byte("u0")): true}
	var users []string
	for g := 0; len(users) < 450; g++ {
		u := fmt.Sprintf("u%d", g)
		s := shardOf([]byte(u))
		if len(shards) < 3 {
			shards[s] = true
		}
		if shards[s] {
			users = append(users, u)
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i, nd := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for g := i; g < len(users); g += 3 {
				nd.Claim(users[g])
			}
		}()
	}
	wg.Wait()
	for i, nd := range nodes {
		eventually(t, fmt.Sprintf("n%d places every user", i), func() bool {
			for g, u := range users {
				if h, ok := nd.Home([]byte(u)); !ok || h != fmt.Sprintf("n%d", g%3) {
					return false
				}
			}
			return nd.Users() == len(users)
		})
	}
	c := nodes[0].conflicts.Load() + nodes[1].conflicts.Load() + nodes[2].conflicts.Load()
	t.Logf("%d claims in %v, retried after a lost compare-and-set: %d", len(users), time.Since(start).Round(time.Millisecond), c)

	time.Sleep(200 * time.Millisecond) // the last hooks of the watch run after Home shows the entry
	recs[0].mu.Lock()
	clear(recs[0].moved)
	recs[0].mu.Unlock()
	nodes[2].Claim(users[0]) // n0's user
	placedEverywhere(t, nodes, users[0], "n2")
	eventually(t, "n0 hears the move", func() bool {
		recs[0].mu.Lock()
		defer recs[0].mu.Unlock()
		return recs[0].moved[users[0]] == "n2"
	})
	recs[0].mu.Lock()
	if len(recs[0].moved) != 1 {
		t.Errorf("n0 heard moves for %d users, want 1: %v", len(recs[0].moved), recs[0].moved)
	}
	recs[0].mu.Unlock()

	// A claim on a view the watch will not bring up to date (as if it
	// were stuck or gone): the lost compare-and-set reads the shard.
	s := shardOf([]byte(users[1]))
	nodes[0].mu.Lock()
	held := nodes[0].shards[s]
	nodes[0].shards[s] = shard{rev: held.rev - 1, val: held.val}
	nodes[0].mu.Unlock()
	nodes[0].Claim(users[1]) // n1's user
	placedEverywhere(t, nodes, users[1], "n0")
}

// placedEverywhere waits until every node's directory places user on node.
func placedEverywhere(t *testing.T, nodes []*Node, user, node string) {
	t.Helper()
	for i, nd := range nodes {
		eventually(t, fmt.Sprintf("n%d places %s on %s", i, user, node), func() bool {
			h, ok := nd.Home([]byte(user))
			return ok && h == node
		})
	}
}

// BenchmarkHome: a lookup on the publish path, with the cluster's users
// packed into the 4,096 shards (10-byte ids, 5-byte node names), and the
// bytes per user the directory holds.
func BenchmarkHome(b *testing.B) {
	for _, users := range []int{100_000, 2_000_000} {
		b.Run(fmt.Sprintf("users=%d", users), func(b *testing.B) {
			n := &Node{names: make(map[string]string)}
			vals := make([][]byte, dirShards)
			for g := range users {
				u := fmt.Sprintf("u%09d", g)
				s := shardOf([]byte(u))
				vals[s] = appendEntry(vals[s], u, fmt.Sprintf("node%d", g%7))
			}
			bytes := 0
			for s, v := range vals {
				n.setShard(s, 1, v)
				bytes += len(v)
			}
			ids := make([][]byte, 1024)
			for i := range ids {
				ids[i] = fmt.Appendf(nil, "u%09d", (i*7919)%users)
			}
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if _, ok := n.Home(ids[i%len(ids)]); !ok {
					b.Fatal("not found")
				}
			}
			b.ReportMetric(float64(bytes)/float64(users), "B/user")
		})
	}
}
