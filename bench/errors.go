package bench

import (
	"errors"

	"github.com/edgedhq/edged/internal/unsupported"
)

// Sentinel errors. Functions name in their documentation the ones they return.
var (
	// ErrNotSupported: the connection engine needs Linux (epoll); it wraps
	// errors.ErrUnsupported.
	ErrNotSupported = unsupported.New("edgebench engine not supported on this OS (needs Linux epoll)")
	// ErrMalformed: a packet from the server does not parse as MQTT 3.1.1.
	ErrMalformed = errors.New("malformed mqtt packet")
	// ErrTooLarge: a packet exceeds MaxPacket.
	ErrTooLarge = errors.New("mqtt packet too large")
	// ErrUnreachable: the target did not accept a TCP connection.
	ErrUnreachable = errors.New("target unreachable")
	// ErrBadOption: an option value is out of range or inconsistent.
	ErrBadOption = errors.New("bad option")
	// ErrWorker: a worker process failed.
	ErrWorker = errors.New("worker failed")
)
