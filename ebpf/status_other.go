//go:build !linux

package steer

import (
	"fmt"
	"runtime"
)

// ReadStatus returns ErrUnsupported outside Linux.
func ReadStatus(root string) (Status, error) {
	return Status{}, fmt.Errorf("read steering status on %s: %w", runtime.GOOS, ErrUnsupported)
}

// OnBPFFS reports whether dir is on a mounted BPF filesystem; never outside Linux.
func OnBPFFS(dir string) bool { return false }

// PruneStale returns ErrUnsupported outside Linux.
func PruneStale(root string) ([]string, error) {
	return nil, fmt.Errorf("prune steering pins on %s: %w", runtime.GOOS, ErrUnsupported)
}
