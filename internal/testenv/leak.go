package testenv

import (
	"fmt"
	"net"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// LeakExit is the exit code LeakCheckMain returns when the tests passed but
// leaked a file descriptor or a goroutine.
const LeakExit = 99

// LeakCheckMain runs m's tests and, if they passed, checks that they left
// no more open file descriptors than there were before (where
// /proc/self/fd exists; elsewhere that check is skipped) and no goroutines
// behind. It prints what leaked to stderr, prefixed by name (e.g. "edge
// tests leaked ..."), and returns the code for os.Exit: m.Run's, or
// LeakExit on a leak. Use it as
//
//	func TestMain(m *testing.M) { os.Exit(testenv.LeakCheckMain(m, "edge")) }
func LeakCheckMain(m *testing.M, name string) int {
	// Start the runtime netpoller (its epoll fd and eventfd live for the
	// whole process) before taking the baseline, so they do not count.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	if l, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		l.Close()
	}
	before, haveFDs := countFDs()
	code := m.Run()
	if code != 0 {
		return code
	}
	if after, _ := countFDs(); haveFDs && after > before {
		fmt.Fprintf(os.Stderr, "%s tests leaked %d file descriptors (%d open before the tests, %d after)\n", name, after-before, before, after)
		code = LeakExit
	}
	if err := goleak.Find(); err != nil {
		fmt.Fprintf(os.Stderr, "%s tests leaked goroutines: %v\n", name, err)
		code = LeakExit
	}
	return code
}

// countFDs is OpenFDs for TestMain, which has no testing.TB: ok is false
// where /proc/self/fd cannot be read.
func countFDs() (n int, ok bool) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, false
	}
	return len(ents), true
}
