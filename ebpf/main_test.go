package steer

import (
	"os"
	"os/exec"
	"testing"

	"github.com/edgedhq/edged/internal/testenv"
)

// TestMain fails the run (exit 99) on a leaked file descriptor and on a
// leaked goroutine.
func TestMain(m *testing.M) {
	os.Exit(testenv.LeakCheckMain(m, "ebpf"))
}

// TestOtherOSBuild compiles the package for the non-Linux stubs.
func TestOtherOSBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles for other OSes")
	}
	// go test puts $GOROOT/bin first on the test's PATH (Go 1.19+).
	gobin, err := exec.LookPath("go")
	testenv.Require(t, err == nil, "the go tool is needed to compile the non-Linux stubs")
	for _, goos := range []string{"freebsd", "darwin", "windows"} {
		t.Run(goos, func(t *testing.T) {
			cmd := exec.Command(gobin, "vet", ".")
			cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH=amd64")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("GOOS=%s go vet: %v\n%s", goos, err, out)
			}
		})
	}
}
