package main

import (
	"path/filepath"
	"strings"
	"testing"

	steer "github.com/edgedhq/edged/ebpf"
	"github.com/edgedhq/edged/internal/testenv"
	"golang.org/x/sys/unix"
)

func TestSteerHelpGolden(t *testing.T) {
	helpGolden(t, []helpCase{
		{"steer-help.golden", []string{"steer", "--help"}},
		{"steer-status-help.golden", []string{"steer", "status", "--help"}},
	})
}

func TestSteerBadInput(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no noun", []string{"steer"}, exitUsage, "missing noun"},
		{"unknown noun", []string{"steer", "attach"}, exitUsage, `unknown noun "attach"`},
		{"extra argument", []string{"steer", "status", "x"}, exitUsage, `unexpected argument "x"`},
		{"empty pin", []string{"steer", "status", "--pin", ""}, exitUsage, "--pin must name a directory"},
		{"no pins", []string{"steer", "status", "--pin", "/nonexistent/edged"}, exitFailed, "no such file or directory"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut, code := edgectl(tt.args...)
			if code != tt.code || !strings.Contains(errOut, tt.want) {
				t.Fatalf("edgectl %v: exit %d, stderr %q; want exit %d mentioning %q", tt.args, code, errOut, tt.code, tt.want)
			}
		})
	}
}

// TestSteerStatusPinned attaches a real steering group on loopback with
// pins on a private bpffs and reads it back through the command.
func TestSteerStatusPinned(t *testing.T) {
	testenv.RequirePriv(t, "loading BPF programs and mounting bpffs")
	root := t.TempDir()
	if err := unix.Mount("bpf", root, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(root, 0) })
	fds := make([]int, 2)
	port := 0
	for i := range fds {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fds[i] = fd
		t.Cleanup(func() { unix.Close(fd) })
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			t.Fatal(err)
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port}); err != nil {
			t.Fatal(err)
		}
		if err := unix.Listen(fd, 16); err != nil {
			t.Fatal(err)
		}
		sa, _ := unix.Getsockname(fd)
		port = sa.(*unix.SockaddrInet4).Port
	}
	s, err := steer.Attach(steer.Config{Policy: steer.PolicyLeast, Listeners: fds, LoopCPUs: []int{0, 1}, PinPath: filepath.Join(root, "client")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.SetLive(1, 5)
	out, errOut, code := edgectl("steer", "status", "--pin", root)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"group client: policy least", "edged_least (skreuseport", "1      1    0        5"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
