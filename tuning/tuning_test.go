package tuning

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgedhq/edged/internal/testenv"
	"github.com/edgedhq/edged/sysctl"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	testenv.Golden(t, filepath.Join("testdata", name), got, *update)
}

func fakeHost(t *testing.T, name string) Host {
	t.Helper()
	h, err := ReadHost(filepath.Join("testdata", "hosts", name))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestReadHost(t *testing.T) {
	tests := []struct {
		host              string
		cpus              int
		mem               uint64
		nics              []string
		irqs, rx, tx      int // of the first NIC
		rps, xps          bool
		firstIRQ, lastIRQ int
	}{
		{"24c-100g", 24, 100 << 30, []string{"eth0", "eth1"}, 8, 8, 8, true, true, 41, 48},
		{"dev-2c", 2, 4 << 30, []string{"eth0"}, 2, 1, 1, true, false, 41, 42},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			h := fakeHost(t, tt.host)
			if h.CPUs != tt.cpus || h.MemBytes != tt.mem || h.PageSize != 4096 || !h.THP {
				t.Fatalf("host = %d CPUs, %d B, page %d, THP %v", h.CPUs, h.MemBytes, h.PageSize, h.THP)
			}
			var names []string
			for _, n := range h.NICs {
				names = append(names, n.Name)
			}
			if strings.Join(names, ",") != strings.Join(tt.nics, ",") {
				t.Fatalf("NICs = %v, want %v (lo has no device link)", names, tt.nics)
			}
			n := h.NICs[0]
			if len(n.IRQs) != tt.irqs || len(n.RxQueues) != tt.rx || len(n.TxQueues) != tt.tx || n.RPS != tt.rps || n.XPS != tt.xps {
				t.Fatalf("NIC %s = %+v", n.Name, n)
			}
			if n.IRQs[0].Num != tt.firstIRQ || n.IRQs[len(n.IRQs)-1].Num != tt.lastIRQ {
				t.Fatalf("IRQs %+v, want %d..%d (config and link vectors excluded)", n.IRQs, tt.firstIRQ, tt.lastIRQ)
			}
		})
	}
}

func TestReadHostErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadHost(dir); err == nil || !strings.Contains(err.Error(), "read host cpus") {
		t.Fatalf("ReadHost(empty dir) = %v", err)
	}
	write(t, filepath.Join(dir, "sys/devices/system/cpu/online"), "0-3\n")
	write(t, filepath.Join(dir, "proc/meminfo"), "MemFree: 1 kB\n")
	if _, err := ReadHost(dir); !errors.Is(err, ErrHost) {
		t.Fatalf("ReadHost(no MemTotal) = %v, want ErrHost", err)
	}
	write(t, filepath.Join(dir, "sys/devices/system/cpu/online"), "garbage\n")
	if _, err := ReadHost(dir); !errors.Is(err, ErrHost) {
		t.Fatalf("ReadHost(bad cpu list) = %v, want ErrHost", err)
	}
}

func write(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

var goldenCases = []struct {
	host, profile string
	conns         int64
}{
	{"24c-100g", "24c-100g", 0},
	{"24c-100g", "auto", 2_000_000},
	{"dev-2c", "dev", 0},
	{"dev-2c", "auto", 100_000},
	{"dev-2c", "24c-100g", 0},
}

func TestGoldenPlans(t *testing.T) {
	for _, tt := range goldenCases {
		name := tt.profile + "-on-" + tt.host
		t.Run(name, func(t *testing.T) {
			h := fakeHost(t, tt.host)
			p, err := Load(tt.profile, h, tt.conns)
			if err != nil {
				t.Fatal(err)
			}
			pl := NewPlan(p, h)
			if err := pl.Err(); err != nil {
				t.Fatalf("plan on a complete fake host has errors: %v", err)
			}
			var full, diff bytes.Buffer
			if err := pl.Render(&full, false); err != nil {
				t.Fatal(err)
			}
			if err := pl.Render(&diff, true); err != nil {
				t.Fatal(err)
			}
			golden(t, "plan-"+name+".golden", full.Bytes())
			golden(t, "diff-"+name+".golden", diff.Bytes())
		})
	}
}

func TestGoldenExports(t *testing.T) {
	h := fakeHost(t, "24c-100g")
	p, err := Load("24c-100g", h, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range Formats {
		t.Run(format, func(t *testing.T) {
			var b bytes.Buffer
			if err := Export(&b, p, h, format); err != nil {
				t.Fatal(err)
			}
			golden(t, "export-24c-100g."+format+".golden", b.Bytes())
		})
	}
	if err := Export(io.Discard, p, h, "yaml"); !errors.Is(err, ErrFormat) {
		t.Fatalf("Export(yaml) = %v, want ErrFormat", err)
	}
}

func TestEverySettingExplained(t *testing.T) {
	for _, tt := range goldenCases {
		h := fakeHost(t, tt.host)
		p, err := Load(tt.profile, h, tt.conns)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range p.Settings {
			if s.Reason == "" || s.Formula == "" || s.Value == "" {
				t.Errorf("%s/%s: setting %s lacks value, reason or formula: %+v", tt.profile, tt.host, s.Key, s)
			}
		}
	}
}

func TestLoadErrors(t *testing.T) {
	h := fakeHost(t, "dev-2c")
	tests := []struct {
		name, profile string
		conns         int64
		err           error
	}{
		{"unknown profile", "48c-200g", 0, ErrUnknownProfile},
		{"negative conns", "dev", -5, ErrConns},
		{"absurd conns", "auto", 1 << 40, ErrConns},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Load(tt.profile, h, tt.conns); !errors.Is(err, tt.err) {
				t.Fatalf("Load(%s, %d) = %v, want %v", tt.profile, tt.conns, err, tt.err)
			}
		})
	}
}

func TestCapacity(t *testing.T) {
	tests := []struct {
		host, profile string
		conns         int64
		binding       string
		fits          bool
	}{
		{"24c-100g", "24c-100g", 0, "files (RLIMIT_NOFILE)", true},
		{"dev-2c", "dev", 0, "files (RLIMIT_NOFILE)", true},
		// 4 GiB cannot hold 2M connections at 4288 B each.
		{"dev-2c", "24c-100g", 0, "memory", false},
	}
	for _, tt := range tests {
		t.Run(tt.profile+"-on-"+tt.host, func(t *testing.T) {
			h := fakeHost(t, tt.host)
			p, err := Load(tt.profile, h, tt.conns)
			if err != nil {
				t.Fatal(err)
			}
			c := EstimateCapacity(p, h)
			if c.Binding != tt.binding || (c.Fits >= c.Target) != tt.fits {
				t.Fatalf("capacity = %+v; want binding %q, fits %v", c, tt.binding, tt.fits)
			}
			per := int64(KernelSocketBytes + EdgedConnBytes)
			if want := (int64(h.MemBytes) - c.ReserveBytes - c.BufferBytes) / per; c.ByMemory != want {
				t.Fatalf("by memory = %d, want %d", c.ByMemory, want)
			}
		})
	}
}

func currents(pl *Plan) map[string]string {
	out := map[string]string{}
	for _, l := range pl.Lines {
		out[l.Key] = l.Current
	}
	return out
}

func TestApplyVerifyRollbackFakeHost(t *testing.T) {
	fds := testenv.OpenFDs(t)
	defer func() {
		if n := testenv.OpenFDs(t); n != fds {
			t.Errorf("open fds %d before, %d after: a file was left open", fds, n)
		}
	}()
	for _, tt := range goldenCases {
		t.Run(tt.profile+"-on-"+tt.host, func(t *testing.T) {
			root := testenv.CopyTree(t, filepath.Join("testdata", "hosts", tt.host))
			h, err := ReadHost(root)
			if err != nil {
				t.Fatal(err)
			}
			p, err := Load(tt.profile, h, tt.conns)
			if err != nil {
				t.Fatal(err)
			}
			before := NewPlan(p, h)
			_, nChange, _ := before.Counts()
			if _, err := Verify(before); !errors.Is(err, sysctl.ErrMismatch) {
				t.Fatalf("Verify before apply = %v, want ErrMismatch", err)
			}
			state := filepath.Join(t.TempDir(), "state.json")
			n, err := Apply(before, state)
			if err != nil || n != nChange {
				t.Fatalf("Apply = %d, %v; want %d", n, err, nChange)
			}
			after := NewPlan(p, h)
			if _, err := Verify(after); err != nil {
				t.Fatalf("Verify after apply: %v", err)
			}
			if _, c, _ := after.Counts(); c != 0 {
				t.Fatalf("plan after apply still has %d changes", c)
			}
			// The drop-in now carries the profile's values.
			for _, l := range after.Lines {
				if l.Status == Carried && l.Current != l.Value {
					t.Errorf("%s: drop-in holds %q, want %q", l.Key, l.Current, l.Value)
				}
			}
			if n, err := Rollback(state); err != nil || n != nChange {
				t.Fatalf("Rollback = %d, %v", n, err)
			}
			got, want := currents(NewPlan(p, h)), currents(before)
			for k, v := range want {
				if got[k] != v {
					t.Errorf("after rollback %s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

func TestApplyRefusesInvalidPlan(t *testing.T) {
	tests := []struct {
		name  string
		spoil func(root string) error
		err   error
	}{
		{"missing key", func(root string) error { return os.Remove(filepath.Join(root, "proc/sys/net/ipv4/tcp_mem")) }, sysctl.ErrUnknownKey},
		{"read-only key", func(root string) error {
			return os.Chmod(filepath.Join(root, "proc/sys/net/ipv4/tcp_fin_timeout"), 0o444)
		}, sysctl.ErrReadOnly},
		{"read-only sysfs file", func(root string) error {
			return os.Chmod(filepath.Join(root, "sys/class/net/eth0/queues/rx-0/rps_cpus"), 0o444)
		}, sysctl.ErrReadOnly},
		{"garbage current value", func(root string) error {
			return os.WriteFile(filepath.Join(root, "proc/sys/net/ipv4/tcp_rmem"), []byte("lots\n"), 0o644)
		}, sysctl.ErrBadValue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := testenv.CopyTree(t, filepath.Join("testdata", "hosts", "dev-2c"))
			if err := tt.spoil(root); err != nil {
				t.Fatal(err)
			}
			h, err := ReadHost(root)
			if err != nil {
				t.Fatal(err)
			}
			p, err := Load("dev", h, 0)
			if err != nil {
				t.Fatal(err)
			}
			pl := NewPlan(p, h)
			before := currents(pl)
			state := filepath.Join(t.TempDir(), "state.json")
			if _, err := Apply(pl, state); !errors.Is(err, ErrPlan) || !errors.Is(err, tt.err) {
				t.Fatalf("Apply = %v, want ErrPlan and %v", err, tt.err)
			}
			if got := currents(NewPlan(p, h)); !equalMaps(got, before) {
				t.Fatalf("host changed by a refused apply")
			}
			if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("state file written by a refused apply")
			}
		})
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestFilter(t *testing.T) {
	h := fakeHost(t, "dev-2c")
	p, err := Load("dev", h, 0)
	if err != nil {
		t.Fatal(err)
	}
	pl := NewPlan(p, h).Filter([]string{"net.ipv4.tcp_keepalive_", DropInPath})
	var keys []string
	for _, l := range pl.Lines {
		keys = append(keys, l.Key)
	}
	want := "net.ipv4.tcp_keepalive_time net.ipv4.tcp_keepalive_intvl net.ipv4.tcp_keepalive_probes RLIMIT_NOFILE GOMAXPROCS GOGC GOMEMLIMIT " + DropInPath
	if strings.Join(keys, " ") != want {
		t.Fatalf("filtered keys = %v", keys)
	}
}

// TestAutoWithoutConns: auto sizes the connection target from the host's
// RAM at the seed host's ratio (2M in 100 GiB) when --conns is not given.
func TestAutoWithoutConns(t *testing.T) {
	h := fakeHost(t, "dev-2c") // 4 GiB
	p, err := Load("auto", h, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(80_000); p.Sizing.Conns != want {
		t.Fatalf("auto on 4 GiB: %d connections, want %d (80,000)", p.Sizing.Conns, want)
	}
	seed := fakeHost(t, "24c-100g")
	if p, err := Load("auto", seed, 0); err != nil || p.Sizing.Conns != 2_000_000 {
		t.Fatalf("auto on the seed host: %d connections (%v), want 2,000,000", p.Sizing.Conns, err)
	}
	if got := autoConns(32 << 20); got != 1_000 {
		t.Fatalf("auto on 32 MiB: %d, want the floor 1,000", got)
	}
}

// TestNoSystemdNoDropIn: on a host without /run/systemd/system the plan
// proposes no edged.service drop-in, the settings it would carry say where
// they go instead, and export --format systemd refuses.
func TestNoSystemdNoDropIn(t *testing.T) {
	root := testenv.CopyTree(t, filepath.Join("testdata", "hosts", "dev-2c"))
	if err := os.RemoveAll(filepath.Join(root, "run")); err != nil {
		t.Fatal(err)
	}
	h, err := ReadHost(root)
	if err != nil || h.Systemd {
		t.Fatalf("ReadHost: systemd %v, %v", h.Systemd, err)
	}
	if !fakeHost(t, "dev-2c").Systemd {
		t.Fatal("the fake dev-2c host (with run/systemd/system) reads as without systemd")
	}
	p, err := Load("dev", h, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.Setting(DropInPath); ok {
		t.Fatal("a drop-in proposed on a host without systemd")
	}
	if s, ok := p.Setting("RLIMIT_NOFILE"); !ok || !strings.Contains(s.Reason, "no systemd") {
		t.Fatalf("RLIMIT_NOFILE reason %q does not say where it goes", s.Reason)
	}
	if err := Export(io.Discard, p, h, "systemd"); !errors.Is(err, ErrFormat) {
		t.Fatalf("export systemd without systemd: %v, want ErrFormat", err)
	}
}
