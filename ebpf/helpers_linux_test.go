package steer

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgedhq/edged/internal/testenv"
	"golang.org/x/sys/unix"
)

var nsSeq atomic.Int32

// netns is a network namespace the test created, with one OS thread locked
// inside it that creates the test's sockets (a socket keeps the namespace
// it was created in, so other goroutines may use it afterwards).
type netns struct {
	name string
	work chan func()
}

func newNetns(t testing.TB) *netns {
	t.Helper()
	testenv.RequirePriv(t, "creating network namespaces")
	_, err := exec.LookPath("ip")
	testenv.Require(t, err == nil, "the ip tool (iproute2) is needed")
	ns := &netns{name: fmt.Sprintf("edged-ebpf-%d-%d", os.Getpid(), nsSeq.Add(1)), work: make(chan func())}
	mustRun(t, "ip", "netns", "add", ns.name)
	ready := make(chan error, 1)
	go ns.serve(ready)
	if err := <-ready; err != nil {
		_ = exec.Command("ip", "netns", "del", ns.name).Run()
		t.Fatalf("enter netns %s: %v", ns.name, err)
	}
	t.Cleanup(func() {
		close(ns.work)
		if out, err := exec.Command("ip", "netns", "del", ns.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns.name, err, out)
		}
	})
	ns.ip(t, "link", "set", "lo", "up")
	return ns
}

// serve runs on a thread locked into the namespace; that thread is never
// the main thread, and it dies with the goroutine (no UnlockOSThread), so
// no other goroutine ever runs in the wrong namespace.
func (ns *netns) serve(ready chan<- error) {
	runtime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		// This is the main thread: start another worker while we hold it,
		// so that worker gets a different thread, then give this one back.
		inner := make(chan error, 1)
		go ns.serve(inner)
		err := <-inner
		runtime.UnlockOSThread()
		ready <- err
		return
	}
	fd, err := unix.Open("/run/netns/"+ns.name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		ready <- err
		return
	}
	err = unix.Setns(fd, unix.CLONE_NEWNET)
	unix.Close(fd)
	ready <- err
	if err != nil {
		return
	}
	for f := range ns.work {
		f()
	}
}

// do runs f on the namespace's thread and waits for it.
func (ns *netns) do(f func()) {
	done := make(chan struct{})
	ns.work <- func() { defer close(done); f() }
	<-done
}

func (ns *netns) ip(t testing.TB, args ...string) {
	t.Helper()
	mustRun(t, "ip", append([]string{"-n", ns.name}, args...)...)
}

func mustRun(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, bytes.TrimSpace(out))
	}
}

// listenGroup makes n TCP listeners in one SO_REUSEPORT group on addr:port
// (port 0 picks one) inside ns and returns their fds and the port.
func listenGroup(t testing.TB, ns *netns, n int, addr [4]byte, port int) ([]int, int) {
	t.Helper()
	fds := make([]int, 0, n)
	var err error
	ns.do(func() {
		for range n {
			var fd int
			fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return
			}
			fds = append(fds, fd)
			if err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
				return
			}
			if err = unix.Bind(fd, &unix.SockaddrInet4{Addr: addr, Port: port}); err != nil {
				return
			}
			if err = unix.Listen(fd, 4096); err != nil {
				return
			}
			if port == 0 {
				sa, _ := unix.Getsockname(fd)
				port = sa.(*unix.SockaddrInet4).Port
			}
		}
	})
	t.Cleanup(func() {
		for _, fd := range fds {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	})
	if err != nil {
		t.Fatalf("listen group: %v", err)
	}
	return fds, port
}

// dialMany connects count times to addr:port from inside ns, closing each
// client socket as soon as it is connected (the server keeps its side).
// bindDev, if set, sends the SYNs through that interface (SO_BINDTODEVICE).
func dialMany(ns *netns, addr [4]byte, port, count int, bindDev string) error {
	var err error
	ns.do(func() {
		for i := range count {
			var fd int
			fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return
			}
			if bindDev != "" {
				if err = unix.BindToDevice(fd, bindDev); err != nil {
					unix.Close(fd)
					return
				}
			}
			// Blocking connect; the kernel completes the handshake
			// without waiting for accept.
			err = unix.Connect(fd, &unix.SockaddrInet4{Addr: addr, Port: port})
			unix.Close(fd)
			if err != nil {
				err = fmt.Errorf("connect %d of %d: %w", i+1, count, err)
				return
			}
		}
	})
	return err
}

// acceptors accept on every listener of a group, like the event loops do:
// each accepted socket is kept open (it is a live connection) and the live
// count goes to the Steering with SetLive.
type acceptors struct {
	fds      []int
	steer    *Steering
	onAccept func(loop, fd int) // optional, called on the acceptor goroutine

	mu       sync.Mutex // guards conns and reported
	conns    [][]int
	reported []int // per loop, the count last given to SetLive

	accepted []atomic.Int64 // per loop, ever
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startAcceptors(t testing.TB, fds []int, s *Steering, onAccept func(loop, fd int)) *acceptors {
	a := &acceptors{fds: fds, steer: s, onAccept: onAccept, conns: make([][]int, len(fds)),
		reported: make([]int, len(fds)), accepted: make([]atomic.Int64, len(fds)), stop: make(chan struct{})}
	for i := range fds {
		a.wg.Add(1)
		go a.run(i)
	}
	t.Cleanup(a.close)
	return a
}

func (a *acceptors) run(loop int) {
	defer a.wg.Done()
	pfd := []unix.PollFd{{Fd: int32(a.fds[loop]), Events: unix.POLLIN}}
	for {
		select {
		case <-a.stop:
			return
		default:
		}
		if _, err := unix.Poll(pfd, 20); err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		for {
			nfd, _, err := unix.Accept4(a.fds[loop], unix.SOCK_CLOEXEC)
			if err != nil {
				break // EAGAIN: back to poll
			}
			if a.onAccept != nil {
				a.onAccept(loop, nfd)
			}
			a.mu.Lock()
			a.conns[loop] = append(a.conns[loop], nfd)
			a.mu.Unlock()
			a.accepted[loop].Add(1)
		}
		// Like an event loop: report after the accept batch.
		if a.steer != nil {
			a.mu.Lock()
			a.steer.SetLive(loop, uint32(len(a.conns[loop])))
			a.reported[loop] = len(a.conns[loop])
			a.mu.Unlock()
		}
	}
}

// live returns the open accepted connections per loop.
func (a *acceptors) live() []int {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]int, len(a.conns))
	for i, c := range a.conns {
		out[i] = len(c)
	}
	return out
}

// closeLoop closes every connection of loop (churn) and reports it.
func (a *acceptors) closeLoop(loop int) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := len(a.conns[loop])
	for _, fd := range a.conns[loop] {
		unix.Close(fd)
	}
	a.conns[loop] = a.conns[loop][:0]
	if a.steer != nil {
		a.steer.SetLive(loop, 0)
	}
	a.reported[loop] = 0
	return n
}

// waitTotal waits (bounded) until total connections were accepted and
// each loop has reported its live count with SetLive (an acceptor reports
// after its accept batch, so the last batch's count lags the accepts).
func (a *acceptors) waitTotal(t testing.TB, total int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var sum int64
		for i := range a.accepted {
			sum += a.accepted[i].Load()
		}
		if sum == total && a.allReported() {
			return
		}
		if sum > total || time.Now().After(deadline) {
			t.Fatalf("accepted %d connections, want %d", sum, total)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// allReported reports whether every loop's live count went to SetLive.
func (a *acceptors) allReported() bool {
	if a.steer == nil {
		return true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, c := range a.conns {
		if a.reported[i] != len(c) {
			return false
		}
	}
	return true
}

func (a *acceptors) close() {
	select {
	case <-a.stop:
		return
	default:
	}
	close(a.stop)
	a.wg.Wait()
	for i := range a.conns {
		a.closeLoop(i)
	}
}

// imbalance returns max/min and the coefficient of variation of counts.
func imbalance(counts []int) (maxMin, cv float64) {
	lo, hi, sum := math.MaxInt, 0, 0
	for _, c := range counts {
		lo, hi, sum = min(lo, c), max(hi, c), sum+c
	}
	mean := float64(sum) / float64(len(counts))
	var ss float64
	for _, c := range counts {
		ss += (float64(c) - mean) * (float64(c) - mean)
	}
	if lo == 0 {
		maxMin = math.Inf(1)
	} else {
		maxMin = float64(hi) / float64(lo)
	}
	if mean > 0 {
		cv = math.Sqrt(ss/float64(len(counts))) / mean
	}
	return maxMin, cv
}

var loopback = [4]byte{127, 0, 0, 1}

// dialSpread is dialMany (loopback, no device) with the client thread
// moved to CPU i mod NumCPU for connection i, so that the SYNs are
// processed on every CPU in turn, as with RSS/RPS spreading a NIC's flows.
func dialSpread(ns *netns, port, count int) error {
	ncpu := runtime.NumCPU()
	var err error
	ns.do(func() {
		var all unix.CPUSet
		for c := range ncpu {
			all.Set(c)
		}
		defer unix.SchedSetaffinity(0, &all)
		for i := range count {
			var one unix.CPUSet
			one.Set(i % ncpu)
			if err = unix.SchedSetaffinity(0, &one); err != nil {
				return
			}
			if err = dialMany2(port, 1); err != nil {
				return
			}
		}
	})
	return err
}
