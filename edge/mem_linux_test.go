package edge

import (
	"os"
	"path/filepath"
	"testing"
)

// TestPhysMemCgroup: a cgroup memory.max below physical memory wins; "max"
// means no limit.
func TestPhysMemCgroup(t *testing.T) {
	old := cgroupMemMax
	t.Cleanup(func() { cgroupMemMax = old })
	cgroupMemMax = filepath.Join(t.TempDir(), "memory.max")
	os.WriteFile(cgroupMemMax, []byte("max\n"), 0o644)
	host := physMem()
	if host == 0 {
		t.Skip("sysinfo reports no memory")
	}
	os.WriteFile(cgroupMemMax, []byte("1073741824\n"), 0o644)
	if got := physMem(); got != min(host, 1<<30) {
		t.Fatalf("with memory.max 1 GiB: %d, want %d", got, min(host, 1<<30))
	}
	os.WriteFile(cgroupMemMax, []byte("1073741824000000\n"), 0o644)
	if got := physMem(); got != host {
		t.Fatalf("with memory.max above the host: %d, want the host's %d", got, host)
	}
}
