//go:build !linux

package capture

import "fmt"

func openSource(iface string, port int) (packetSource, error) {
	return nil, fmt.Errorf("capture on %s: %w", iface, ErrNotSupported)
}
