// Package testenv holds the helpers tests share: the privileged-test gate,
// the fd and goroutine leak checks (OpenFDs, LeakCheckMain), golden files
// (Golden) and writable copies of fake host trees (CopyTree).
package testenv

import (
	"os"
	"testing"
)

// RequirePriv skips t with a precise reason unless the process is root. When
// EDGE_REQUIRE_PRIV=1 (as .ci/run sets it) the skip becomes a failure, so CI
// can never pass a privileged test silently.
func RequirePriv(t testing.TB, what string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("EDGE_REQUIRE_PRIV") == "1" {
		t.Fatalf("%s needs root (uid %d) and EDGE_REQUIRE_PRIV=1 forbids skipping", what, os.Geteuid())
	}
	t.Skipf("%s needs root; running as uid %d", what, os.Geteuid())
}

// Require fails (under EDGE_REQUIRE_PRIV=1) or skips t when ok is false,
// giving why as the reason. Use it for a missing tool or kernel feature.
func Require(t testing.TB, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("EDGE_REQUIRE_PRIV") == "1" {
		t.Fatalf("required for this test: %s", why)
	}
	t.Skip(why)
}

// OpenFDs returns the number of open file descriptors of this process.
func OpenFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("read /proc/self/fd: %v", err)
	}
	return len(ents)
}
