package capture

import (
	"errors"

	"github.com/edgedhq/edged/internal/unsupported"
)

// Sentinel errors; functions name the ones they return.
var (
	// ErrNotSupported: packet capture is implemented for Linux only; it
	// wraps errors.ErrUnsupported.
	ErrNotSupported = unsupported.New("packet capture is not supported on this system")
	// ErrLinkType: the interface or capture file has a link type that this
	// package cannot decode.
	ErrLinkType = errors.New("unsupported link type")
	// ErrBadCapture: the capture file is malformed or truncated; the error
	// text names the packet number (1-based, as tcpdump and Wireshark count).
	ErrBadCapture = errors.New("malformed capture")
	// ErrNoSessions: the capture holds no replayable MQTT session.
	ErrNoSessions = errors.New("no MQTT sessions in capture")
	// ErrBadOptions: an option is out of range.
	ErrBadOptions = errors.New("bad options")
)
