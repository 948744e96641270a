package buildinfo

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

func TestFormat(t *testing.T) {
	tail := " " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH
	for _, tc := range []struct {
		name string
		s    stamp
		want string
	}{
		{"no stamp", stamp{}, "dev" + tail},
		{"clean", stamp{"0123456789abcdef0123", "2026-12-02T10:00:00Z", "false"}, "dev (commit 0123456789ab, 2026-12-02T10:00:00Z)" + tail},
		{"dirty", stamp{"0123456789abcdef0123", "2026-12-02T10:00:00Z", "true"}, "dev (commit 0123456789ab+dirty, 2026-12-02T10:00:00Z)" + tail},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := format("dev", tc.s); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestBuiltBinaryNamesItsCommit builds edged as `make build` does, in this
// git checkout, and checks that --version names the checkout's commit.
func TestBuiltBinaryNamesItsCommit(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed: no VCS stamp to check")
	}
	out, err := exec.Command("git", "rev-parse", "HEAD", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("not a git checkout (%v): go build stamps no commit", err)
	}
	f := strings.Fields(string(out))
	head, top := f[0][:12], f[1]
	if st, err := os.Stat(filepath.Join(top, ".git")); err != nil || !st.IsDir() {
		t.Skipf("%s is a git worktree (.git is not a directory): go build stamps no VCS info there", top)
	}
	bin := filepath.Join(t.TempDir(), "edged")
	// The flag `make build` passes: it overrides a GOFLAGS=-buildvcs=false
	// in the environment or go env (this machine image sets one).
	build := exec.Command("go", "build", "-buildvcs=auto", "-o", bin, "../../cmd/edged")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("edged --version: %v\n%s", err, out)
	}
	re := regexp.MustCompile(`^edged \S+ \(commit ` + head + `(\+dirty)?, \d{4}-\d\d-\d\dT[0-9:]+Z\) go`)
	if !re.Match(out) {
		t.Fatalf("edged --version = %q, want the commit %s and its date", out, head)
	}
}
