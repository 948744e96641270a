package edge

import (
	"math"
	"runtime/debug"
)

// Memory-derived defaults (README, "Client identifiers and limits").
const (
	// minStoreBytes is the floor of the default store cap, so that a small
	// host or a tiny GOMEMLIMIT still holds a useful number of messages.
	minStoreBytes = 64 << 20
	// fallbackPhysMem is assumed where the OS does not say (physMem 0).
	fallbackPhysMem = 4 << 30
)

// DefaultStoreMaxBytes is the default of Config.StoreMaxBytes: half the Go
// memory limit if one is set (GOMEMLIMIT or debug.SetMemoryLimit), else a
// quarter of physical memory (on Linux, of the cgroup v2 memory.max if
// that is lower); at least 64 MiB. Half, because with the default
// GOGC=100 the heap may grow to twice its live size before a collection;
// a quarter of physical memory without a limit also leaves room for the
// kernel's socket buffers and the per-connection state.
func DefaultStoreMaxBytes() int64 {
	limit := debug.SetMemoryLimit(-1) // -1 reads the limit without changing it
	var n int64
	if limit > 0 && limit != math.MaxInt64 {
		n = limit / 2
	} else {
		pm := physMem()
		if pm == 0 || pm > math.MaxInt64 {
			pm = fallbackPhysMem
		}
		n = int64(pm / 4)
	}
	return max(n, minStoreBytes)
}
