package mqtt

import (
	"os"
	"testing"

	"github.com/edgedhq/edged/internal/testenv"
)

// TestMain fails the run (exit 99) when the tests leak a file descriptor
// (the mosquitto interop test opens sockets and child processes) or a
// goroutine.
func TestMain(m *testing.M) {
	os.Exit(testenv.LeakCheckMain(m, "mqtt"))
}
