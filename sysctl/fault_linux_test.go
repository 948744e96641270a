package sysctl

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestApplyFailsPartWay makes the kernel refuse the third of four writes,
// without privileges: that key is a symlink to /proc/self/oom_score_adj,
// whose spec this package does not know (so it is inferred as one unbounded
// integer and 5000 passes Check), while the kernel accepts only
// -1000..1000 and returns EINVAL (fs/proc/base.c oom_score_adj_write).
// Apply must restore the two keys it already wrote, leave the fourth
// untouched, and remove the state file it had written.
func TestApplyFailsPartWay(t *testing.T) {
	if _, err := os.Stat("/proc/self/oom_score_adj"); err != nil {
		t.Skipf("no /proc/self/oom_score_adj: %v", err)
	}
	root := fakeTree(t, map[string]string{
		"net/core/somaxconn":          "4096\n",
		"net/ipv4/tcp_fin_timeout":    "60\n",
		"net/ipv4/tcp_keepalive_time": "7200\n",
	})
	if err := os.Symlink("/proc/self/oom_score_adj", filepath.Join(root, "net/ipv4/zz_fault")); err != nil {
		t.Fatal(err)
	}
	oomBefore := readFile(t, "/proc/self/oom_score_adj")
	f := New(root)
	cs := changes(t, f, "net.core.somaxconn", "65535", "net.ipv4.tcp_fin_timeout", "15",
		"net.ipv4.zz_fault", "5000", "net.ipv4.tcp_keepalive_time", "300")
	if err := Check(cs); err != nil {
		t.Fatalf("Check passes what only the kernel rejects, got %v", err)
	}
	before := snapshot(t, root)
	state := filepath.Join(t.TempDir(), "state.json")
	n, err := Apply(cs, state)
	if !errors.Is(err, syscall.EINVAL) || n != 0 {
		t.Fatalf("Apply = %d, %v; want EINVAL", n, err)
	}
	for _, want := range []string{"net.ipv4.zz_fault", "rolled back 2 key(s)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if after := snapshot(t, root); !mapsEqual(before, after) {
		t.Fatalf("tree after failed apply:\n%q\nwant\n%q", after, before)
	}
	if got := readFile(t, "/proc/self/oom_score_adj"); got != oomBefore {
		t.Fatalf("oom_score_adj = %q, was %q", got, oomBefore)
	}
	if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state file left after a rolled-back apply: %v", err)
	}
}

// TestApplyFailsPartWayKeepsEarlierState: when an earlier apply's state
// file exists, a failed apply puts it back unchanged.
func TestApplyFailsPartWayKeepsEarlierState(t *testing.T) {
	if _, err := os.Stat("/proc/self/oom_score_adj"); err != nil {
		t.Skipf("no /proc/self/oom_score_adj: %v", err)
	}
	root := fakeTree(t, map[string]string{"net/core/somaxconn": "4096\n", "net/ipv4/tcp_fin_timeout": "60\n"})
	if err := os.Symlink("/proc/self/oom_score_adj", filepath.Join(root, "net/ipv4/zz_fault")); err != nil {
		t.Fatal(err)
	}
	f := New(root)
	state := filepath.Join(t.TempDir(), "state.json")
	if _, err := Apply(changes(t, f, "net.core.somaxconn", "8192"), state); err != nil {
		t.Fatal(err)
	}
	prev := readFile(t, state)
	cs := changes(t, f, "net.ipv4.tcp_fin_timeout", "15", "net.ipv4.zz_fault", "5000")
	if _, err := Apply(cs, state); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("Apply = %v, want EINVAL", err)
	}
	if got := readFile(t, state); got != prev {
		t.Fatalf("state file changed by a rolled-back apply:\n%s\nwant\n%s", got, prev)
	}
	if n, err := Rollback(state); err != nil || n != 1 {
		t.Fatalf("Rollback = %d, %v", n, err)
	}
	if v, _ := f.Read("net.core.somaxconn"); v != "4096" {
		t.Fatalf("somaxconn = %q after rollback", v)
	}
}
