package steer

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/edgedhq/edged/internal/testenv"
	"golang.org/x/sys/unix"
)

// attachT attaches and registers Close (which must succeed) for cleanup.
func attachT(t *testing.T, cfg Config) *Steering {
	t.Helper()
	s, err := Attach(cfg)
	if err != nil {
		t.Fatalf("Attach(%v): %v", cfg.Policy, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestAttachRejectsBadListeners(t *testing.T) {
	ns := newNetns(t)
	group, _ := listenGroup(t, ns, 2, loopback, 0)
	other, _ := listenGroup(t, ns, 1, loopback, 0)
	var plain, unlistened, udp int
	ns.do(func() {
		plain, _ = unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0) // never listens
		unlistened, _ = unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		_ = unix.SetsockoptInt(unlistened, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		udp, _ = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	})
	noReuse, _ := listenGroup(t, ns, 1, loopback, 0)
	_ = unix.SetsockoptInt(noReuse[0], unix.SOL_SOCKET, unix.SO_REUSEPORT, 0)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close(); unix.Close(plain); unix.Close(unlistened); unix.Close(udp) })

	for _, tc := range []struct {
		name      string
		listeners []int
		want      string
	}{
		{"pipe", []int{int(r.Fd())}, "not a socket"},
		{"udp", []int{udp}, "not a TCP socket"},
		{"not listening", []int{plain}, "not listening"},
		{"no reuseport", []int{noReuse[0]}, "SO_REUSEPORT is not set"},
		{"two groups", []int{group[0], other[0]}, "bound to"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Attach(Config{Policy: PolicyHash, Listeners: tc.listeners})
			if !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Attach: %v, want ErrBadConfig mentioning %q", err, tc.want)
			}
		})
	}
}

// TestSpread: least spreads 10,000 connections with max/min per loop within
// 10% (it counts each steer, so the spread does not depend on chance); hash
// is a random spread, held to the max/min that a uniform random placement
// exceeds once in a billion runs (randomSpreadBound, about 1.25); off (the
// kernel's hash) is run as the baseline.
func TestSpread(t *testing.T) {
	const loops, conns = 4, 10000
	for _, p := range []Policy{PolicyHash, PolicyLeast, PolicyOff} {
		t.Run(p.String(), func(t *testing.T) {
			ns := newNetns(t)
			fds, port := listenGroup(t, ns, loops, loopback, 0)
			s := attachT(t, Config{Policy: p, Listeners: fds})
			wantMode := ModeBPF
			if p == PolicyOff {
				wantMode = ModeOff
			}
			if s.Mode() != wantMode {
				t.Fatalf("Mode = %v, want %v (reason %v)", s.Mode(), wantMode, s.FallbackReason())
			}
			a := startAcceptors(t, fds, s, nil)
			if err := dialMany(ns, loopback, port, conns, ""); err != nil {
				t.Fatal(err)
			}
			a.waitTotal(t, conns)
			live := a.live()
			ratio, cv := imbalance(live)
			t.Logf("%s: per loop %v, max/min %.3f, cv %.3f", p, live, ratio, cv)
			bound := 1.10
			if p == PolicyHash {
				bound = randomSpreadBound(conns, loops, spreadFailP)
			}
			if p != PolicyOff && ratio > bound {
				t.Errorf("max/min = %.3f over %v, want <= %.3f", ratio, live, bound)
			}
			st, err := s.Stats()
			if err != nil {
				t.Fatal(err)
			}
			for i, ls := range st {
				if ls.Live != uint32(live[i]) {
					t.Errorf("loop %d: Stats live %d, acceptors hold %d", i, ls.Live, live[i])
				}
				// Each accepted connection was steered to this loop by the
				// program at least once; a SYN retransmitted when the
				// accept queue overflowed (seen on a loaded machine) is
				// steered, and counted, again.
				if p != PolicyOff && ls.Accepts < uint64(live[i]) {
					t.Errorf("loop %d: program steered %d, loop accepted %d", i, ls.Accepts, live[i])
				}
			}
		})
	}
}

// TestLeastRebalances closes one loop's connections (churn) and checks
// that least sends the reconnecting clients to that loop, where hash
// would spread them over all loops.
func TestLeastRebalances(t *testing.T) {
	const loops, perLoop = 4, 300
	ns := newNetns(t)
	fds, port := listenGroup(t, ns, loops, loopback, 0)
	s := attachT(t, Config{Policy: PolicyLeast, Listeners: fds})
	a := startAcceptors(t, fds, s, nil)
	if err := dialMany(ns, loopback, port, loops*perLoop, ""); err != nil {
		t.Fatal(err)
	}
	a.waitTotal(t, loops*perLoop)
	before := a.live()
	closed := a.closeLoop(2)
	if err := dialMany(ns, loopback, port, closed, ""); err != nil {
		t.Fatal(err)
	}
	a.waitTotal(t, int64(loops*perLoop+closed))
	after := a.live()
	ratio, _ := imbalance(after)
	t.Logf("before churn %v; closed %d on loop 2; after reconnects %v", before, closed, after)
	if ratio > 1.10 {
		t.Errorf("after churn max/min = %.3f over %v, want <= 1.10", ratio, after)
	}
	if got := after[2]; got < closed*9/10 {
		t.Errorf("loop 2 got %d of %d reconnects, want nearly all", got, closed)
	}
}

// TestCPU pins the client thread to each CPU in turn; over loopback the
// SYN is processed on that CPU, so every connection must land on the loop
// pinned to the CPU the accepted socket reports in SO_INCOMING_CPU.
func TestCPU(t *testing.T) {
	ncpu := runtime.NumCPU()
	testenv.Require(t, ncpu >= 2, "the cpu policy test needs 2 CPUs")
	ns := newNetns(t)
	fds, port := listenGroup(t, ns, ncpu, loopback, 0)
	cpus := make([]int, ncpu)
	for i := range cpus {
		cpus[i] = ncpu - 1 - i // reversed, so loop index != CPU number
	}
	s := attachT(t, Config{Policy: PolicyCPU, Listeners: fds, LoopCPUs: cpus})
	type landing struct{ loop, cpu int }
	landed := make(chan landing, 4096)
	a := startAcceptors(t, fds, s, func(loop, fd int) {
		cpu, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_INCOMING_CPU)
		if err != nil {
			cpu = -1
		}
		landed <- landing{loop, cpu}
	})
	const perCPU = 200
	for cpu := range ncpu {
		var set unix.CPUSet
		set.Set(cpu)
		var err error
		ns.do(func() {
			if err = unix.SchedSetaffinity(0, &set); err != nil {
				return
			}
			err = dialMany2(port, perCPU)
			var all unix.CPUSet
			for c := range ncpu {
				all.Set(c)
			}
			_ = unix.SchedSetaffinity(0, &all)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	a.waitTotal(t, int64(ncpu*perCPU))
	perLoop := make([]int, ncpu)
	for range ncpu * perCPU {
		l := <-landed
		perLoop[l.loop]++
		if l.cpu < 0 || l.cpu >= ncpu || cpus[l.loop] != l.cpu {
			t.Errorf("connection accepted on loop %d (CPU %d) arrived on CPU %d", l.loop, cpus[l.loop], l.cpu)
		}
	}
	t.Logf("per loop %v (loop i on CPU %v)", perLoop, cpus)
	for loop, n := range perLoop {
		if n == 0 {
			t.Errorf("loop %d got no connection: the test did not exercise CPU %d", loop, cpus[loop])
		}
	}
}

// dialMany2 is dialMany's body for a caller already on the netns thread.
func dialMany2(port, count int) error {
	for range count {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		err = unix.Connect(fd, &unix.SockaddrInet4{Addr: loopback, Port: port})
		unix.Close(fd)
		if err != nil {
			return err
		}
	}
	return nil
}

// TestMissingEntry: a closed listener leaves the socket array; its SYNs are
// counted as misses and go to the kernel's pick among the others.
func TestMissingEntry(t *testing.T) {
	ns := newNetns(t)
	fds, port := listenGroup(t, ns, 3, loopback, 0)
	s := attachT(t, Config{Policy: PolicyHash, Listeners: fds})
	unix.Close(fds[1])
	fds[1] = -1 // closed: listenGroup's cleanup skips it
	a := startAcceptors(t, []int{fds[0], fds[2]}, nil, nil)
	const n = 300
	if err := dialMany(ns, loopback, port, n, ""); err != nil {
		t.Fatal(err)
	}
	a.waitTotal(t, n)
	misses, err := s.Misses()
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if misses == 0 || st[1].Accepts != 0 || st[0].Accepts+st[2].Accepts+misses != n {
		t.Errorf("misses %d, stats %+v: want misses > 0, none on loop 1, all %d counted", misses, st, n)
	}
}

func TestFallbackForced(t *testing.T) {
	ns := newNetns(t)
	fds, port := listenGroup(t, ns, 2, loopback, 0)
	var logBuf bytes.Buffer
	s := attachT(t, Config{Policy: PolicyLeast, Listeners: fds, ForceFallback: true,
		Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})
	if s.Mode() != ModeFallback || !errors.Is(s.FallbackReason(), ErrNotPermitted) {
		t.Fatalf("Mode %v reason %v, want fallback for ErrNotPermitted", s.Mode(), s.FallbackReason())
	}
	if lines := strings.Count(logBuf.String(), "\n"); lines != 1 || !strings.Contains(logBuf.String(), "fallback") {
		t.Fatalf("log = %q, want one line about the fallback", logBuf.String())
	}
	// The kernel still spreads connections over the group, and the live
	// counts are kept for Stats.
	a := startAcceptors(t, fds, s, nil)
	if err := dialMany(ns, loopback, port, 200, ""); err != nil {
		t.Fatal(err)
	}
	a.waitTotal(t, 200)
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if int(st[0].Live)+int(st[1].Live) != 200 || st[0].Accepts != 0 {
		t.Fatalf("stats %+v: want 200 live, no program counts", st)
	}
}

// TestFallbackWithoutPermission runs Attach in a child process as nobody,
// where the kernel refuses BPF for real.
func TestFallbackWithoutPermission(t *testing.T) {
	if os.Getenv("EDGED_EBPF_CHILD") == "noperm" {
		childNoPerm()
		return
	}
	testenv.RequirePriv(t, "switching to an unprivileged user")
	dir, err := os.MkdirTemp("", "edged-ebpf-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "ebpf.test")
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestFallbackWithoutPermission$", "-test.count=1")
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), "EDGED_EBPF_CHILD=noperm")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "child-mode=fallback") || strings.Count(string(out), "ebpf steering fallback") != 1 {
		t.Fatalf("child output lacks fallback mode or its one log line:\n%s", out)
	}
}

func childNoPerm() {
	fds := make([]int, 2)
	port := 0
	for i := range fds {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err == nil {
			err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}
		if err == nil {
			err = unix.Bind(fd, &unix.SockaddrInet4{Addr: loopback, Port: port})
		}
		if err == nil {
			err = unix.Listen(fd, 16)
		}
		if err != nil {
			println("child-error", err.Error())
			os.Exit(2)
		}
		sa, _ := unix.Getsockname(fd)
		port = sa.(*unix.SockaddrInet4).Port
		fds[i] = fd
	}
	s, err := Attach(Config{Policy: PolicyHash, Listeners: fds, Logger: slog.New(slog.NewTextHandler(os.Stdout, nil))})
	if err != nil {
		println("child-error", err.Error())
		os.Exit(2)
	}
	println("child-mode=" + s.Mode().String())
	_ = s.Close()
	os.Exit(0)
}

func TestSetLiveAfterClose(t *testing.T) {
	ns := newNetns(t)
	fds, _ := listenGroup(t, ns, 2, loopback, 0)
	s, err := Attach(Config{Policy: PolicyLeast, Listeners: fds})
	if err != nil {
		t.Fatal(err)
	}
	s.SetLive(1, 7)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s.SetLive(1, 8) // must not fault: the mapping outlives Close
	if _, err := s.Stats(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Stats after Close: %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("SetLive(2) on a 2-loop group did not panic")
		}
	}()
	s.SetLive(2, 1)
}
