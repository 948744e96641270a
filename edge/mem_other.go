//go:build !linux && !darwin && !freebsd

package edge

// physMem is unknown here: DefaultStoreMaxBytes assumes fallbackPhysMem.
func physMem() uint64 { return 0 }
