package obs

import (
	"errors"

	"github.com/edgedhq/edged/internal/unsupported"
)

// Sentinel errors.
var (
	// ErrUnknownKnob: no knob has that name.
	ErrUnknownKnob = errors.New("unknown knob")
	// ErrReadOnly: the knob cannot be set.
	ErrReadOnly = errors.New("knob is read-only")
	// ErrBadValue: the value does not parse or is out of range.
	ErrBadValue = errors.New("bad knob value")
	// ErrUnknownMode: StartProfile was given a mode it does not know.
	ErrUnknownMode = errors.New("unknown profile mode")
	// ErrProfiling: a whole-run profile is already running.
	ErrProfiling = errors.New("a profile is already running")
	// ErrRouteTaken: the mux already serves one of the routes Mount adds.
	ErrRouteTaken = errors.New("admin route already registered")
	// ErrUnsupported: the figure or feature does not exist on this OS; it
	// wraps errors.ErrUnsupported.
	ErrUnsupported = unsupported.New("not supported on this system")
)
