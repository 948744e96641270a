package mqtt

import (
	"fmt"
	"net"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run (exit 99) when the tests leak a file descriptor
// (the mosquitto interop test opens sockets and child processes) or a
// goroutine.
func TestMain(m *testing.M) {
	// Start the runtime netpoller (its epoll fd and eventfd live for the
	// whole process) before taking the baseline.
	if l, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		l.Close()
	}
	before := openFDs()
	code := m.Run()
	if code == 0 {
		if after := openFDs(); after > before {
			fmt.Fprintf(os.Stderr, "mqtt tests leaked %d file descriptors\n", after-before)
			os.Exit(99)
		}
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "mqtt tests leaked goroutines: %v\n", err)
			os.Exit(99)
		}
	}
	os.Exit(code)
}

// openFDs counts this process's open file descriptors, or returns 0 where
// /proc/self/fd does not exist (the check is then a no-op).
func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	return len(ents)
}
