package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
)

// benchPortOffset moves the benchmark nodes' fixed ports (routes 16300+i,
// clients 18900+i, admin 19800+i): a benchmark that sets it does not
// collide with another one running at the same time on the host.
var benchPortOffset = 0

// benchNode is an edged process of a benchmark (loopback, no namespaces).
type benchNode struct {
	addr string
	pid  int
	stop func()
}

// startBenchNodes starts n edged nodes on loopback, clustered unless n is
// 1 (then a plain node, no cluster flags: the baseline). Every node has 1
// loop and --fsync never (the 2 cores are shared by the nodes and the
// clients; the log is written, not fsynced).
func startBenchNodes(b *testing.B, bin string, n int) []benchNode {
	b.Helper()
	var peers []string
	for i := range n {
		peers = append(peers, fmt.Sprintf("127.0.0.1:%d", 16300+benchPortOffset+i))
	}
	nodes := make([]benchNode, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			args := []string{"--listen", fmt.Sprintf("127.0.0.1:%d", 18900+benchPortOffset+i), "--admin", fmt.Sprintf("127.0.0.1:%d", 19800+benchPortOffset+i), "--loops", "1",
				"--data-dir", filepath.Join(b.TempDir(), "d"), "--fsync", "never", "--publish-rate", "-1", "--sys-interval", "0",
				"--new-inbox-rate", "-1"}
			if n > 1 {
				args = append(args, "--node", fmt.Sprintf("n%d", i),
					"--cluster-listen", peers[i], "--cluster-peers", strings.Join(peers, ","))
			}
			nodes[i] = startBenchProc(b, bin, args)
		}()
	}
	wg.Wait()
	b.Cleanup(func() {
		for _, nd := range nodes {
			if nd.stop != nil {
				nd.stop()
			}
		}
	})
	for _, nd := range nodes {
		if nd.stop == nil {
			b.FailNow()
		}
	}
	return nodes
}

func startBenchProc(b *testing.B, bin string, args []string) benchNode {
	cmd := exec.Command(bin, args...)
	errb := &syncBuffer{}
	cmd.Stderr = errb
	if err := cmd.Start(); err != nil {
		b.Error(err)
		return benchNode{}
	}
	deadline := time.Now().Add(90 * time.Second)
	for !strings.Contains(errb.String(), "edged started") {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			b.Errorf("edged did not start: %s", errb.String())
			return benchNode{}
		}
		time.Sleep(20 * time.Millisecond)
	}
	m := listenRE.FindStringSubmatch(errb.String())
	return benchNode{addr: m[1], pid: cmd.Process.Pid, stop: func() { cmd.Process.Kill(); cmd.Wait() }}
}

// cpuTicks returns utime+stime of pid (all threads), in clock ticks.
func cpuTicks(b *testing.B, pid int) int64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		b.Fatal(err)
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st
}

// mqttConn is a minimal QoS 1 client: it PUBACKs every PUBLISH it gets
// (messages and receipts) and counts them; onAck is told each PUBACK.
type mqttConn struct {
	c     net.Conn
	wmu   sync.Mutex
	w     *bufio.Writer
	got   atomic.Int64
	onAck func()
}

func dialMQTT(b *testing.B, addr, id string) *mqttConn {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write(mqtt.AppendConnect(nil, &mqtt.Connect{CleanSession: true, KeepAlive: 60, ClientID: []byte(id)}))
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil || ack[3] != 0 {
		b.Fatalf("connect %s: %v %x", id, err, ack)
	}
	c.SetDeadline(time.Time{})
	return &mqttConn{c: c, w: bufio.NewWriterSize(c, 16<<10)}
}

func (m *mqttConn) write(p []byte) {
	m.wmu.Lock()
	m.w.Write(p)
	m.w.Flush()
	m.wmu.Unlock()
}

// read runs until the connection closes.
func (m *mqttConn) read() {
	buf := make([]byte, 0, 64<<10)
	tmp := make([]byte, 32<<10)
	var p mqtt.Packet
	var out []byte
	for {
		k, err := m.c.Read(tmp)
		if err != nil {
			return
		}
		buf = append(buf, tmp[:k]...)
		out = out[:0]
		off := 0
		for {
			n, err := mqtt.Decode(buf[off:], 0, &p)
			if err != nil {
				return
			}
			if n == 0 {
				break
			}
			off += n
			switch p.Type {
			case mqtt.TypePublish:
				m.got.Add(1)
				if p.QoS == 1 {
					out = mqtt.AppendPuback(out, p.PacketID)
				}
			case mqtt.TypePuback:
				if m.onAck != nil {
					m.onAck()
				}
			}
		}
		buf = append(buf[:0], buf[off:]...)
		if len(out) > 0 {
			m.write(out)
		}
	}
}

// runPairs runs pairs closed-loop QoS 1 sender/receiver pairs, window
// messages in flight each, senders on send[i%len] and receivers on
// recv[i%len], for d after a 1 s warm-up; it returns the messages
// delivered per second and the servers' CPU microseconds per message.
func runPairs(b *testing.B, tag string, send, recv []benchNode, all []benchNode, pairs, window int, d time.Duration) (rate, cpuUS float64) {
	var rcv, snd []*mqttConn
	var stop atomic.Bool
	var wg sync.WaitGroup
	for i := range pairs {
		r := dialMQTT(b, recv[i%len(recv)].addr, fmt.Sprintf("%sr%d", tag, i))
		rcv = append(rcv, r)
		go r.read()
	}
	time.Sleep(time.Second) // the receivers are in every node's directory
	for i := range pairs {
		s := dialMQTT(b, send[i%len(send)].addr, fmt.Sprintf("%ss%d", tag, i))
		snd = append(snd, s)
		win := make(chan struct{}, window)
		s.onAck = func() { <-win }
		go s.read()
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := fmt.Sprintf("u/%sr%d/", tag, i)
			payload := make([]byte, 64)
			var pkt []byte
			for seq := 1; !stop.Load() && seq < 10_000_000; seq++ {
				select {
				case win <- struct{}{}:
				case <-time.After(5 * time.Second):
					return // stalled: the run reports what it got
				}
				pid := uint16(seq%65535 + 1)
				pkt = mqtt.AppendPublish(pkt[:0], topic+strconv.Itoa(seq), payload, 1, false, false, pid)
				s.write(pkt)
			}
		}()
	}
	total := func() (n int64) {
		for _, r := range rcv {
			n += r.got.Load()
		}
		return n
	}
	ticks := func() (t int64) {
		for _, nd := range all {
			t += cpuTicks(b, nd.pid)
		}
		return t
	}
	time.Sleep(time.Second)
	if dir := os.Getenv("EDGED_BENCH_PROFILE"); dir != "" {
		// a CPU profile of the first node during the measured time
		go exec.Command("curl", "-s", "-o", filepath.Join(dir, tag+".pprof"), fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=4", 19800)).Run()
	}
	n0, t0, w0, c0 := total(), ticks(), time.Now(), clusterCounts(all)
	time.Sleep(d)
	n1, t1, w1, c1 := total(), ticks(), time.Now(), clusterCounts(all)
	if c1[0] > c0[0] {
		b.ReportMetric(float64(c1[1]-c0[1])/float64(c1[0]-c0[0]), "records/batch")
		b.ReportMetric(float64(c1[0]-c0[0])/w1.Sub(w0).Seconds(), "batches/s")
	}
	stop.Store(true)
	for _, c := range append(snd, rcv...) {
		c.c.Close()
	}
	wg.Wait()
	msgs := float64(n1 - n0)
	if msgs == 0 {
		b.Fatalf("%s: no message delivered", tag)
	}
	return msgs / w1.Sub(w0).Seconds(), float64(t1-t0) * 1e6 / 100 / msgs // USER_HZ 100
}

// BenchmarkClusterPairs: QoS 1 direct messages between pairs (each
// delivery PUBACKed and its delivered receipt sent back and PUBACKed),
// closed loop (EDGED_BENCH_PAIRS pairs, default 50, EDGED_BENCH_WINDOW in
// flight each, default 8), 5 s measured per run: one node without cluster
// flags (the baseline), then 3 nodes on loopback in one run, senders and
// receivers on the same node and on different nodes, alternating. CPU is
// the nodes' (embedded NATS included) per delivered message; records/batch
// and batches/s are the cross-node JetStream messages. Run with
// -benchtime 1x.
func BenchmarkClusterPairs(b *testing.B) {
	bin := buildEdgedB(b)
	pairs, window, d := 50, 8, 5*time.Second
	if v, err := strconv.Atoi(os.Getenv("EDGED_BENCH_PAIRS")); err == nil {
		pairs = v
	}
	if v, err := strconv.Atoi(os.Getenv("EDGED_BENCH_WINDOW")); err == nil {
		window = v
	}
	single := startBenchNodes(b, bin, 1)
	b.Run("single-node-no-cluster", func(b *testing.B) {
		for b.Loop() {
			rate, cpu := runPairs(b, "a", single, single, single, pairs, window, d)
			b.ReportMetric(rate, "msg/s")
			b.ReportMetric(cpu, "cpu-us/msg")
		}
	})
	single[0].stop()
	nodes := startBenchNodes(b, bin, 3)
	// Same-node and cross-node runs alternate, rounds times, in one
	// cluster: the host's noise falls on both.
	const rounds = 3
	b.Run("cluster-same-vs-cross", func(b *testing.B) {
		for b.Loop() {
			var same, cross, cpuSame, cpuCross float64
			for r := range rounds {
				rate, cpu := runPairs(b, fmt.Sprintf("s%d", r), nodes, nodes, nodes, pairs, window, d)
				same, cpuSame = same+rate/rounds, cpuSame+cpu/rounds
				// pair i: sender on node i%3, receiver on node (i+1)%3
				recv := append(append([]benchNode{}, nodes[1:]...), nodes[0])
				rate, cpu = runPairs(b, fmt.Sprintf("c%d", r), nodes, recv, nodes, pairs, window, d)
				cross, cpuCross = cross+rate/rounds, cpuCross+cpu/rounds
			}
			b.ReportMetric(same, "same-msg/s")
			b.ReportMetric(cross, "cross-msg/s")
			b.ReportMetric(cross/same, "cross/same")
			b.ReportMetric(cpuSame, "same-cpu-us/msg")
			b.ReportMetric(cpuCross, "cross-cpu-us/msg")
		}
	})
}

// BenchmarkClusterConnections connects n clients (each a distinct user:
// with a cluster, each CONNECT is a directory claim) with 8 connecting
// goroutines, to one plain node (the baseline) and spread over 3 nodes,
// and reports the connect rate, the rate at which the users reached
// every node's directory, and the RSS growth per connection summed over
// the nodes, 2 s after that.
func BenchmarkClusterConnections(b *testing.B) {
	bin := buildEdgedB(b)
	const n = 9_000
	run := func(b *testing.B, nodes []benchNode) {
		for b.Loop() {
			var r0 int64
			for _, nd := range nodes {
				r0 += rss(b, nd.pid)
			}
			t0 := time.Now()
			conns := make([]*mqttConn, n)
			var wg sync.WaitGroup
			for w := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < n; i += 8 {
						conns[i] = dialMQTT(b, nodes[i%len(nodes)].addr, fmt.Sprintf("conn%d", i))
					}
				}()
			}
			wg.Wait()
			dt := time.Since(t0)
			if len(nodes) > 1 {
				// Every node's directory holds every user.
				deadline := time.Now().Add(60 * time.Second)
				for time.Now().Before(deadline) && minDirectory(nodes) < n {
					time.Sleep(50 * time.Millisecond)
				}
				if m := minDirectory(nodes); m < n {
					b.Fatalf("directories hold %d of %d users after 60 s", m, n)
				}
				b.ReportMetric(float64(n)/time.Since(t0).Seconds(), "claimed-everywhere/s")
			}
			time.Sleep(2 * time.Second)
			var r1 int64
			for _, nd := range nodes {
				r1 += rss(b, nd.pid)
			}
			b.ReportMetric(float64(n)/dt.Seconds(), "conn/s")
			b.ReportMetric(float64(r1-r0)/n, "rss-B/conn")
			for _, c := range conns {
				c.c.Close()
			}
		}
	}
	single := startBenchNodes(b, bin, 1)
	b.Run("single-node-no-cluster", func(b *testing.B) { run(b, single) })
	single[0].stop()
	nodes := startBenchNodes(b, bin, 3)
	b.Run("cluster-3-nodes", func(b *testing.B) { run(b, nodes) })
}

func buildEdgedB(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "edged")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v: %s", err, out)
	}
	return bin
}

// minDirectory is the smallest directory of the nodes (admin on 19800+benchPortOffset+i).
func minDirectory(nodes []benchNode) int {
	m := -1
	for i := range nodes {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/server/stats", 19800+benchPortOffset+i))
		if err != nil {
			return 0
		}
		var st struct {
			Cluster *struct {
				Directory int `json:"directory"`
			} `json:"cluster"`
		}
		json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if st.Cluster == nil {
			return 0
		}
		if m < 0 || st.Cluster.Directory < m {
			m = st.Cluster.Directory
		}
	}
	return m
}

// clusterCounts sums the nodes' cluster batches and records sent (their
// admin API is on 19800+benchPortOffset+i).
func clusterCounts(nodes []benchNode) (c [2]uint64) {
	for i := range nodes {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/server/stats", 19800+benchPortOffset+i))
		if err != nil {
			continue
		}
		var st struct {
			Cluster *struct {
				Batches uint64 `json:"batches_sent"`
				Records uint64 `json:"records_sent"`
			} `json:"cluster"`
		}
		json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if st.Cluster != nil {
			c[0] += st.Cluster.Batches
			c[1] += st.Cluster.Records
		}
	}
	return c
}
