package steer

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// bpffs mounts a private bpffs for the test's pins.
func bpffs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount bpffs: %v", err)
		}
	})
	return dir
}

// TestPinnedStatus reads a pinned group and lookup the way `edgectl steer
// status` does, from their pins, and checks that Close removes them.
func TestPinnedStatus(t *testing.T) {
	ns := newNetns(t)
	root := bpffs(t)
	fds, port := listenGroup(t, ns, 2, loopback, 0)
	s, err := Attach(Config{Policy: PolicyLeast, Listeners: fds, LoopCPUs: []int{1, 0}, SockMap: true,
		PinPath: filepath.Join(root, "client")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a := startAcceptors(t, fds, s, nil)
	if err := dialMany(ns, loopback, port, 100, ""); err != nil {
		t.Fatal(err)
	}
	a.waitTotal(t, 100)
	l, err := AttachLookup(LookupConfig{NetnsPath: "/run/netns/" + ns.name, PinPath: filepath.Join(root, "nic"),
		Groups: []NICGroup{{Name: "loopback", Ifindex: 1, Port: uint16(port), Listeners: fds}}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := dialMany(ns, loopback, port, 10, ""); err != nil {
		t.Fatal(err)
	}
	a.waitTotal(t, 110)

	st, err := ReadStatus(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Groups) != 1 || len(st.Lookups) != 1 {
		t.Fatalf("status %+v: want one group and one lookup", st)
	}
	g := st.Groups[0]
	stats, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if g.Policy != PolicyLeast || g.Port != port || g.PID != os.Getpid() || g.Program.Name != "edged_least" ||
		g.SocketMap != "sockmap" || len(g.Loops) != 2 || g.Loops[0].CPU != 1 || g.Loops[1].CPU != 0 {
		t.Errorf("group status %+v", g)
	}
	for i, ls := range g.Loops {
		if ls.Accepts != stats[i].Accepts || ls.Live != stats[i].Live {
			t.Errorf("loop %d: pinned %+v, Stats %+v", i, ls, stats[i])
		}
	}
	if lk := st.Lookups[0]; lk.Program.Name != "edged_niclookup" || len(lk.Groups) != 1 ||
		lk.Groups[0].Name != "loopback" || lk.Groups[0].Assigned != 10 {
		t.Errorf("lookup status %+v: want 10 assigned to group loopback", lk)
	}
	var out bytes.Buffer
	if err := StatusReport(&out, root); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "policy least") || !strings.Contains(out.String(), "loopback") {
		t.Errorf("report:\n%s", out.String())
	}

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if st, err := ReadStatus(root); err != nil || len(st.Groups)+len(st.Lookups) != 0 {
		t.Fatalf("after Close: %+v, %v; want no pins", st, err)
	}
	if _, err := ReadStatus(filepath.Join(root, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ReadStatus(missing): %v, want os.ErrNotExist", err)
	}
}
