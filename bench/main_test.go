package bench

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	MaybeWorker() // Run re-executes this test binary as its workers
	os.Exit(m.Run())
}
