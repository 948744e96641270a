package sysctl

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func changes(t *testing.T, f *FS, kv ...string) []Change {
	t.Helper()
	var out []Change
	for i := 0; i < len(kv); i += 2 {
		c, err := f.Change(kv[i], kv[i+1])
		if err != nil {
			t.Fatalf("Change(%s, %s): %v", kv[i], kv[i+1], err)
		}
		out = append(out, c)
	}
	return out
}

func TestApplyVerifyRollback(t *testing.T) {
	root := fakeTree(t, map[string]string{
		"proc/sys/net/core/somaxconn":                "4096\n",
		"proc/sys/net/ipv4/tcp_mem":                  "287898\t383867\t575796\n",
		"proc/sys/fs/nr_open":                        "1048576\n",
		"sys/kernel/mm/transparent_hugepage/enabled": "[always] madvise never\n",
	})
	sys, fsys := New(filepath.Join(root, "proc/sys")), New(filepath.Join(root, "sys"))
	etc := New(filepath.Join(root, "etc"))
	state := filepath.Join(root, "state", "tune.json")
	before := snapshot(t, root)

	cs := changes(t, sys, "net.core.somaxconn", "65535", "net.ipv4.tcp_mem", "1 2 3", "fs.nr_open", "1048576")
	cs = append(cs, changes(t, fsys, "kernel/mm/transparent_hugepage/enabled", "madvise")...)
	cs = append(cs, changes(t, etc, "systemd/system/edged.service.d/50-tune.conf", "[Service]\nLimitNOFILE=3145728\n")...)

	if _, err := Verify(cs); !errors.Is(err, ErrMismatch) {
		t.Fatalf("Verify before apply = %v, want ErrMismatch", err)
	}
	n, err := Apply(cs, state)
	if err != nil || n != 4 {
		t.Fatalf("Apply = %d, %v; want 4 keys (nr_open unchanged)", n, err)
	}
	if bad, err := Verify(cs); err != nil {
		t.Fatalf("Verify after apply: %v %+v", err, bad)
	}
	if got := readFile(t, filepath.Join(root, "proc/sys/net/ipv4/tcp_mem")); got != "1\t2\t3\n" {
		t.Fatalf("tcp_mem file = %q", got)
	}
	st, ok, err := ReadState(state)
	if !ok || err != nil || len(st.Entries) != 4 || st.Entries[0].Value != "4096" || st.Entries[0].Applied != "65535" {
		t.Fatalf("state = %+v, %v, %v", st, ok, err)
	}

	// A second apply on top keeps the original values in the state file.
	n, err = Apply(changes(t, sys, "net.core.somaxconn", "8192"), state)
	if err != nil || n != 1 {
		t.Fatalf("second Apply = %d, %v", n, err)
	}
	if st, _, _ := ReadState(state); st.Entries[0].Value != "4096" || st.Entries[0].Applied != "8192" {
		t.Fatalf("state after second apply = %+v", st.Entries[0])
	}

	n, err = Rollback(state)
	if err != nil || n != 4 {
		t.Fatalf("Rollback = %d, %v", n, err)
	}
	// A fake tree does not redraw the brackets as the kernel does, so the
	// Choice file is compared by value.
	thp := filepath.Join(root, "sys/kernel/mm/transparent_hugepage/enabled")
	if v, err := fsys.Read("kernel/mm/transparent_hugepage/enabled"); v != "always" || err != nil {
		t.Fatalf("THP after rollback = %q, %v", v, err)
	}
	after := snapshot(t, root)
	delete(before, thp)
	delete(after, thp)
	if !mapsEqual(before, after) {
		t.Fatalf("tree after rollback differs:\nbefore %q\nafter  %q", before, after)
	}
	if _, err := Rollback(state); !errors.Is(err, ErrState) {
		t.Fatalf("second Rollback = %v, want ErrState", err)
	}
}

// TestApplyRefusesBeforeChanging: every refusal comes before the first
// write, and no state file is left behind.
func TestApplyRefusesBeforeChanging(t *testing.T) {
	tests := []struct {
		name  string
		spoil func(t *testing.T, root string, cs []Change) []Change
		err   error
	}{
		{"made read-only after planning", func(t *testing.T, root string, cs []Change) []Change {
			if err := os.Chmod(filepath.Join(root, "net/ipv4/tcp_fin_timeout"), 0o444); err != nil {
				t.Fatal(err)
			}
			return cs
		}, ErrReadOnly},
		{"changed after planning", func(t *testing.T, root string, cs []Change) []Change {
			if err := os.WriteFile(filepath.Join(root, "net/ipv4/tcp_fin_timeout"), []byte("30\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			return cs
		}, ErrChanged},
		{"removed after planning", func(t *testing.T, root string, cs []Change) []Change {
			if err := os.Remove(filepath.Join(root, "net/ipv4/tcp_fin_timeout")); err != nil {
				t.Fatal(err)
			}
			return cs
		}, ErrUnknownKey},
		{"hand-built bad value", func(t *testing.T, root string, cs []Change) []Change {
			cs[1].To = "70000"
			return cs
		}, ErrOutOfRange},
		{"key twice", func(t *testing.T, root string, cs []Change) []Change {
			return append(cs, cs[0])
		}, ErrBadValue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := fakeTree(t, map[string]string{
				"net/core/somaxconn":            "4096\n",
				"net/ipv4/tcp_fin_timeout":      "60\n",
				"net/ipv4/tcp_keepalive_probes": "9\n",
			})
			f := New(root)
			cs := changes(t, f, "net.core.somaxconn", "65535", "net.ipv4.tcp_keepalive_probes", "5", "net.ipv4.tcp_fin_timeout", "15")
			cs = tt.spoil(t, root, cs)
			before := snapshot(t, root)
			state := filepath.Join(t.TempDir(), "state.json")
			n, err := Apply(cs, state)
			if !errors.Is(err, tt.err) || n != 0 {
				t.Fatalf("Apply = %d, %v; want 0, %v", n, err, tt.err)
			}
			if after := snapshot(t, root); !mapsEqual(before, after) {
				t.Fatalf("tree changed by a refused apply")
			}
			if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("state file left behind: %v", err)
			}
		})
	}
}

func TestRollbackBadState(t *testing.T) {
	dir := t.TempDir()
	tests := []struct{ name, content string }{
		{"not json", "{"},
		{"wrong version", `{"version": 99, "entries": []}`},
		{"unknown type", `{"version": 1, "entries": [{"key": "a", "path": "` + dir + `/a", "type": "blob", "existed": true, "value": "1"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, tt.name+".json")
			if err := os.WriteFile(p, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := Rollback(p); !errors.Is(err, ErrState) {
				t.Fatalf("Rollback = %v, want ErrState", err)
			}
			if _, err := os.Stat(p); err != nil {
				t.Fatalf("state file must stay after a failed rollback: %v", err)
			}
		})
	}
}

// TestOutOfRangeCurrentIsFixable: a current value outside the bounds we
// write (here tcp_fin_timeout 700 > 600) still reads, so a plan can fix it.
func TestOutOfRangeCurrentIsFixable(t *testing.T) {
	root := fakeTree(t, map[string]string{"net/ipv4/tcp_fin_timeout": "700\n", "net/ipv4/tcp_rmem": "9 8 7\n"})
	f := New(root)
	cs := changes(t, f, "net.ipv4.tcp_fin_timeout", "15", "net.ipv4.tcp_rmem", "4096 8192 262144")
	if cs[0].From != "700" || cs[1].From != "9 8 7" {
		t.Fatalf("From = %q, %q", cs[0].From, cs[1].From)
	}
	if _, err := Apply(cs, filepath.Join(t.TempDir(), "s.json")); err != nil {
		t.Fatal(err)
	}
}
