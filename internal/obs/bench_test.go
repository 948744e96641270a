package obs

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/edgedhq/edged/internal/echo"
	"github.com/edgedhq/edged/netpoll"
)

// holdConns opens n loopback connections to addr from a child process (a
// re-exec of this test binary), so neither process holds more than n
// sockets; it returns once the engine counts them all.
func holdConns(b *testing.B, e *netpoll.Engine, n int, src string) {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("OBS_CHILD_DIAL=%s,%d,%s", e.Addr(), n, src))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		b.Fatalf("child dialer: %q %v", line, err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var got int64
		for _, l := range e.Stats() {
			got += l.Conns
		}
		if got >= int64(n) {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("engine holds %d of %d connections after 60 s", got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func cpuNow() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSample measures one activity sample (process, runtime, kernel
// TCP counters, loop stats, queue tracking) against a netpoll echo engine
// holding real loopback connections; cpu-ns/sample is the process CPU time
// (user + system, all threads) per sample, so at one sample a second
// cpu-ns/sample / 1e7 is the reporter's share of one core in percent.
func BenchmarkSample(b *testing.B) {
	cases := []struct {
		conns, queues int
	}{{0, 0}, {10000, 0}, {10000, 10000}}
	for _, bc := range cases {
		b.Run(fmt.Sprintf("conns=%d/queues=%d", bc.conns, bc.queues), func(b *testing.B) {
			e, err := netpoll.New(netpoll.Config{Addr: "127.0.0.1:0", Handler: echo.Handler{}, Logf: b.Logf})
			if err != nil {
				b.Fatal(err)
			}
			if err := e.Start(); err != nil {
				e.Close()
				b.Fatal(err)
			}
			defer e.Close()
			if bc.conns > 0 {
				holdConns(b, e, bc.conns, "127.0.0.2")
			}
			qs := make([]QueueInfo, bc.queues)
			for i := range qs {
				qs[i] = QueueInfo{Kind: "conn_backlog", Name: strconv.Itoa(i), Len: int64(i + 1)}
			}
			r, err := New(Options{LoopStats: e.Stats, Queues: func() []QueueInfo { return qs },
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				b.Fatal(err)
			}
			r.Sample()
			b.ReportAllocs()
			b.ResetTimer()
			c0 := cpuNow()
			for b.Loop() {
				r.Sample()
			}
			cpu := cpuNow() - c0
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/sample")
		})
	}
}
