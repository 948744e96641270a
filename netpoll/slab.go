package netpoll

import (
	"github.com/edgedhq/edged/internal/slab"
	"github.com/edgedhq/edged/internal/wheel"
)

// A loop's connection records and timers: a pointer-free slab of Conn
// records indexed by slot with a generation (internal/slab) and a
// hierarchical timer wheel keyed by slot (internal/wheel).
type (
	connSlab   = slab.Slab[Conn]
	timerWheel = wheel.Wheel
)

const (
	// SlabMaxSlots is the most connections one loop's slab can hold.
	SlabMaxSlots = slab.MaxSlots
	// genMask masks the generation a Handle carries.
	genMask = slab.GenMask
)

// ErrSlabFull is returned when every slot of a loop's slab is in use.
var ErrSlabFull = slab.ErrFull
