package main

import (
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgedhq/edged/internal/testenv"
)

type syncBuffer = testenv.SyncBuffer

func testSleep() { time.Sleep(10 * time.Millisecond) }

// buildEdged builds the edged binary into a temporary directory.
func buildEdged(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "edged")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v: %s", err, out)
	}
	return bin
}

// startBinary runs name with args and waits for edged's start-up line on
// its standard error, which it returns.
func startBinary(t *testing.T, name string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	// Each edged gets its own store unless the test names one: the
	// default ./edged-data would land in the package directory, shared
	// between tests.
	if !slices.Contains(args, "--data-dir") && !slices.Contains(args, "--in-memory") {
		args = append(args, "--data-dir", t.TempDir())
	}
	cmd := exec.Command(name, args...)
	errb := &syncBuffer{}
	cmd.Stderr = errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(errb.String(), "edged started") {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("edged did not start: %s", errb.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cmd, errb
}
