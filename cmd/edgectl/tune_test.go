package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgedhq/edged/internal/testenv"
)

const fakeDev = "../../tuning/testdata/hosts/dev-2c"

func TestTuneExitCodes(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string // substring
	}{
		{"no arguments", nil, exitUsage, "Usage: edgectl COMMAND"},
		{"unknown command", []string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{"tune without verb", []string{"tune"}, exitUsage, "missing verb"},
		{"unknown verb", []string{"tune", "launch"}, exitUsage, `unknown verb "launch"`},
		{"unknown flag", []string{"tune", "plan", "--profile", "dev", "--bogus"}, exitUsage, "flag provided but not defined: -bogus"},
		{"stray argument", []string{"tune", "plan", "--profile", "dev", "--root", fakeDev, "extra"}, exitUsage, `unexpected argument "extra"`},
		{"missing profile", []string{"tune", "plan", "--root", fakeDev}, exitUsage, "--profile is required"},
		{"unknown profile", []string{"tune", "plan", "--profile", "huge", "--root", fakeDev}, exitUsage, "unknown profile"},
		{"auto without conns", []string{"tune", "plan", "--profile", "auto", "--root", fakeDev}, exitOK, ""},
		{"negative conns", []string{"tune", "plan", "--profile", "dev", "--conns", "-3", "--root", fakeDev}, exitUsage, "bad connection target"},
		{"conns not a number", []string{"tune", "plan", "--profile", "dev", "--conns", "many"}, exitUsage, "invalid value"},
		{"unknown format", []string{"tune", "export", "--profile", "dev", "--format", "yaml", "--root", fakeDev}, exitUsage, `unknown --format "yaml"`},
		{"root without a host", []string{"tune", "plan", "--profile", "dev", "--root", "testdata"}, exitFailed, "read host cpus"},
		{"verify on untuned host", []string{"tune", "verify", "--profile", "dev", "--root", fakeDev}, exitFailed, "value differs from wanted"},
		{"rollback without state", []string{"tune", "rollback", "--state", "testdata/no-such-state.json"}, exitFailed, "bad state file"},
		{"plan", []string{"tune", "plan", "--profile", "dev", "--root", fakeDev}, exitOK, ""},
		{"tls share over 1", []string{"tune", "plan", "--profile", "dev", "--root", fakeDev, "--tls-share", "2"}, exitUsage, "want a fraction from 0 to 1"},
		{"export", []string{"tune", "export", "--profile", "auto", "--conns", "1000", "--format", "json", "--root", fakeDev}, exitOK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut, code := edgectl(tt.args...)
			if code != tt.code || !strings.Contains(errOut, tt.stderr) {
				t.Fatalf("edgectl %v: exit %d, stderr %q; want exit %d and %q", tt.args, code, errOut, tt.code, tt.stderr)
			}
		})
	}
}

func TestTuneOutputGolden(t *testing.T) {
	tests := []struct {
		golden string
		args   []string
	}{
		{"tune-plan-dev.golden", []string{"tune", "plan", "--profile", "dev", "--root", fakeDev}},
		{"tune-diff-dev.golden", []string{"tune", "diff", "--profile", "dev", "--root", fakeDev}},
		{"tune-plan-dev-tls.golden", []string{"tune", "plan", "--profile", "dev", "--root", fakeDev, "--tls-share", "0.5"}},
		{"tune-diff-dev-only.golden", []string{"tune", "diff", "--profile", "dev", "--root", fakeDev, "--only", "net.ipv4.tcp_keepalive_,/sys/"}},
		{"tune-export-dev.sysctl.d.golden", []string{"tune", "export", "--profile", "dev", "--root", fakeDev}},
		{"tune-export-dev.systemd.golden", []string{"tune", "export", "--profile", "dev", "--format", "systemd", "--root", fakeDev}},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			out, errOut, code := edgectl(tt.args...)
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			golden(t, tt.golden, []byte(out))
		})
	}
}

func TestTuneApplyVerifyRollback(t *testing.T) {
	root := testenv.CopyTree(t, fakeDev)
	state := filepath.Join(t.TempDir(), "state.json")
	base := []string{"--profile", "dev", "--root", root}
	step := func(want int, verb string, extra ...string) string {
		t.Helper()
		args := append([]string{"tune", verb}, base...)
		if verb == "rollback" {
			args = []string{"tune", "rollback"}
		}
		out, errOut, code := edgectl(append(args, extra...)...)
		if code != want {
			t.Fatalf("tune %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", verb, code, want, out, errOut)
		}
		return out
	}
	planBefore := step(exitOK, "plan")

	out := step(exitOK, "apply", "--dry-run", "--state", state)
	if !strings.Contains(out, "dry run: 18 change(s) checked, none written") {
		t.Fatalf("dry run output:\n%s", out)
	}
	if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) || step(exitOK, "plan") != planBefore {
		t.Fatal("dry run changed the host or wrote a state file")
	}
	step(exitFailed, "verify")

	out = step(exitOK, "apply", "--state", state)
	if !strings.Contains(out, "applied 18 change(s)") || !strings.Contains(out, "verified: 26 setting(s) hold profile dev") {
		t.Fatalf("apply output:\n%s", out)
	}
	step(exitOK, "verify")
	if out := step(exitOK, "diff"); !strings.Contains(out, "0 to change, 22 already set, 0 cannot apply") {
		t.Fatalf("diff after apply:\n%s", out)
	}
	dropIn, err := os.ReadFile(filepath.Join(root, "etc/systemd/system/edged.service.d/50-edgectl-tune.conf"))
	if err != nil || !strings.Contains(string(dropIn), "LimitNOFILE=65536\nEnvironment=GOMAXPROCS=2\n") {
		t.Fatalf("drop-in after apply: %q, %v", dropIn, err)
	}
	if out := step(exitOK, "apply", "--state", state); !strings.Contains(out, "nothing to change") {
		t.Fatalf("second apply:\n%s", out)
	}

	if out := step(exitOK, "rollback", "--state", state, "--dry-run"); !strings.Contains(out, "restore net.ipv4.tcp_fin_timeout = 60") {
		t.Fatalf("rollback dry run:\n%s", out)
	}
	step(exitOK, "verify")
	out = step(exitOK, "rollback", "--state", state)
	if !strings.Contains(out, "rolled back 18 key(s)") {
		t.Fatalf("rollback output:\n%s", out)
	}
	// The fake THP file keeps the bare word after a write; the kernel would
	// redraw its brackets. Every current value is what it was.
	if after := step(exitOK, "plan"); after != planBefore {
		t.Fatalf("plan after rollback differs from before:\n%s", after)
	}
	step(exitFailed, "rollback", "--state", state)
}

func TestTuneApplyRefusesBeforeChanging(t *testing.T) {
	root := testenv.CopyTree(t, fakeDev)
	if err := os.Chmod(filepath.Join(root, "proc/sys/net/ipv4/tcp_keepalive_time"), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "proc/sys/net/ipv4/tcp_fin_timeout"), []byte("sixty\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before, _, _ := edgectl("tune", "plan", "--profile", "dev", "--root", root)
	state := filepath.Join(t.TempDir(), "state.json")
	out, errOut, code := edgectl("tune", "apply", "--profile", "dev", "--root", root, "--state", state)
	if code != exitFailed || !strings.Contains(errOut, "nothing changed") ||
		!strings.Contains(errOut, "read-only key") || !strings.Contains(errOut, "malformed value") {
		t.Fatalf("apply: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if after, _, _ := edgectl("tune", "plan", "--profile", "dev", "--root", root); after != before {
		t.Fatal("a refused apply changed the host")
	}
	if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a refused apply wrote a state file")
	}
}

// TestTunePlanLiveHost runs plan and diff against this machine's real /proc
// and /sys. They only read; the test checks a few values did not move.
func TestTunePlanLiveHost(t *testing.T) {
	_, err := os.Stat("/proc/sys/net/core/somaxconn")
	testenv.Require(t, err == nil, "no /proc/sys on this system")
	keys := []string{"/proc/sys/net/core/somaxconn", "/proc/sys/net/ipv4/tcp_rmem", "/proc/sys/fs/file-max"}
	before := readAll(t, keys)
	for _, verb := range []string{"plan", "diff"} {
		out, errOut, code := edgectl("tune", verb, "--profile", "dev")
		if code != exitOK || !strings.Contains(out, "net.ipv4.tcp_rmem") {
			t.Fatalf("tune %s on the live host: exit %d\n%s\n%s", verb, code, out, errOut)
		}
	}
	if after := readAll(t, keys); after != before {
		t.Fatalf("live values moved during a read-only plan: %q -> %q", before, after)
	}
}

func readAll(t *testing.T, paths []string) string {
	t.Helper()
	var b strings.Builder
	for _, p := range paths {
		v, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(v)
	}
	return b.String()
}

// netnsKeys are the profile's sysctls that each network namespace has its
// own copy of (checked on Linux 6.18); tcp_mem, netdev_max_backlog,
// rps_sock_flow_entries and the fs.* keys are global and absent inside.
var netnsKeys = []string{
	"net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog", "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem",
	"net.ipv4.ip_local_port_range", "net.ipv4.tcp_tw_reuse", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_",
}

// TestTuneNetns applies, verifies and rolls back the 24c-100g profile's
// per-namespace net.* keys with the real edgectl code path in a fresh
// network namespace, reading the kernel's values back with cat. This test
// binary re-executes itself as edgectl under "ip netns exec" (TestMain), so
// the whole process lives in the namespace; the host keeps its values.
func TestTuneNetns(t *testing.T) {
	testenv.RequirePriv(t, "applying sysctls in a network namespace")
	_, err := exec.LookPath("ip")
	testenv.Require(t, err == nil, "the ip tool (iproute2) is not installed")

	name := fmt.Sprintf("edgectl-tune-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del: %v: %s", err, out)
		}
	})
	kernel := func(key string) string {
		t.Helper()
		out, err := exec.Command("ip", "netns", "exec", name, "cat", "/proc/sys/"+strings.ReplaceAll(key, ".", "/")).CombinedOutput()
		if err != nil {
			t.Fatalf("read %s in netns: %v: %s", key, err, out)
		}
		return string(out)
	}
	state := filepath.Join(t.TempDir(), "state.json")
	cli := func(want int, verb string, args ...string) string {
		t.Helper()
		full := append([]string{"netns", "exec", name, os.Args[0], "tune", verb}, args...)
		if verb != "rollback" {
			full = append(full, "--profile", "24c-100g", "--root", "/", "--only", strings.Join(netnsKeys, ","))
		}
		cmd := exec.Command("ip", full...)
		cmd.Env = append(os.Environ(), "EDGECTL_TEST_AS_MAIN=1", "EDGECTL_TEST_REQUIRE_NETNS=1")
		out, err := cmd.CombinedOutput()
		code := 0
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != want {
			t.Fatalf("tune %s in netns: exit %d, want %d\n%s", verb, code, want, out)
		}
		return string(out)
	}
	watch := []string{"net.core.somaxconn", "net.ipv4.tcp_rmem", "net.ipv4.tcp_fin_timeout", "net.ipv4.ip_local_port_range"}
	host, before := map[string]string{}, map[string]string{}
	for _, k := range watch {
		host[k] = readAll(t, []string{"/proc/sys/" + strings.ReplaceAll(k, ".", "/")})
		before[k] = kernel(k)
	}

	cli(exitFailed, "verify")
	out := cli(exitOK, "apply", "--state", state)
	if !strings.Contains(out, "applied 10 change(s)") || !strings.Contains(out, "verified: 10 setting(s)") {
		t.Fatalf("apply in netns:\n%s", out)
	}
	// somaxconn depends on this host's CPU count; it must have moved.
	if got := kernel("net.core.somaxconn"); got == before["net.core.somaxconn"] {
		t.Errorf("kernel somaxconn still %q after apply", got)
	}
	want := map[string]string{
		"net.ipv4.tcp_rmem":        "4096\t8192\t262144\n",
		"net.ipv4.tcp_fin_timeout": "15\n", "net.ipv4.ip_local_port_range": "1024\t65535\n",
	}
	for k, v := range want {
		if got := kernel(k); got != v {
			t.Errorf("kernel %s = %q after apply, want %q", k, got, v)
		}
	}
	cli(exitOK, "verify")
	cli(exitOK, "rollback", "--state", state)
	for _, k := range watch {
		if got := kernel(k); got != before[k] {
			t.Errorf("kernel %s = %q after rollback, want %q", k, got, before[k])
		}
		if got := readAll(t, []string{"/proc/sys/" + strings.ReplaceAll(k, ".", "/")}); got != host[k] {
			t.Errorf("host %s moved: %q -> %q", k, host[k], got)
		}
	}
	cli(exitFailed, "verify")
}
