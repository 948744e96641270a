package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestStartFindsBinariesBesideEdgebench: a --start command names its server
// by bare name (edged) and finds the one next to the running binary, as
// `make build` lays them out in bin/, with PATH otherwise unchanged.
func TestStartFindsBinariesBesideEdgebench(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	env := startEnv([]string{"PATH=/usr/bin:/bin", "HOME=/nowhere"})
	cmd := exec.Command("/bin/sh", "-c", "command -v "+filepath.Base(exe)+"; echo $PATH")
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sh: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 || lines[0] != exe || lines[1] != filepath.Dir(exe)+":/usr/bin:/bin" {
		t.Fatalf("got %q, want %s found and PATH %s:/usr/bin:/bin", lines, exe, filepath.Dir(exe))
	}
	if got := startEnv([]string{"HOME=/x"}); got[len(got)-1] != "PATH="+filepath.Dir(exe) {
		t.Fatalf("no PATH: got %q", got)
	}
}
