package edge

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// cgroupMemMax is the cgroup v2 memory limit of this process's cgroup as
// seen from inside a container (the usual mount); a variable for tests.
var cgroupMemMax = "/sys/fs/cgroup/memory.max"

// physMem returns the memory this process may use in bytes: the host's
// physical memory (sysinfo(2)), or the cgroup v2 memory.max if lower ("max"
// or an unreadable file means no limit); 0 if unknown.
func physMem() uint64 {
	var n uint64
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err == nil {
		n = uint64(si.Totalram) * uint64(si.Unit)
	}
	if b, err := os.ReadFile(cgroupMemMax); err == nil {
		if lim, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && lim > 0 && (n == 0 || lim < n) {
			n = lim
		}
	}
	return n
}
