//go:build !linux

package steer

import (
	"fmt"
	"runtime"
)

// Lookup is an attached SK_LOOKUP program; outside Linux there is none.
type Lookup struct{}

// AttachLookup returns ErrBadConfig for an invalid config and otherwise
// ErrUnsupported outside Linux: bind each group to its NIC's address there.
func AttachLookup(cfg LookupConfig) (*Lookup, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("attach lookup on %s: %w", runtime.GOOS, ErrUnsupported)
}

// Stats returns ErrUnsupported outside Linux.
func (*Lookup) Stats() ([]GroupStats, uint64, error) { return nil, 0, ErrUnsupported }

// Close does nothing outside Linux.
func (*Lookup) Close() error { return nil }
