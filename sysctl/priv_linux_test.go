package sysctl

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/edgedhq/edged/internal/testenv"
)

// The netns tests run the test binary again inside a fresh network namespace
// with "ip netns exec NAME <binary> -test.run=^TestNetnsChild$": the whole
// child process lives in the namespace, so every thread sees the
// namespace's /proc/sys/net. (Checked on Linux 6.18: a goroutine that calls
// runtime.LockOSThread and unix.Unshare(CLONE_NEWNET) also reads and writes
// the new namespace's /proc/sys/net from that thread while the main thread
// keeps the host's; the child process is preferred because no goroutine or
// helper can then run on a host-namespace thread by mistake.) Per-namespace
// net.* keys are writable there by root and the host's values stay
// untouched; the global ones (tcp_mem, netdev_max_backlog) are absent
// inside, which the child uses to refuse to run in the host namespace.
const netnsChildEnv = "EDGE_SYSCTL_NETNS_CHILD"

func TestNetnsApplyVerifyRollback(t *testing.T) {
	testenv.RequirePriv(t, "writing sysctls in a network namespace")
	_, err := exec.LookPath("ip")
	testenv.Require(t, err == nil, "the ip tool (iproute2) is not installed")

	hostBefore := readFile(t, "/proc/sys/net/core/somaxconn")
	name := fmt.Sprintf("edgesysctl-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del: %v: %s", err, out)
		}
	})
	cmd := exec.Command("ip", "netns", "exec", name, os.Args[0], "-test.run=^TestNetnsChild$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), netnsChildEnv+"="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("netns child done")) {
		t.Fatalf("child in netns: %v\n%s", err, out)
	}
	t.Logf("child:\n%s", out)
	if hostAfter := readFile(t, "/proc/sys/net/core/somaxconn"); hostAfter != hostBefore {
		t.Fatalf("host somaxconn moved from %q to %q", hostBefore, hostAfter)
	}
}

// TestNetnsChild is the half of TestNetnsApplyVerifyRollback that runs
// inside the namespace; run directly it skips.
func TestNetnsChild(t *testing.T) {
	dir := os.Getenv(netnsChildEnv)
	if dir == "" {
		t.Skip("helper for TestNetnsApplyVerifyRollback; runs only inside its network namespace")
	}
	if _, err := os.Stat("/proc/sys/net/ipv4/tcp_mem"); err == nil {
		t.Fatal("net.ipv4.tcp_mem is visible: this is the host's network namespace, refusing to write")
	}
	f := New("")
	keys := []string{"net.core.somaxconn", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_rmem", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_keepalive_time"}
	orig := map[string]Value{}
	for _, k := range keys {
		v, err := f.Read(k)
		if err != nil {
			t.Fatal(err)
		}
		orig[k] = v
	}
	checkOrig := func(when string) {
		t.Helper()
		for _, k := range keys {
			if v, err := f.Read(k); err != nil || v != orig[k] {
				t.Errorf("%s: %s = %q, %v; want original %q", when, k, v, err, orig[k])
			}
		}
	}

	t.Run("apply verify rollback", func(t *testing.T) {
		state := filepath.Join(dir, "state.json")
		cs := changes(t, f, "net.core.somaxconn", "54321", "net.ipv4.tcp_fin_timeout", "15",
			"net.ipv4.tcp_rmem", "4096 8192 262144", "net.ipv4.ip_local_port_range", "10000 60999")
		n, err := Apply(cs, state)
		if err != nil || n != 4 {
			t.Fatalf("Apply = %d, %v", n, err)
		}
		if _, err := Verify(cs); err != nil {
			t.Fatal(err)
		}
		// Read the kernel's own rendering, not through this package.
		if got := readFile(t, "/proc/sys/net/ipv4/tcp_rmem"); got != "4096\t8192\t262144\n" {
			t.Fatalf("kernel tcp_rmem = %q", got)
		}
		if n, err := Rollback(state); err != nil || n != 4 {
			t.Fatalf("Rollback = %d, %v", n, err)
		}
		checkOrig("after rollback")
	})

	t.Run("kernel refuses part-way", func(t *testing.T) {
		// ping_group_range is not in the known table, so its spec is inferred
		// (two integers, unbounded) and 4294967295 passes Check; the kernel
		// rejects it (EINVAL: not a valid gid), after two keys were written.
		state := filepath.Join(dir, "partial.json")
		cs := changes(t, f, "net.core.somaxconn", "11111", "net.ipv4.tcp_fin_timeout", "17",
			"net.ipv4.ping_group_range", "0 4294967295", "net.ipv4.tcp_keepalive_time", "999")
		n, err := Apply(cs, state)
		if !errors.Is(err, syscall.EINVAL) || n != 0 {
			t.Fatalf("Apply = %d, %v; want EINVAL", n, err)
		}
		if !strings.Contains(err.Error(), "net.ipv4.ping_group_range") || !strings.Contains(err.Error(), "rolled back 2") {
			t.Fatalf("error does not say what failed and what was undone: %v", err)
		}
		checkOrig("after failed apply")
		if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("state file left after rolled-back apply: %v", err)
		}
	})

	t.Run("read-only key", func(t *testing.T) {
		// rmem_default is 0444 outside the initial namespace.
		_, err := f.Change("net.core.rmem_default", "4096")
		if !errors.Is(err, ErrReadOnly) {
			t.Fatalf("Change(rmem_default) = %v, want ErrReadOnly", err)
		}
	})
	t.Run("global key absent", func(t *testing.T) {
		if _, err := f.Change("net.ipv4.tcp_mem", "1 2 3"); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("Change(tcp_mem) = %v, want ErrUnknownKey", err)
		}
	})
	if !t.Failed() {
		fmt.Println("netns child done")
	}
}

const permChildEnv = "EDGE_SYSCTL_PERM_CHILD"

// TestPermissionDenied runs the test binary as nobody against a root-owned
// tree: the kernel refuses the open, and Change says so before any write.
func TestPermissionDenied(t *testing.T) {
	testenv.RequirePriv(t, "switching to uid 65534")
	root := fakeTree(t, map[string]string{"net/core/somaxconn": "4096\n"})
	bin := filepath.Join(t.TempDir(), "sysctl.test")
	copyExec(t, os.Args[0], bin)
	for _, d := range []string{root, filepath.Dir(root), filepath.Dir(bin), filepath.Dir(filepath.Dir(bin))} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, "-test.run=^TestPermissionChild$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), permChildEnv+"="+root)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("perm child done")) {
		t.Fatalf("child as nobody: %v\n%s", err, out)
	}
	if got := readFile(t, filepath.Join(root, "net/core/somaxconn")); got != "4096\n" {
		t.Fatalf("somaxconn = %q after refused write", got)
	}
}

func TestPermissionChild(t *testing.T) {
	root := os.Getenv(permChildEnv)
	if root == "" {
		t.Skip("helper for TestPermissionDenied; runs only as its child")
	}
	_, err := New(root).Change("net.core.somaxconn", "1")
	if !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("Change as uid %d = %v, want ErrPermission", os.Geteuid(), err)
	}
	fmt.Println("perm child done")
}

func copyExec(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
