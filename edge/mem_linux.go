package edge

import "golang.org/x/sys/unix"

// physMem returns the host's physical memory in bytes (sysinfo(2)); 0 if
// unknown.
func physMem() uint64 {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0
	}
	return uint64(si.Totalram) * uint64(si.Unit)
}
