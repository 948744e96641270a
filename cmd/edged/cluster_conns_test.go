package main

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
)

// Bounds of BenchmarkClusterConnections100k: each phase (connect, claims
// written, messages received) must end within phaseTimeout; a client
// process holds at most maxWorkerConns connections (the host's limit is
// 20,000 open files per process).
const (
	phaseTimeout   = 5 * time.Minute
	maxWorkerConns = 15_000
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkClusterConnections100k: EDGED_BENCH_CONNS live connections
// (default 100,002), each a distinct user, over EDGED_BENCH_NODES nodes
// (default 7; user g on node g%nodes), the client side sharded over client
// processes (this test binary re-run as TestBenchWorkerConns, at most
// 15,000 connections each, process w binding source address 127.0.0.(2+w)).
// Once every node's directory holds every user, user g sends one QoS 1 direct message to
// user g+1 (on the next node: every connection receives one message sent
// from a client on another node; its delivered receipt goes back). RSS
// growth per connection of each node is measured at each of
// EDGED_BENCH_SETTLE (seconds after the last message arrived, default
// "15,130": past JetStream's block cache expiry of 10 s, and past the
// 2-minute duplicate window of the moves' message ids), against one plain
// node (no cluster flags) holding the same per-node count, each receiving
// one message from a client on the same node, measured first in the same
// run. Run with -benchtime 1x -timeout 30m.
func BenchmarkClusterConnections100k(b *testing.B) {
	bin := buildEdgedB(b)
	// Ports of its own (BenchmarkClusterPairs may run meanwhile).
	benchPortOffset = envInt("EDGED_BENCH_PORT_OFFSET", 500)
	defer func() { benchPortOffset = 0 }()
	nodesN := envInt("EDGED_BENCH_NODES", 7)
	total := envInt("EDGED_BENCH_CONNS", 100_002)
	var settle []time.Duration
	for _, f := range strings.Split(cmp.Or(os.Getenv("EDGED_BENCH_SETTLE"), "15,130"), ",") {
		sec, err := strconv.Atoi(f)
		if err != nil || sec < 0 || sec > 600 {
			b.Fatalf("EDGED_BENCH_SETTLE: %q", f)
		}
		settle = append(settle, time.Duration(sec)*time.Second)
	}
	perNode := total / nodesN
	if perNode > maxWorkerConns {
		b.Fatalf("%d connections per node: over the %d a process may hold here", perNode, maxWorkerConns)
	}
	single := startBenchNodes(b, bin, 1)
	b.Run("single-node-no-cluster", func(b *testing.B) {
		for b.Loop() {
			for k, r := range runConns(b, single, perNode, "s", settle) {
				b.ReportMetric(r[0], fmt.Sprintf("rss-B/conn@%ds", int(settle[k].Seconds())))
			}
		}
	})
	single[0].stop()
	nodes := startBenchNodes(b, bin, nodesN)
	b.Run(fmt.Sprintf("cluster-%d-nodes", nodesN), func(b *testing.B) {
		for b.Loop() {
			b.ReportMetric(float64(perNode*nodesN), "conns")
			for k, r := range runConns(b, nodes, perNode*nodesN, "c", settle) {
				b.Logf("per node RSS bytes per connection %v after: %.0f", settle[k], r)
				sort.Float64s(r)
				var sum float64
				for _, x := range r {
					sum += x
				}
				at := fmt.Sprintf("@%ds", int(settle[k].Seconds()))
				b.ReportMetric(r[0], "min-node-rss-B/conn"+at)
				b.ReportMetric(sum/float64(len(r)), "mean-node-rss-B/conn"+at)
				b.ReportMetric(r[len(r)-1], "max-node-rss-B/conn"+at)
			}
		}
	})
}

// benchWorker is a client process of runConns.
type benchWorker struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out chan string
}

// runConns connects total users over nodes (user g to nodes[g%len]), has
// each send one message to the next user, and returns each node's RSS
// growth per connection at each settle time.
func runConns(b *testing.B, nodes []benchNode, total int, tag string, settle []time.Duration) [][]float64 {
	var addrs []string
	for _, nd := range nodes {
		addrs = append(addrs, nd.addr)
	}
	time.Sleep(2 * time.Second) // the nodes settle after start
	r0 := make([]int64, len(nodes))
	for i, nd := range nodes {
		r0[i] = rss(b, nd.pid)
	}
	nw := (total + 14_000 - 1) / 14_000
	per := (total + nw - 1) / nw
	var ws []*benchWorker
	defer func() {
		for _, w := range ws {
			w.in.Close()
			w.cmd.Process.Kill()
			w.cmd.Wait()
		}
	}()
	t0 := time.Now()
	for w := range nw {
		first, count := w*per, min(per, total-w*per)
		cmd := exec.Command(os.Args[0], "-test.run=^TestBenchWorkerConns$")
		cmd.Env = append(os.Environ(), "EDGED_BENCH_WORKER=1", "EDGED_W_ADDRS="+strings.Join(addrs, ","),
			fmt.Sprintf("EDGED_W_SRC=127.0.0.%d", 2+w), fmt.Sprintf("EDGED_W_FIRST=%d", first),
			fmt.Sprintf("EDGED_W_COUNT=%d", count), fmt.Sprintf("EDGED_W_TOTAL=%d", total), "EDGED_W_TAG="+tag)
		in, _ := cmd.StdinPipe()
		outp, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		bw := &benchWorker{cmd: cmd, in: in, out: make(chan string, 16)}
		ws = append(ws, bw)
		go func() {
			sc := bufio.NewScanner(outp)
			for sc.Scan() {
				if l, ok := strings.CutPrefix(sc.Text(), "WORKER "); ok {
					bw.out <- l
				}
			}
			close(bw.out)
		}()
	}
	expect := func(what string) (lines []string) {
		deadline := time.After(phaseTimeout)
		for i, w := range ws {
			select {
			case l, ok := <-w.out:
				if !ok || !strings.HasPrefix(l, what) {
					b.Fatalf("client process %d: %q, want %s", i, l, what)
				}
				lines = append(lines, l)
			case <-deadline:
				b.Fatalf("client process %d: no %s within %v", i, what, phaseTimeout)
			}
		}
		return lines
	}
	expect("connected")
	b.ReportMetric(float64(total)/time.Since(t0).Seconds(), "conn/s")
	if len(nodes) > 1 {
		t1 := time.Now()
		deadline := time.Now().Add(phaseTimeout)
		for minDirectory(nodes) < total { // every node's directory holds every user
			if time.Now().After(deadline) {
				b.Fatalf("directories hold %d of %d users after %v", minDirectory(nodes), total, phaseTimeout)
			}
			time.Sleep(200 * time.Millisecond)
		}
		b.ReportMetric(float64(total)/time.Since(t0).Seconds(), "claimed-everywhere/s")
		b.Logf("every directory complete %v after the last connect", time.Since(t1).Round(time.Millisecond))
	}
	t2 := time.Now()
	for _, w := range ws {
		io.WriteString(w.in, "send\n")
	}
	for i, l := range expect("received") {
		var got, want int
		if fmt.Sscanf(l, "received %d of %d", &got, &want); got != want {
			b.Fatalf("client process %d: %s messages", i, l)
		}
	}
	b.ReportMetric(float64(total)/time.Since(t2).Seconds(), "delivered/s")
	t3 := time.Now()
	var out [][]float64
	for _, d := range settle {
		time.Sleep(time.Until(t3.Add(d)))
		o := make([]float64, len(nodes))
		for i, nd := range nodes {
			n := total / len(nodes)
			if i < total%len(nodes) {
				n++
			}
			o[i] = float64(rss(b, nd.pid)-r0[i]) / float64(n)
		}
		out = append(out, o)
	}
	if dir := os.Getenv("EDGED_BENCH_HEAP"); dir != "" {
		for i := range nodes {
			for _, q := range []string{"gc=1", "gc=1&debug=1"} { // the profile, then as text with the MemStats
				exec.Command("curl", "-s", "-o", filepath.Join(dir, fmt.Sprintf("%s%d-n%d.heap%s", tag, len(nodes), i, strings.Repeat(".txt", len(q)/8))),
					fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?%s", 19800+benchPortOffset+i, q)).Run()
			}
		}
	}
	return out
}

// TestBenchWorkerConns is a client process of
// BenchmarkClusterConnections100k (it skips otherwise): it connects
// EDGED_W_COUNT users from EDGED_W_SRC, user g (g from EDGED_W_FIRST) to
// node g%nodes, prints "WORKER connected", on "send" from stdin publishes
// one QoS 1 message from each user g to user (g+1)%EDGED_W_TOTAL, and
// prints "WORKER received" once each of its users got one message.
func TestBenchWorkerConns(t *testing.T) {
	if os.Getenv("EDGED_BENCH_WORKER") == "" {
		t.Skip("not a test: the client process that BenchmarkClusterConnections100k starts (with EDGED_BENCH_WORKER=1)")
	}
	addrs := strings.Split(os.Getenv("EDGED_W_ADDRS"), ",")
	first, count, total := envInt("EDGED_W_FIRST", 0), envInt("EDGED_W_COUNT", 0), envInt("EDGED_W_TOTAL", 0)
	tag := os.Getenv("EDGED_W_TAG")
	src, err := net.ResolveTCPAddr("tcp", os.Getenv("EDGED_W_SRC")+":0")
	if err != nil {
		t.Fatal(err)
	}
	d := net.Dialer{LocalAddr: src, Timeout: 30 * time.Second}
	conns := make([]net.Conn, count)
	var got atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for k := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := k; i < count; i += 16 {
				g := first + i
				c, err := d.Dial("tcp", addrs[g%len(addrs)])
				if err == nil {
					c.SetDeadline(time.Now().Add(60 * time.Second))
					_, err = c.Write(mqtt.AppendConnect(nil, &mqtt.Connect{CleanSession: true, KeepAlive: 600, ClientID: []byte(tag + strconv.Itoa(g))}))
				}
				if err == nil {
					ack := make([]byte, 4)
					if _, err = io.ReadFull(c, ack); err == nil && ack[3] != 0 {
						err = fmt.Errorf("connack %x", ack)
					}
				}
				if err != nil {
					errs <- fmt.Errorf("user %d: %w", g, err)
					return
				}
				c.SetDeadline(time.Time{})
				conns[i] = c
				go workerRead(c, &got)
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	fmt.Println("WORKER connected")
	sc := bufio.NewScanner(os.Stdin)
	if !sc.Scan() || sc.Text() != "send" {
		return
	}
	var pkt []byte
	for i, c := range conns {
		g := first + i
		pkt = mqtt.AppendPublish(pkt[:0], fmt.Sprintf("u/%s%d/x%d", tag, (g+1)%total, g), []byte("one message"), 1, false, false, 1)
		if _, err := c.Write(pkt); err != nil {
			t.Fatalf("user %d: publish: %v", g, err)
		}
	}
	deadline := time.Now().Add(phaseTimeout)
	for got.Load() < int64(count) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Printf("WORKER received %d of %d\n", got.Load(), count)
	sc.Scan() // until the parent closes stdin
	for _, c := range conns {
		c.Close()
	}
}

// workerRead acknowledges what c receives and counts the direct messages
// (u/<me>/m/...), not the receipts.
func workerRead(c net.Conn, got *atomic.Int64) {
	buf := make([]byte, 0, 1024)
	tmp := make([]byte, 1024)
	var p mqtt.Packet
	for {
		k, err := c.Read(tmp)
		if err != nil {
			return
		}
		buf = append(buf, tmp[:k]...)
		off := 0
		var out []byte
		for {
			n, err := mqtt.Decode(buf[off:], 0, &p)
			if err != nil {
				return
			}
			if n == 0 {
				break
			}
			off += n
			if p.Type == mqtt.TypePublish {
				if strings.Contains(string(p.Topic), "/m/") {
					got.Add(1)
				}
				if p.QoS == 1 {
					out = mqtt.AppendPuback(out, p.PacketID)
				}
			}
		}
		buf = append(buf[:0], buf[off:]...)
		if len(out) > 0 {
			c.Write(out)
		}
	}
}
