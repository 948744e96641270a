//go:build unix

package obs

import "syscall"

// readRusage fills the CPU times and context switches of the whole process
// (getrusage(2) RUSAGE_SELF sums every thread).
func readRusage(s *procSample) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return
	}
	s.haveRusage = true
	s.cpuUser = float64(ru.Utime.Nano()) / 1e9
	s.cpuSys = float64(ru.Stime.Nano()) / 1e9
	s.ctxSwitches = float64(ru.Nvcsw + ru.Nivcsw)
}
