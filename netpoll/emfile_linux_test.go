package netpoll

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestAcceptPauseLogIsRateLimited runs a real engine out of descriptors
// (RLIMIT_NOFILE lowered under it, clients waiting in the backlog): each
// loop pauses accepting for 100 ms and retries, and the "pausing accepts"
// line appears at most once per interval engine-wide, the next one with the
// count of pauses it did not log. When descriptors are back every client is
// accepted.
func TestAcceptPauseLogIsRateLimited(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	e, err := New(Config{Addr: "127.0.0.1:0", Loops: 2, Handler: Echo{}, Logf: func(f string, a ...any) {
		mu.Lock()
		lines = append(lines, strings.TrimSpace(fmt.Sprintf(f, a...)))
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	const every = 400 * time.Millisecond
	e.pauseLog.every = every // before Start: no loop reads it yet
	if err := e.Start(); err != nil {
		e.Close()
		t.Fatal(err)
	}
	defer e.Close()
	e.PauseAccepts(true)
	const clients = 30
	for range clients {
		c, err := net.DialTimeout("tcp", e.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	lim := old
	lim.Cur = uint64(lowestFreeFD(t)) // the kernel hands out the lowest free number: none is allowed
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
				t.Errorf("restore RLIMIT_NOFILE: %v", err)
			}
		}
	}
	defer restore()
	start := time.Now()
	e.PauseAccepts(false)
	acceptErrs := func() (n int64) {
		for _, s := range e.Stats() {
			n += s.AcceptErrs
		}
		return n
	}
	// Run out of descriptors for at least three log intervals and a dozen
	// failed accepts (a loaded machine runs the loops late), at most 20 s.
	for (acceptErrs() < 12 || time.Since(start) < 3*every) && time.Since(start) < 20*time.Second {
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	got := append([]string(nil), lines...)
	mu.Unlock()
	elapsed := time.Since(start)
	errs := acceptErrs()
	restore()
	var pauses []string
	suppressed := 0
	for _, l := range got {
		if !strings.Contains(l, "pausing accepts") {
			continue
		}
		pauses = append(pauses, l)
		i := strings.Index(l, "for 100ms (")
		if i < 0 {
			t.Fatalf("pause line without a count: %q", l)
		}
		n, err := strconv.Atoi(strings.Fields(l[i+len("for 100ms ("):])[0])
		if err != nil {
			t.Fatalf("pause line count: %q: %v", l, err)
		}
		suppressed += n
	}
	// Two loops retrying every 100 ms fail about 20 times a second; one
	// line per interval engine-wide is at most elapsed/every + 1.
	if errs < 12 {
		t.Fatalf("only %d accept errors in %v: the descriptor limit did not bite (lines %q)", errs, elapsed, got)
	}
	if want := int(elapsed/every) + 1; len(pauses) == 0 || len(pauses) > want {
		t.Fatalf("%d pause lines for %d accept errors in %v, want 1..%d:\n%s", len(pauses), errs, elapsed, want, strings.Join(pauses, "\n"))
	}
	if suppressed == 0 || int64(len(pauses)+suppressed) > errs {
		t.Fatalf("lines report %d suppressed pauses for %d accept errors:\n%s", suppressed, errs, strings.Join(pauses, "\n"))
	}
	// With descriptors back, every waiting client gets in.
	deadline := time.Now().Add(10 * time.Second)
	for totalConns(e) != clients && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := totalConns(e); n != clients {
		t.Fatalf("%d of %d clients accepted after the limit was restored", n, clients)
	}
}

// lowestFreeFD returns the number the next new descriptor would get.
func lowestFreeFD(t *testing.T) int {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	fd := int(f.Fd())
	f.Close()
	return fd
}
