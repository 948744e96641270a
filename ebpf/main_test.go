package ebpf

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"testing"

	"github.com/edgedhq/edged/internal/testenv"
	"go.uber.org/goleak"
)

// TestMain fails the run (exit 99) on a leaked file descriptor and on a
// leaked goroutine.
func TestMain(m *testing.M) {
	// Start the runtime's netpoller first so its fds count as "before".
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	before := openFDs()
	code := m.Run()
	if code == 0 {
		if after := openFDs(); after > before {
			fmt.Fprintf(os.Stderr, "ebpf tests leaked %d file descriptors\n", after-before)
			code = 99
		}
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "ebpf tests leaked goroutines: %v\n", err)
			code = 99
		}
	}
	os.Exit(code)
}

func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0 // not Linux: nothing to compare
	}
	return len(ents) - 1 // the directory's own fd
}

// TestOtherOSBuild compiles the package for the non-Linux stubs.
func TestOtherOSBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles for other OSes")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = runtime.GOROOT() + "/bin/go"
	}
	_, err = os.Stat(gobin)
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
