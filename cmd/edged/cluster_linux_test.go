package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/edgedhq/edged/internal/testenv"
	"golang.org/x/sys/unix"
)

// clusterNet is a cluster's network: a hub namespace (where the clients
// are) with a public bridge 10.77.1.0/24 and a private bridge 10.77.2.0/24
// (no address in the hub: clients cannot reach it), and one namespace per
// node with a veth link to each: public 10.77.1.N for clients, private
// 10.77.2.N for the NATS routes.
type clusterNet struct {
	hub   string
	nodes []string
}

func (cn *clusterNet) pub(i int) string  { return fmt.Sprintf("10.77.1.%d", i+1) }
func (cn *clusterNet) priv(i int) string { return fmt.Sprintf("10.77.2.%d", i+1) }

func newClusterNet(t *testing.T, n int) *clusterNet {
	t.Helper()
	testenv.RequirePriv(t, "the cluster network (network namespaces, veth, bridges)")
	_, err := exec.LookPath("ip")
	testenv.Require(t, err == nil, "the cluster network needs iproute2's ip")
	p := fmt.Sprintf("ec%d", os.Getpid()%100000)
	cn := &clusterNet{hub: p + "h"}
	t.Cleanup(func() {
		for _, ns := range append(cn.nodes, cn.hub) {
			exec.Command("ip", "netns", "del", ns).Run()
		}
	})
	ipCmd(t, "netns", "add", cn.hub)
	hub := func(args ...string) { ipCmd(t, append([]string{"-n", cn.hub}, args...)...) }
	hub("link", "set", "lo", "up")
	for _, br := range []string{"brp", "brq"} {
		hub("link", "add", br, "type", "bridge")
		hub("link", "set", br, "up")
	}
	hub("addr", "add", "10.77.1.254/24", "dev", "brp")
	for i := range n {
		ns := fmt.Sprintf("%sn%d", p, i)
		cn.nodes = append(cn.nodes, ns)
		ipCmd(t, "netns", "add", ns)
		ipCmd(t, "-n", ns, "link", "set", "lo", "up")
		for _, l := range []struct{ name, br, addr string }{
			{"pub", "brp", cn.pub(i)}, {"priv", "brq", cn.priv(i)},
		} {
			a, b := fmt.Sprintf("%s%s%d", p, l.name[:2], i), fmt.Sprintf("%s%s%dh", p, l.name[:2], i)
			ipCmd(t, "link", "add", a, "netns", ns, "type", "veth", "peer", "name", b, "netns", cn.hub)
			ipCmd(t, "-n", ns, "link", "set", a, "name", l.name)
			ipCmd(t, "-n", ns, "addr", "add", l.addr+"/24", "dev", l.name)
			ipCmd(t, "-n", ns, "link", "set", l.name, "up")
			hub("link", "set", b, "master", l.br)
			hub("link", "set", b, "up")
		}
	}
	return cn
}

// dialer dials from inside the hub namespace: a locked thread enters it
// for the socket call and is discarded after (a goroutine that exits
// locked takes its thread with it).
func (cn *clusterNet) dialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type res struct {
			c   net.Conn
			err error
		}
		ch := make(chan res, 1)
		go func() {
			runtime.LockOSThread()
			f, err := os.Open("/run/netns/" + cn.hub)
			if err != nil {
				ch <- res{nil, err}
				return
			}
			defer f.Close()
			if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
				ch <- res{nil, os.NewSyscallError("setns", err)}
				return
			}
			c, err := (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, network, addr)
			ch <- res{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// client runs a command (mosquitto_pub, mosquitto_sub) in the hub.
func (cn *clusterNet) client(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", cn.hub, name}, args...)...)
}

// node is one edged of a test cluster.
type node struct {
	cmd  *exec.Cmd
	errb *syncBuffer
	args []string
}

// startTestCluster starts n edged nodes in cn, each with its own data dir;
// they share one admin token (the admin API listens on the public link).
func startTestCluster(t *testing.T, bin string, cn *clusterNet, extra ...string) ([]*node, string) {
	t.Helper()
	tokFile := t.TempDir() + "/admin-token"
	const token = "cluster-test-admin-token"
	os.WriteFile(tokFile, []byte(token), 0o600)
	var peers []string
	for i := range cn.nodes {
		peers = append(peers, cn.priv(i)+":6222")
	}
	nodes := make([]*node, len(cn.nodes))
	var wg sync.WaitGroup
	for i, ns := range cn.nodes {
		args := append([]string{"netns", "exec", ns, bin,
			"--node", fmt.Sprintf("n%d", i), "--listen", cn.pub(i) + ":1883", "--insecure",
			"--admin", cn.pub(i) + ":9090", "--admin-token-file", tokFile,
			"--data-dir", t.TempDir(), "--sys-interval", "0", "--loops", "1",
			"--cluster-listen", cn.priv(i) + ":6222", "--cluster-peers", strings.Join(peers, ","),
		}, extra...)
		nodes[i] = &node{args: args}
		wg.Add(1)
		go func() { // the nodes wait for each other (JetStream quorum)
			defer wg.Done()
			nodes[i].start(t)
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, nd := range nodes {
			nd.kill()
		}
	})
	for _, nd := range nodes {
		if nd.cmd == nil {
			t.FailNow()
		}
	}
	return nodes, token
}

func (nd *node) start(t *testing.T) {
	cmd := exec.Command("ip", nd.args...)
	nd.errb = &syncBuffer{}
	cmd.Stderr = nd.errb
	if err := cmd.Start(); err != nil {
		t.Error(err)
		return
	}
	deadline := time.Now().Add(90 * time.Second)
	for !strings.Contains(nd.errb.String(), "edged started") {
		if time.Now().After(deadline) || cmd.ProcessState != nil {
			cmd.Process.Kill()
			cmd.Wait()
			t.Errorf("edged did not start: %s", nd.errb.String())
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	nd.cmd = cmd
}

func (nd *node) kill() {
	if nd.cmd != nil {
		nd.cmd.Process.Kill() // ip netns exec execs edged: this is edged's pid
		nd.cmd.Wait()
		nd.cmd = nil
	}
}

// sub starts mosquitto_sub in the hub: it exits after count messages or
// wait seconds; lines returns what it printed ("topic payload" lines).
type subProc struct {
	cmd *exec.Cmd
	out *syncBuffer
}

func (cn *clusterNet) sub(t *testing.T, host, id string, count int, topics ...string) *subProc {
	t.Helper()
	args := []string{"-h", host, "-i", id, "-q", "1", "-v", "-C", fmt.Sprint(count), "-W", "30"}
	for _, tp := range topics {
		args = append(args, "-t", tp)
	}
	sp := &subProc{cmd: cn.client("mosquitto_sub", args...), out: &syncBuffer{}}
	sp.cmd.Stdout, sp.cmd.Stderr = sp.out, sp.out
	if err := sp.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.cmd.Process.Kill(); sp.cmd.Wait() })
	time.Sleep(300 * time.Millisecond) // connected and subscribed (mosquitto_sub has no ready signal)
	return sp
}

func (sp *subProc) lines(t *testing.T) []string {
	t.Helper()
	err := sp.cmd.Wait()
	out := strings.TrimSpace(sp.out.String())
	if err != nil {
		t.Fatalf("mosquitto_sub: %v: %s", err, out)
	}
	return strings.Split(out, "\n")
}

func (cn *clusterNet) pubMsg(t *testing.T, host, id, topic, msg string, extra ...string) {
	t.Helper()
	args := append([]string{"-h", host, "-i", id, "-q", "1", "-t", topic, "-m", msg}, extra...)
	if out, err := cn.client("mosquitto_pub", args...).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub %s: %v: %s", topic, err, out)
	}
}

// collector is a Paho client in the hub that acknowledges each delivery
// (mosquitto_sub -C N exits before acknowledging the last ones, which
// then come again: right, but not what a takeover test wants to see).
type collector struct {
	c    paho.Client
	msgs chan string
}

func (cn *clusterNet) collect(t *testing.T, host, id string) *collector {
	t.Helper()
	co := &collector{msgs: make(chan string, 64)}
	c, err := pahoConnectVia(host+":1883", id, func(_ paho.Client, m paho.Message) {
		co.msgs <- m.Topic() + " " + string(m.Payload())
	}, cn.dialer())
	if err != nil {
		t.Fatal(err)
	}
	co.c = c
	t.Cleanup(func() { c.Disconnect(0) })
	return co
}

// take returns the next n deliveries, then disconnects (after the acks).
func (co *collector) take(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	for len(out) < n {
		select {
		case m := <-co.msgs:
			out = append(out, m)
		case <-time.After(30 * time.Second): // a loaded CI machine, JetStream electing leaders after a partition
			t.Fatalf("got %q, waiting for %d", out, n)
		}
	}
	time.Sleep(300 * time.Millisecond) // Paho sends the last PUBACK after the handler returns
	co.c.Disconnect(250)
	return out
}

func want(t *testing.T, what string, got []string, lines ...string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(lines, "\n") {
		t.Fatalf("%s: got %q, want %q", what, got, lines)
	}
}

// TestClusterProfile runs 3 real edged nodes, each in its own network
// namespace with a public link (clients) and a private link (NATS routes),
// and stock mosquitto clients: direct messages, delivered and read
// receipts, a group with members on every node (membership set through
// one node's admin API), presence and generic topics with a retained
// message, all across nodes; then a takeover across nodes that moves the
// unacknowledged inbox along.
func TestClusterProfile(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	_, err := exec.LookPath("mosquitto_sub")
	testenv.Require(t, err == nil, "mosquitto_sub and mosquitto_pub (mosquitto-clients) are not installed")
	cn := newClusterNet(t, 3)
	bin := buildEdged(t)
	_, token := startTestCluster(t, bin, cn)
	h0, h1, h2 := cn.pub(0), cn.pub(1), cn.pub(2)

	t.Run("direct and receipts", func(t *testing.T) {
		bob := cn.sub(t, h1, "bob", 1, "u/bob/#")
		// alice stays connected: her delivered receipt can come back
		// while the publishing connection is still open (the fast path
		// takes about a millisecond), and it is hers (the inbox is
		// implicit): a mosquitto_pub as alice took it at times.
		alice := cn.collect(t, h0, "alice")
		if tok := alice.c.Publish("u/bob/m1", 1, false, "hello bob"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("alice's PUBLISH: %v", tok.Error())
		}
		want(t, "bob on n1", bob.lines(t), "u/bob/m/alice/m1 hello bob")
		// bob's PUBACK made a delivered receipt in alice's inbox on n0.
		bob = cn.sub(t, h1, "bob", 1, "u/bob/#")
		cn.pubMsg(t, h1, "bob2", "r/alice/m1", "")  // a stranger's read receipt is bob2's
		cn.pubMsg(t, h2, "carol", "u/bob/m2", "hi") // from a third node
		want(t, "bob again", bob.lines(t), "u/bob/m/carol/m2 hi")
		want(t, "alice's receipts", alice.take(t, 2), "u/alice/d/bob/m1 ", "u/alice/r/bob2/m1 ")
	})

	t.Run("groups", func(t *testing.T) {
		hc := &http.Client{Transport: &http.Transport{DialContext: cn.dialer()}, Timeout: 10 * time.Second}
		for _, u := range []string{"gx", "gy", "gz"} {
			req, _ := http.NewRequest("PUT", "http://"+h0+":9090/groups/team/members/"+u, nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode/100 != 2 {
				t.Fatalf("PUT member %s: %s", u, resp.Status)
			}
		}
		// Membership reaches n2 through the cluster's group bucket.
		deadline := time.Now().Add(10 * time.Second)
		for {
			req, _ := http.NewRequest("GET", "http://"+h2+":9090/groups/team", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			b.ReadFrom(resp.Body)
			resp.Body.Close()
			if strings.Contains(b.String(), "gz") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("n2's members of team: %s", b.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		gy := cn.sub(t, h1, "gy", 1, "u/gy/#")
		gz := cn.sub(t, h2, "gz", 1, "u/gz/#")
		cn.pubMsg(t, h2, "gx", "g/team/g1", "to the team") // gx publishes on n2
		want(t, "gy on n1", gy.lines(t), "u/gy/g/team/gx/g1 to the team")
		want(t, "gz on n2", gz.lines(t), "u/gz/g/team/gx/g1 to the team")
	})

	t.Run("presence and generic topics", func(t *testing.T) {
		watcher := cn.sub(t, h0, "watcher", 2, "p/dave", "news/#")
		dave := cn.sub(t, h2, "dave", 1, "u/dave/#") // online, from n2
		cn.pubMsg(t, h1, "anon1", "news/today", "sunny", "-r")
		want(t, "watcher on n0", watcher.lines(t), "p/dave online", "news/today sunny")
		// A new subscriber on n1 gets dave's current presence at SUBSCRIBE
		// (what n1 heard from n2, the node the directory names).
		now := cn.sub(t, h1, "watcher2", 1, "p/dave")
		want(t, "presence at SUBSCRIBE on n1", now.lines(t), "p/dave online")
		dave.cmd.Process.Kill()
		// The retained message reached every node's store.
		late := cn.sub(t, h2, "late", 1, "news/#")
		want(t, "retained on n2", late.lines(t), "news/today sunny")
	})

	t.Run("takeover moves the inbox", func(t *testing.T) {
		// erin has 5 messages waiting on n0 (never acknowledged), then
		// connects on n2: n0 closes nothing (she is offline) but moves
		// the inbox; then she connects on n1 while n2 holds her live
		// connection: n2 closes it and moves what it holds.
		for i := range 5 {
			cn.pubMsg(t, h0, "frank", fmt.Sprintf("u/erin/e%d", i), fmt.Sprint(i))
		}
		erin := cn.collect(t, h0, "erin") // claims her on n0: the inbox is here
		var w []string
		for i := range 5 {
			w = append(w, fmt.Sprintf("u/erin/m/frank/e%d %d", i, i))
		}
		want(t, "erin on n0", erin.take(t, 5), w...)
		for i := range 3 { // waiting on n0 while she is away
			cn.pubMsg(t, h1, "frank", fmt.Sprintf("u/erin/f%d", i), fmt.Sprint(i))
		}
		erin = cn.collect(t, h2, "erin") // on n2: n0 moves f0-f2 here
		w = nil
		for i := range 3 {
			w = append(w, fmt.Sprintf("u/erin/m/frank/f%d %d", i, i))
		}
		want(t, "erin on n2, moved from n0", erin.take(t, 3), w...)
		// Sent once the move is done (one sent during it may overtake
		// the moved messages: docs/CLUSTER.md, "Order"; a 300 ms pause
		// here was not always enough on a loaded host). take
		// disconnected erin: f3 waits for her on n2.
		cn.pubMsg(t, h1, "frank", "u/erin/f3", "3")
		erin = cn.collect(t, h2, "erin")
		want(t, "erin on n2 again", erin.take(t, 1), "u/erin/m/frank/f3 3")

		// A live connection on n2 with unacknowledged deliveries: a
		// client that never acks (Paho with manual acks off) holds them.
		got := make(chan string, 16)
		o := paho.NewClientOptions().AddBroker("tcp://" + h2 + ":1883").SetClientID("erin").
			SetCleanSession(true).SetAutoReconnect(false).SetAutoAckDisabled(true).
			SetCustomOpenConnectionFn(func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
				return cn.dialer()(context.Background(), "tcp", u.Host)
			})
		o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { got <- m.Topic() })
		lost := make(chan struct{})
		o.SetConnectionLostHandler(func(paho.Client, error) { close(lost) })
		pc := paho.NewClient(o)
		if tok := pc.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("paho connect: %v", tok.Error())
		}
		defer pc.Disconnect(0)
		cn.pubMsg(t, h0, "frank", "u/erin/k1", "k")
		select {
		case tp := <-got:
			if tp != "u/erin/m/frank/k1" {
				t.Fatalf("paho got %s", tp)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("paho erin got nothing on n2")
		}
		erin = cn.collect(t, h1, "erin") // takes her over on n1
		select {
		case <-lost: // n2 closed the old connection
		case <-time.After(10 * time.Second):
			t.Fatal("n2 did not close erin's old connection")
		}
		want(t, "erin on n1 gets the unacknowledged message", erin.take(t, 1), "u/erin/m/frank/k1 k")
	})
}

// TestClusterKill9 kill -9s one of 3 nodes under QoS 1 load from Paho
// publishers on two nodes to receivers on two nodes; the killed node's
// publishers and receivers reconnect to the others, then it restarts on
// its data dir. Every PUBACKed message must reach its receiver.
func TestClusterKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	cn := newClusterNet(t, 3)
	bin := buildEdged(t)
	nodes, token := startTestCluster(t, bin, cn)
	const victim = 1
	addr := func(i int) string { return cn.pub(i) + ":1883" }
	connect := func(i int, id string, h paho.MessageHandler) (paho.Client, error) {
		return pahoConnectVia(addr(i), id, h, cn.dialer())
	}
	var (
		mu      sync.Mutex
		acked   = make(map[string]string) // mid -> receiver
		got     = make(map[string]int)    // receiver/mid -> deliveries
		stop    atomic.Bool
		stopRcv atomic.Bool
		wg      sync.WaitGroup
		rwg     sync.WaitGroup
		killed  atomic.Bool
	)
	// home picks a client's node: the victim's clients go to node 2 once
	// it is dead.
	home := func(i int) int {
		if i == victim && killed.Load() {
			return 2
		}
		return i
	}
	receivers := []struct {
		id   string
		node int
	}{{"r0", victim}, {"r1", victim}, {"r2", 2}, {"r3", 0}}
	for _, r := range receivers {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			h := func(_ paho.Client, m paho.Message) {
				parts := strings.Split(m.Topic(), "/") // u/<r>/m/<s>/<mid>
				mu.Lock()
				got[parts[1]+"/"+parts[4]]++
				mu.Unlock()
			}
			var c paho.Client
			for !stopRcv.Load() {
				if c == nil || !c.IsConnectionOpen() {
					if c != nil {
						c.Disconnect(0)
					}
					var err error
					if c, err = connect(home(r.node), r.id, h); err != nil {
						c = nil
						time.Sleep(100 * time.Millisecond)
						continue
					}
				}
				time.Sleep(20 * time.Millisecond)
			}
			if c != nil {
				c.Disconnect(100)
			}
		}()
	}
	time.Sleep(time.Second) // the receivers are claimed
	senders := []struct {
		id   string
		node int
	}{{"s0", 0}, {"s1", victim}, {"s2", 2}, {"s3", victim}}
	const maxPerSender = 3000
	for _, s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c paho.Client
			for seq := 0; seq < maxPerSender && !stop.Load(); {
				if c == nil || !c.IsConnectionOpen() {
					if c != nil {
						c.Disconnect(0)
					}
					var err error
					if c, err = connect(home(s.node), s.id, nil); err != nil {
						c = nil
						time.Sleep(100 * time.Millisecond)
						continue
					}
				}
				seq++
				rcv := receivers[seq%len(receivers)].id
				mid := fmt.Sprintf("%s-%d", s.id, seq)
				tok := c.Publish("u/"+rcv+"/"+mid, 1, false, "x")
				if tok.WaitTimeout(3*time.Second) && tok.Error() == nil {
					mu.Lock()
					acked[mid] = rcv
					mu.Unlock()
				}
			}
			if c != nil {
				c.Disconnect(0)
			}
		}()
	}
	time.Sleep(3 * time.Second)
	mu.Lock()
	before := len(acked)
	mu.Unlock()
	killed.Store(true)
	nodes[victim].kill() // SIGKILL
	t.Logf("killed n%d after %d acknowledged messages", victim, before)
	// JetStream elects new leaders for what n1 led (a few seconds): until
	// then cross-node PUBLISHes are refused, not acknowledged.
	time.Sleep(12 * time.Second)
	stop.Store(true)
	wg.Wait()
	mu.Lock()
	t.Logf("%d acknowledged after the kill", len(acked)-before)
	mu.Unlock()
	nodes[victim].start(t) // hands its inboxes to node 2 and consumes its stream
	if nodes[victim].cmd == nil {
		t.FailNow()
	}
	deadline := time.Now().Add(60 * time.Second)
	var missing []string
	for {
		missing = missing[:0]
		mu.Lock()
		for mid, rcv := range acked {
			if got[rcv+"/"+mid] == 0 {
				missing = append(missing, rcv+"/"+mid)
			}
		}
		n := len(acked)
		mu.Unlock()
		if len(missing) == 0 || time.Now().After(deadline) {
			t.Logf("%d acknowledged, %d missing", n, len(missing))
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	stopRcv.Store(true)
	rwg.Wait()
	mu.Lock()
	defer mu.Unlock()
	dups := 0
	for _, n := range got {
		if n > 1 {
			dups++
		}
	}
	t.Logf("deliveries %d, delivered more than once %d", len(got), dups)
	// How many inbox entries the restarted node handed to node 2.
	hc := &http.Client{Transport: &http.Transport{DialContext: cn.dialer()}, Timeout: 10 * time.Second}
	req, _ := http.NewRequest("GET", "http://"+cn.pub(victim)+":9090/server/stats", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, err := hc.Do(req); err == nil {
		var st struct {
			Cluster struct {
				Moved    uint64 `json:"moved"`
				Received uint64 `json:"batches_received"`
			} `json:"cluster"`
		}
		json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		t.Logf("restarted n%d: moved %d inbox entries, received %d batches since its restart", victim, st.Cluster.Moved, st.Cluster.Received)
	}
	if len(acked) < 100 {
		t.Fatalf("only %d messages acknowledged: the load did not run", len(acked))
	}
	if len(missing) > 0 {
		if len(missing) > 10 {
			missing = missing[:10]
		}
		t.Fatalf("acknowledged but never delivered (first 10): %v\nvictim log:\n%s", missing, nodes[victim].errb.String())
	}
}

// TestClusterPartition cuts one node's private link: a QoS 1 message from
// its client to a user on another node is not acknowledged (the node
// closes the publisher, cluster_unavailable) and not lost: sent again
// after the link is back, it arrives. Same-node messages go on meanwhile.
func TestClusterPartition(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	cn := newClusterNet(t, 3)
	bin := buildEdged(t)
	nodes, _ := startTestCluster(t, bin, cn)
	h0, h1 := cn.pub(0), cn.pub(1)
	bob := cn.collect(t, h1, "bob") // claimed on n1
	dave := cn.collect(t, h0, "dave")
	time.Sleep(time.Second) // every node's directory has bob and dave
	alice, err := pahoConnectVia(h0+":1883", "alice", nil, cn.dialer())
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Disconnect(0)

	ipCmd(t, "-n", cn.nodes[0], "link", "set", "priv", "down")
	tok := alice.Publish("u/bob/p1", 1, false, "through the partition")
	if tok.WaitTimeout(6*time.Second) && tok.Error() == nil {
		t.Fatal("n0 acknowledged a message for n1 while cut off from the cluster")
	}
	deadline := time.Now().Add(5 * time.Second)
	for alice.IsConnectionOpen() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if alice.IsConnectionOpen() {
		t.Fatal("n0 did not close the publisher whose message it could not store")
	}
	carol, err := pahoConnectVia(h0+":1883", "carol", nil, cn.dialer())
	if err != nil {
		t.Fatal(err)
	}
	if tok := carol.Publish("u/dave/local", 1, false, "same node"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("same-node message during the partition: %v", tok.Error())
	}
	carol.Disconnect(0)
	want(t, "dave on n0 during the partition", dave.take(t, 1), "u/dave/m/carol/local same node")

	ipCmd(t, "-n", cn.nodes[0], "link", "set", "priv", "up")
	deadline = time.Now().Add(60 * time.Second)
	for {
		alice, err = pahoConnectVia(h0+":1883", "alice", nil, cn.dialer())
		if err == nil {
			tok := alice.Publish("u/bob/p1", 1, false, "through the partition")
			if tok.WaitTimeout(6*time.Second) && tok.Error() == nil {
				alice.Disconnect(0)
				break
			}
			alice.Disconnect(0)
		}
		if time.Now().After(deadline) {
			t.Fatalf("n0 did not recover from the partition: %s", nodes[0].errb.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
	got := bob.take(t, 1)
	want(t, "bob on n1 after the partition", got, "u/bob/m/alice/p1 through the partition")
	if !strings.Contains(nodes[0].errb.String(), "cluster: batch refused") {
		t.Errorf("n0 did not log the refused batch: %s", nodes[0].errb.String())
	}
}
