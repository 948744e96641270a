//go:build !linux

package steer

import (
	"fmt"
	"runtime"
)

// kernel has no BPF state outside Linux.
type kernel struct{ live *liveArray }

func checkListeners([]int) error { return nil }

func attachKernel(Config, *liveArray) (*kernel, error) {
	return nil, fmt.Errorf("attach steering on %s: %w", runtime.GOOS, ErrUnsupported)
}

func (*kernel) bindLifetime(*Steering)        {}
func (*kernel) readAccepts([]LoopStats) error { return nil }
func (*kernel) misses() (uint64, error)       { return 0, nil }
func (*kernel) close() error                  { return nil }
