package netpoll

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgedhq/edged/internal/slab"
	"github.com/edgedhq/edged/internal/wheel"
)

// The benchmarks here run the server and its clients in separate processes
// (re-executions of the test binary) so that each stays under this machine's
// 20,000 open-file limit and so that the server's memory, allocations and CPU
// are measured alone. Child roles are chosen by NETPOLL_BENCH_ROLE.

func init() {
	switch os.Getenv("NETPOLL_BENCH_ROLE") {
	case "":
		return
	case "server-netpoll", "server-stdlib":
		os.Exit(benchServer(os.Getenv("NETPOLL_BENCH_ROLE")))
	case "client-hold":
		os.Exit(benchClientHold())
	case "client-echo":
		os.Exit(benchClientEcho())
	}
}

// stdlibEcho is the baseline: one goroutine and one 4 KiB buffer per
// connection, the idiomatic Go server.
func stdlibEcho(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 4096)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				if _, err := c.Write(buf[:n]); err != nil {
					return
				}
			}
		}()
	}
}

func vmRSS() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

type serverStats struct {
	RSS, HeapInuse, Mallocs, Goroutines, CPUNs int64
}

func benchServer(role string) int {
	var addr string
	if role == "server-netpoll" {
		e, err := New(Config{Addr: "127.0.0.1:0", Handler: Echo{}, Loops: runtime.GOMAXPROCS(0)})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		e.Start()
		addr = e.Addr().String()
	} else {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		go stdlibEcho(l)
		addr = l.Addr().String()
	}
	fmt.Println("ADDR", addr)
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if sc.Text() != "stats" {
			continue
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		st := serverStats{
			RSS: vmRSS(), HeapInuse: int64(ms.HeapInuse), Mallocs: int64(ms.Mallocs),
			Goroutines: int64(runtime.NumGoroutine()),
			CPUNs:      ru.Utime.Nano() + ru.Stime.Nano(),
		}
		b, _ := json.Marshal(st)
		fmt.Println("STATS", string(b))
	}
	return 0
}

// benchClientHold opens NETPOLL_BENCH_N connections from NETPOLL_BENCH_SRC,
// echoes 16 bytes on each (so every connection has carried traffic), prints
// READY and holds them until its stdin closes.
func benchClientHold() int {
	n, _ := strconv.Atoi(os.Getenv("NETPOLL_BENCH_N"))
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(os.Getenv("NETPOLL_BENCH_SRC"))}, Timeout: 30 * time.Second}
	conns := make([]net.Conn, 0, n)
	msg := []byte("0123456789abcdef")
	buf := make([]byte, 16)
	for i := 0; i < n; i++ {
		c, err := d.Dial("tcp", os.Getenv("NETPOLL_BENCH_ADDR"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "dial:", err)
			return 1
		}
		if _, err := c.Write(msg); err != nil {
			return 1
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			fmt.Fprintln(os.Stderr, "echo:", err)
			return 1
		}
		conns = append(conns, c)
	}
	fmt.Println("READY", len(conns))
	io.Copy(io.Discard, os.Stdin)
	return 0
}

type echoResult struct {
	Msgs           int64
	P50, P99, P999 time.Duration
	Seconds        float64
}

// benchClientEcho runs NETPOLL_BENCH_N closed-loop echo connections for
// NETPOLL_BENCH_DUR with NETPOLL_BENCH_SIZE-byte messages.
func benchClientEcho() int {
	n, _ := strconv.Atoi(os.Getenv("NETPOLL_BENCH_N"))
	size, _ := strconv.Atoi(os.Getenv("NETPOLL_BENCH_SIZE"))
	dur, _ := time.ParseDuration(os.Getenv("NETPOLL_BENCH_DUR"))
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		all []time.Duration
	)
	start := time.Now()
	deadline := start.Add(dur)
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", os.Getenv("NETPOLL_BENCH_ADDR"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "dial:", err)
			return 1
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			msg, buf := make([]byte, size), make([]byte, size)
			lat := make([]time.Duration, 0, 4096)
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if _, err := c.Write(msg); err != nil {
					return
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.Sort(all)
	pct := func(p float64) time.Duration {
		if len(all) == 0 {
			return 0
		}
		return all[min(len(all)-1, int(float64(len(all))*p))]
	}
	r := echoResult{Msgs: int64(len(all)), P50: pct(0.50), P99: pct(0.99), P999: pct(0.999), Seconds: time.Since(start).Seconds()}
	b, _ := json.Marshal(r)
	fmt.Println("RESULT", string(b))
	return 0
}

// child is a running role process.
type child struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func startChild(b *testing.B, role string, env ...string) *child {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), append([]string{"NETPOLL_BENCH_ROLE=" + role}, env...)...)
	cmd.Stderr = os.Stderr
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	c := &child{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	b.Cleanup(func() { c.in.Close(); c.cmd.Process.Kill(); c.cmd.Wait() })
	return c
}

// expect reads lines until one starts with prefix and returns the rest.
func (c *child) expect(b *testing.B, prefix string) string {
	b.Helper()
	for c.out.Scan() {
		if rest, ok := strings.CutPrefix(c.out.Text(), prefix+" "); ok {
			return rest
		}
	}
	b.Fatalf("child exited before printing %s", prefix)
	return ""
}

func (c *child) stats(b *testing.B) serverStats {
	fmt.Fprintln(c.in, "stats")
	var st serverStats
	if err := json.Unmarshal([]byte(c.expect(b, "STATS")), &st); err != nil {
		b.Fatal(err)
	}
	return st
}

// BenchmarkIdleDensity holds 15,000 connections (each has carried one echo)
// on the netpoll echo server and on a goroutine-per-connection stdlib echo
// server, and reports the server's RSS and Go heap per connection. The client
// side is two processes of 7,500 connections from 127.0.0.2 and 127.0.0.3.
func BenchmarkIdleDensity(b *testing.B) {
	const perClient, clients = 7500, 2
	for _, kind := range []string{"netpoll", "stdlib"} {
		b.Run(kind, func(b *testing.B) {
			for b.Loop() {
				srv := startChild(b, "server-"+kind)
				addr := srv.expect(b, "ADDR")
				before := srv.stats(b)
				var cl []*child
				for i := 0; i < clients; i++ {
					c := startChild(b, "client-hold", "NETPOLL_BENCH_ADDR="+addr,
						"NETPOLL_BENCH_N="+strconv.Itoa(perClient), fmt.Sprintf("NETPOLL_BENCH_SRC=127.0.0.%d", i+2))
					cl = append(cl, c)
				}
				for _, c := range cl {
					c.expect(b, "READY")
				}
				time.Sleep(500 * time.Millisecond) // let the server settle
				after := srv.stats(b)
				n := float64(perClient * clients)
				b.ReportMetric(float64(after.RSS-before.RSS)/n, "rss-B/conn")
				b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/n, "heap-B/conn")
				b.ReportMetric(float64(after.Goroutines-before.Goroutines)/n, "goroutines/conn")
				for _, c := range cl {
					c.in.Close()
					c.cmd.Wait()
				}
			}
		})
	}
}

// BenchmarkEcho runs closed-loop 64-byte echo over 100 and 1,000 connections
// against both servers in the same run, client in a child process: server
// messages per second, latency percentiles, and the server's allocations
// and CPU per message.
func BenchmarkEcho(b *testing.B) {
	dur := "3s"
	for _, conns := range []int{100, 1000} {
		for _, kind := range []string{"netpoll", "stdlib"} {
			b.Run(fmt.Sprintf("%s/conns=%d", kind, conns), func(b *testing.B) {
				for b.Loop() {
					srv := startChild(b, "server-"+kind)
					addr := srv.expect(b, "ADDR")
					warm := startChild(b, "client-echo", "NETPOLL_BENCH_ADDR="+addr, "NETPOLL_BENCH_N="+strconv.Itoa(conns),
						"NETPOLL_BENCH_SIZE=64", "NETPOLL_BENCH_DUR=500ms")
					warm.expect(b, "RESULT")
					before := srv.stats(b)
					cl := startChild(b, "client-echo", "NETPOLL_BENCH_ADDR="+addr, "NETPOLL_BENCH_N="+strconv.Itoa(conns),
						"NETPOLL_BENCH_SIZE=64", "NETPOLL_BENCH_DUR="+dur)
					var r echoResult
					if err := json.Unmarshal([]byte(cl.expect(b, "RESULT")), &r); err != nil {
						b.Fatal(err)
					}
					after := srv.stats(b)
					msgs := float64(r.Msgs)
					b.ReportMetric(msgs/r.Seconds, "msgs/s")
					b.ReportMetric(float64(r.P50.Microseconds()), "p50-us")
					b.ReportMetric(float64(r.P99.Microseconds()), "p99-us")
					b.ReportMetric(float64(r.P999.Microseconds()), "p999-us")
					// Each stats call itself allocates a little; setup conns too.
					b.ReportMetric(float64(after.Mallocs-before.Mallocs)/msgs, "srv-allocs/msg")
					b.ReportMetric(float64(after.CPUNs-before.CPUNs)/msgs, "srv-cpu-ns/msg")
				}
			})
		}
	}
}

// gcConn stands in for a connection in the pointer-ful baseline: what a
// conventional design keeps per connection (a heap object with a buffer and
// a pointer to its server). buf and active are never touched: they give the
// object a realistic size and pointer layout for the collector to scan.
//
//lint:ignore U1000 the unread fields are the point of the baseline
type gcConn struct {
	srv    *gcConn
	buf    []byte
	fd     int
	active time.Time
}

// BenchmarkGC fills a slab and a timer wheel with 100k, 1M and 2M fake
// connections (no sockets) and times runtime.GC(), against a baseline of the
// same count of heap objects with pointers. With the slab, GC work does not
// grow with the number of connections.
func BenchmarkGC(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000, 2_000_000} {
		b.Run(fmt.Sprintf("slab/conns=%d", n), func(b *testing.B) {
			runtime.GC()
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			s := slab.New[Conn]()
			w := wheel.New(0)
			for i := 0; i < n; i++ {
				slot, _, c, _ := s.Alloc()
				c.fd = int32(i)
				w.Add(slot, int64(1000+i%60000))
			}
			runtime.GC()
			runtime.ReadMemStats(&m1)
			for b.Loop() {
				runtime.GC()
			}
			b.ReportMetric(float64(m1.HeapAlloc-m0.HeapAlloc)/float64(n), "heap-B/conn")
			runtime.KeepAlive(s)
			runtime.KeepAlive(w)
		})
		b.Run(fmt.Sprintf("pointers/conns=%d", n), func(b *testing.B) {
			runtime.GC()
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			conns := make([]*gcConn, n)
			for i := range conns {
				conns[i] = &gcConn{fd: i}
				if i > 0 {
					conns[i].srv = conns[i-1]
				}
			}
			runtime.GC()
			runtime.ReadMemStats(&m1)
			for b.Loop() {
				runtime.GC()
			}
			b.ReportMetric(float64(m1.HeapAlloc-m0.HeapAlloc)/float64(n), "heap-B/conn")
			runtime.KeepAlive(conns)
		})
	}
}

// BenchmarkLoopMessagePath measures the engine's per-message work without
// sockets: Post from another goroutine into a loop's queue and its drain.
func BenchmarkMPSC(b *testing.B) {
	b.ReportAllocs()
	q := newMPSC(mpscSize)
	var it item
	for b.Loop() {
		q.push(item{to: 1, msg: Message{Arg: 1}})
		q.pop(&it)
	}
}
