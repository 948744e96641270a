package sysctl

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeTree writes files (key path -> content) under a new temporary root.
func fakeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, content := range files {
		full := filepath.Join(root, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSpecParse(t *testing.T) {
	tcpMem, _ := Lookup("net.ipv4.tcp_mem")
	ports, _ := Lookup("net.ipv4.ip_local_port_range")
	tw, _ := Lookup("net.ipv4.tcp_tw_reuse")
	thp, _ := Lookup("kernel/mm/transparent_hugepage/enabled")
	tests := []struct {
		name string
		spec Spec
		in   string
		want Value
		err  error
	}{
		{"int", Spec{}, " 4096\n", "4096", nil},
		{"int negative unbounded", Spec{}, "-1", "-1", nil},
		{"int not a number", Spec{}, "abc", "", ErrBadValue},
		{"tcp_mem tabs", tcpMem, "287898\t383867\t575796\n", "287898 383867 575796", nil},
		{"tcp_mem too few", tcpMem, "1 2", "", ErrBadValue},
		{"tcp_mem decreasing", tcpMem, "3 2 1", "", ErrOutOfRange},
		{"tcp_mem zero", tcpMem, "0 2 3", "", ErrOutOfRange},
		{"port range", ports, "1024 65535", "1024 65535", nil},
		{"port range above 65535", ports, "1024 70000", "", ErrOutOfRange},
		{"port range reversed", ports, "60000 1024", "", ErrOutOfRange},
		{"tw_reuse 3", tw, "3", "", ErrOutOfRange},
		{"mask kernel groups", Spec{Type: CPUMask}, "00000000,00ffffff\n", "ffffff", nil},
		{"mask zero", Spec{Type: CPUMask}, "00\n", "0", nil},
		{"mask not hex", Spec{Type: CPUMask}, "xyz", "", ErrBadValue},
		{"list", Spec{Type: CPUList}, "3,0-2,8\n", "0-3,8", nil},
		{"list bad range", Spec{Type: CPUList}, "5-2", "", ErrBadValue},
		{"list huge", Spec{Type: CPUList}, "0-99999999", "", ErrOutOfRange},
		{"choice kernel form", thp, "always [madvise] never\n", "madvise", nil},
		{"choice word", thp, "never", "never", nil},
		{"choice unknown", thp, "sometimes", "", ErrBadValue},
		{"text word", Spec{Type: Text}, "cubic\n", "cubic", nil},
		{"text file", Spec{Type: Text, Create: true}, "a\nb\n", "a\nb\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.spec.Parse(tt.in)
			if !errors.Is(err, tt.err) {
				t.Fatalf("Parse(%q) error = %v, want %v", tt.in, err, tt.err)
			}
			if got != tt.want {
				t.Fatalf("Parse(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestCPUFormat(t *testing.T) {
	tests := []struct {
		cpus []int
		mask string
		kern string
		list string
	}{
		{[]int{0}, "1", "1", "0"},
		{[]int{0, 1, 2, 3, 8}, "10f", "10f", "0-3,8"},
		{[]int{0, 40}, "10000000001", "100,00000001", "0,40"},
	}
	for _, tt := range tests {
		t.Run(tt.list, func(t *testing.T) {
			if got := MaskOf(tt.cpus); got != tt.mask {
				t.Errorf("MaskOf = %q, want %q", got, tt.mask)
			}
			if got := FormatCPUMask(tt.mask); got != tt.kern {
				t.Errorf("FormatCPUMask = %q, want %q", got, tt.kern)
			}
			if got := FormatCPUList(tt.cpus); got != tt.list {
				t.Errorf("FormatCPUList = %q, want %q", got, tt.list)
			}
		})
	}
}

func TestFSReadWrite(t *testing.T) {
	root := fakeTree(t, map[string]string{
		"net/core/somaxconn":               "4096\n",
		"net/ipv4/tcp_rmem":                "4096\t131072\t6291456\n",
		"net/ipv4/conf/eth0.100/rp_filter": "1\n",
		"net/ipv4/tcp_congestion_control":  "cubic\n",
		"net/core/rmem_default":            "212992\n",
		"net/ipv4/some_future_pair":        "1 2\n",
	})
	if err := os.Chmod(filepath.Join(root, "net/core/rmem_default"), 0o444); err != nil {
		t.Fatal(err)
	}
	f := New(root)
	tests := []struct {
		name, key, value string
		err              error
		file             string // wanted file content after the write
	}{
		{"int", "net.core.somaxconn", "65535", nil, "65535\n"},
		{"triple", "net.ipv4.tcp_rmem", "4096 8192 262144", nil, "4096\t8192\t262144\n"},
		{"slash form with dot", "net/ipv4/conf/eth0.100/rp_filter", "2", nil, "2\n"},
		{"text", "net.ipv4.tcp_congestion_control", "bbr", nil, "bbr\n"},
		{"unknown key inferred shape", "net.ipv4.some_future_pair", "3 4", nil, "3\t4\n"},
		{"unknown key inferred shape wrong", "net.ipv4.some_future_pair", "3", ErrBadValue, "1 2\n"},
		{"no such key", "net.core.no_such_key", "1", ErrUnknownKey, ""},
		{"directory", "net.core", "1", ErrUnknownKey, ""},
		{"escape", "../../etc/passwd", "1", ErrUnknownKey, ""},
		{"read-only", "net.core.rmem_default", "1", ErrReadOnly, "212992\n"},
		{"out of range", "net.ipv4.tcp_rmem", "0 1 2", ErrOutOfRange, ""},
		{"not a number", "net.core.somaxconn", "lots", ErrBadValue, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := map[string]string{}
			if tt.err != nil {
				before = snapshot(t, root)
			}
			err := f.Write(tt.key, tt.value)
			if !errors.Is(err, tt.err) {
				t.Fatalf("Write(%s, %q) error = %v, want %v", tt.key, tt.value, err, tt.err)
			}
			if err != nil {
				if !strings.Contains(err.Error(), tt.key) {
					t.Errorf("error %q does not name the key", err)
				}
				if after := snapshot(t, root); !mapsEqual(before, after) {
					t.Fatalf("tree changed after a refused write")
				}
				return
			}
			p, _ := f.Path(tt.key)
			if got := readFile(t, p); got != tt.file {
				t.Fatalf("file = %q, want %q", got, tt.file)
			}
			v, err := f.Read(tt.key)
			if err != nil || string(v) != strings.Join(strings.Fields(tt.value), " ") {
				t.Fatalf("Read = %q, %v; want %q", v, err, tt.value)
			}
		})
	}
}

// snapshot returns every file's content under root.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		out[p] = readFile(t, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
