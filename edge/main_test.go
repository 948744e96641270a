package edge

import (
	"os"
	"testing"

	"github.com/edgedhq/edged/internal/testenv"
)

// TestMain checks for leaked goroutines and file descriptors: every test
// closes its servers and clients.
func TestMain(m *testing.M) {
	os.Exit(testenv.LeakCheckMain(m, "edge"))
}
