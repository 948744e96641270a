package edge

import (
	"fmt"
	"net"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks for leaked goroutines and file descriptors: every test
// closes its servers and clients.
func TestMain(m *testing.M) {
	// Let the runtime open its own poller first, so it does not count.
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		ln.Close()
	}
	before := countFDs()
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goroutine leak: %v\n", err)
			code = 1
		}
		if after := countFDs(); after > before {
			fmt.Fprintf(os.Stderr, "file descriptor leak: %d open before the tests, %d after\n", before, after)
			code = 99
		}
	}
	os.Exit(code)
}

func countFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0 // not Linux: no fd check
	}
	return len(ents)
}
