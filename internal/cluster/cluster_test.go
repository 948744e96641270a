package cluster

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge"
)

// freePorts returns n loopback addresses nothing listens on now.
func freePorts(t testing.TB, n int) []string {
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, l.Addr().String())
		l.Close()
	}
	return out
}

// recorder collects what a node's hooks were given.
type recorder struct {
	mu      sync.Mutex
	batches [][]byte
	moved   map[string]string
	groups  map[string]bool
	n       atomic.Int64
}

func (r *recorder) hooks() edge.ClusterHooks {
	r.moved, r.groups = make(map[string]string), make(map[string]bool)
	return edge.ClusterHooks{
		Deliver: func(b []edge.Batch) error {
			r.mu.Lock()
			for _, x := range b {
				r.batches = append(r.batches, append([]byte(nil), x.Data...))
			}
			r.mu.Unlock()
			r.n.Add(int64(len(b)))
			return nil
		},
		Generic: func([]byte) {},
		Moved: func(user, node string) {
			r.mu.Lock()
			r.moved[user] = node
			r.mu.Unlock()
		},
		Group: func(add bool, group, user string) {
			r.mu.Lock()
			r.groups[group+"/"+user] = add
			r.mu.Unlock()
		},
	}
}

// startNodes starts n embedded nodes in this process, clustered.
func startNodes(t testing.TB, n int) ([]*Node, []*recorder) {
	t.Helper()
	nodes, _ := startCluster(t, n)
	recs := make([]*recorder, n)
	for i, nd := range nodes {
		recs[i] = &recorder{}
		if err := nd.Run(recs[i].hooks()); err != nil {
			t.Fatal(err)
		}
	}
	return nodes, recs
}

// startCluster starts n embedded nodes (not yet Run), closed at the end of
// the test; it returns them and their options.
func startCluster(t testing.TB, n int) ([]*Node, []Options) {
	t.Helper()
	addrs := freePorts(t, n)
	nodes := make([]*Node, n)
	opts := make([]Options, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		opts[i] = Options{Node: fmt.Sprintf("n%d", i), Listen: addrs[i], Peers: addrs, StoreDir: t.TempDir()}
		wg.Add(1)
		go func() {
			defer wg.Done()
			nodes[i], errs[i] = Start(opts[i])
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, nd := range nodes {
			if nd != nil {
				nd.Close()
			}
		}
	})
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return nodes, opts
}

func eventually(t testing.TB, what string, f func() bool) {
	t.Helper()
	eventuallyWithin(t, 15*time.Second, what, f)
}

// eventuallyWithin is eventually with a bound of its own.
func eventuallyWithin(t testing.TB, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestNodes: three embedded nodes form a JetStream cluster; a claim reaches
// every directory (and the Moved hook), a batch sent to a node is
// delivered there once, a group change reaches every node.
func TestNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 3 embedded NATS servers")
	}
	nodes, recs := startNodes(t, 3)
	nodes[1].Claim("bob.smith") // a '.' in a user id is not a KV token separator
	for i, nd := range nodes {
		eventually(t, fmt.Sprintf("n%d sees bob on n1", i), func() bool {
			h, ok := nd.Home([]byte("bob.smith"))
			return ok && h == "n1"
		})
		eventually(t, fmt.Sprintf("n%d's Moved hook", i), func() bool {
			recs[i].mu.Lock()
			defer recs[i].mu.Unlock()
			return recs[i].moved["bob.smith"] == "n1"
		})
	}
	done := make(chan error, 1)
	nodes[0].Send("n2", 0, []byte("batch-1"), func(err error) { done <- err })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := nodes[1].SendSync("n2", []byte("batch-2"), "id-2"); err != nil {
		t.Fatal(err)
	}
	if err := nodes[1].SendSync("n2", []byte("batch-2"), "id-2"); err != nil { // a repeat: dropped
		t.Fatal(err)
	}
	eventually(t, "n2 got both batches", func() bool { return recs[2].n.Load() >= 2 })
	time.Sleep(200 * time.Millisecond)
	recs[2].mu.Lock()
	if len(recs[2].batches) != 2 || string(recs[2].batches[0]) != "batch-1" || string(recs[2].batches[1]) != "batch-2" {
		t.Errorf("n2 got %q", recs[2].batches)
	}
	recs[2].mu.Unlock()
	if recs[0].n.Load()+recs[1].n.Load() != 0 {
		t.Errorf("other nodes got batches for n2")
	}
	if err := nodes[2].SetGroup(true, "team", "bob.smith"); err != nil {
		t.Fatal(err)
	}
	for i := range nodes {
		eventually(t, fmt.Sprintf("n%d has the member", i), func() bool {
			recs[i].mu.Lock()
			defer recs[i].mu.Unlock()
			return recs[i].groups["team/bob.smith"]
		})
	}
}

func TestBadOptions(t *testing.T) {
	for _, o := range []Options{{}, {Node: "a b", Listen: "x:1", StoreDir: "d"}, {Node: "a"}} {
		if _, err := Start(o); err == nil {
			t.Errorf("Start(%+v) succeeded", o)
		}
	}
}

// BenchmarkSend is the JetStream path of a cross-node batch: Send from n0
// to n1 (R3 stream), acknowledged, delivered and acked by n1's consumer;
// 64 batches in flight. Reports batches per second and the ack latency.
func BenchmarkSend(b *testing.B) {
	nodes, recs := startNodes(b, 3)
	payload := make([]byte, 2400) // about 40 records
	sem := make(chan struct{}, 64)
	var lat atomic.Int64
	b.ResetTimer()
	for b.Loop() {
		sem <- struct{}{}
		t0 := time.Now()
		nodes[0].Send("n1", 0, payload, func(err error) {
			if err != nil {
				b.Error(err)
			}
			lat.Add(int64(time.Since(t0)))
			<-sem
		})
	}
	for range 64 {
		sem <- struct{}{}
	}
	b.ReportMetric(float64(lat.Load())/float64(b.N)/1e3, "ack-us")
	eventually(b, "delivered", func() bool { return recs[1].n.Load() >= int64(b.N) })
}
