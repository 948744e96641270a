package steer

import "fmt"

// MaxGroups is the most NIC groups one Lookup may have (the match is
// unrolled in the program; a host has a handful of NICs and services).
const MaxGroups = 16

// NICGroup sends TCP connections that arrive on one interface (and port)
// to one SO_REUSEPORT listener group.
type NICGroup struct {
	// Name labels the group in status output (at most 15 bytes kept).
	Name string
	// Ifindex is the arriving interface (net.InterfaceByName(...).Index).
	Ifindex int
	// Port is the destination port to match; 0 matches every port.
	Port uint16
	// Listeners are the group's listening sockets, in steering order: the
	// first one still open receives the connection, and then the group's
	// reuseport program (see Attach) picks the loop.
	Listeners []int
}

// LookupConfig describes an SK_LOOKUP attachment.
type LookupConfig struct {
	// NetnsPath names the network namespace to attach to, e.g.
	// /proc/self/ns/net (the default when empty) or /run/netns/NAME.
	NetnsPath string
	// Groups are matched in order; the first group whose Ifindex and Port
	// match takes the connection.
	Groups []NICGroup
	// PinPath, if set, is a bpffs directory for ReadStatus (see Config).
	PinPath string
}

// GroupStats is one group's view in Lookup.Stats.
type GroupStats struct {
	Name     string
	Ifindex  int
	Port     uint16
	Assigned uint64 // connections assigned to the group's listeners
}

func (c *LookupConfig) validate() error {
	if len(c.Groups) == 0 || len(c.Groups) > MaxGroups {
		return fmt.Errorf("check lookup config: %w: %d groups, want 1..%d", ErrBadConfig, len(c.Groups), MaxGroups)
	}
	type key struct {
		ifindex int
		port    uint16
	}
	seen := map[key]int{}
	for i, g := range c.Groups {
		if g.Ifindex <= 0 {
			return fmt.Errorf("check lookup config: %w: group %d (%s) has ifindex %d", ErrBadConfig, i, g.Name, g.Ifindex)
		}
		if n := len(g.Listeners); n == 0 || n > MaxLoops {
			return fmt.Errorf("check lookup config: %w: group %d (%s) has %d listeners, want 1..%d", ErrBadConfig, i, g.Name, n, MaxLoops)
		}
		k := key{g.Ifindex, g.Port}
		if j, dup := seen[k]; dup {
			return fmt.Errorf("check lookup config: %w: groups %d and %d both match ifindex %d port %d", ErrBadConfig, j, i, g.Ifindex, g.Port)
		}
		seen[k] = i
		for _, fd := range g.Listeners {
			if fd < 0 {
				return fmt.Errorf("check lookup config: %w: group %d (%s) has fd %d", ErrBadConfig, i, g.Name, fd)
			}
		}
	}
	return nil
}
