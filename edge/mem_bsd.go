//go:build darwin || freebsd

package edge

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// physMem returns the host's physical memory in bytes (sysctl hw.memsize on
// macOS, hw.physmem on FreeBSD); 0 if unknown.
func physMem() uint64 {
	name := "hw.physmem"
	if runtime.GOOS == "darwin" {
		name = "hw.memsize"
	}
	n, err := unix.SysctlUint64(name)
	if err != nil {
		return 0
	}
	return n
}
