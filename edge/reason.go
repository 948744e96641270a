package edge

import (
	"errors"
	"io"
	"sync/atomic"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/internal/edgetls"
	"github.com/edgedhq/edged/internal/edgews"
	"github.com/edgedhq/edged/netpoll"
)

// Reason classifies why a connection was closed. Every close is counted by
// reason (Stats.Closes) so the observability work can export them.
type Reason uint8

// Close reasons. Their names (Reason.String) are stable metric labels.
const (
	ReasonEOF                 Reason = iota // the peer closed the connection
	ReasonDisconnect                        // the client sent DISCONNECT
	ReasonShutdown                          // the server is stopping
	ReasonIOError                           // a socket error
	ReasonMalformed                         // a packet the codec rejected
	ReasonOversize                          // a packet over the maximum packet size
	ReasonBadUTF8                           // an invalid UTF-8 string or topic
	ReasonProtocol                          // a protocol violation (e.g. a second CONNECT)
	ReasonHandshakeTimeout                  // CONNECT did not arrive in time
	ReasonKeepalive                         // silent for 1.5 x keepalive
	ReasonBacklog                           // a client that does not read: output over its cap
	ReasonFlood                             // more PUBLISH packets than the rate limit allows
	ReasonNotAuthorized                     // a PUBLISH the ACLs refuse
	ReasonConnRefused                       // CONNACK with a non-zero return code
	ReasonTakeover                          // a newer connection took the session over
	ReasonMaxConns                          // over the connection limit
	ReasonStoreFull                         // a direct message or read receipt over the store cap (Config.StoreMaxBytes), not acknowledged
	ReasonNewInboxRate                      // creating inboxes for never-seen users faster than Config.NewInboxRate
	ReasonPartialTimeout                    // an incomplete packet not completed within Config.PartialTimeout
	ReasonPartialBudget                     // an incomplete packet that would push all partial packets past Config.MaxPartialBytes
	ReasonTLSNotTLS                         // TLS listener: the first bytes were not a TLS record (plain MQTT on a TLS port)
	ReasonTLSHandshake                      // TLS handshake failed: truncated, malformed, our certificate refused, no common parameters
	ReasonTLSHandshakeTimeout               // TLS handshake not completed within Config.HandshakeTimeout
	ReasonTLSClientCert                     // client certificate missing, expired or not signed by a client CA
	ReasonTLSBusy                           // too many TLS handshakes in progress (the handshake cap)
	ReasonTLSRecord                         // a TLS record that did not authenticate or parse, or a refused renegotiation
	ReasonTLSAlert                          // the client sent a fatal TLS alert
	ReasonStoreUnavailable                  // a PUBLISH that needs the data directory while writes to it fail (a full disk), not acknowledged
	ReasonWSBadHandshake                    // WebSocket listener: not a valid HTTP upgrade request (malformed, no key, not GET, data before the 101)
	ReasonWSBadPath                         // WebSocket upgrade to another path than the listener's
	ReasonWSBadVersion                      // WebSocket upgrade with a Sec-WebSocket-Version other than 13
	ReasonWSNoSubprotocol                   // WebSocket upgrade that does not offer the subprotocol "mqtt"
	ReasonWSHandshakeTimeout                // WebSocket upgrade not completed within the handshake timeout
	ReasonWSBusy                            // too many WebSocket upgrades in progress (the upgrade cap)
	ReasonWSBadFrame                        // a frame RFC 6455 forbids: reserved bits, unknown opcode, fragmented or long control frame, stray continuation, bad close frame
	ReasonWSTextFrame                       // a text frame (MQTT travels in binary frames)
	ReasonWSUnmasked                        // an unmasked frame from the client
	ReasonWSTooBig                          // a data frame over the frame size limit
	ReasonWSClose                           // the client sent a WebSocket close frame
	ReasonClusterUnavailable                // a PUBLISH for another node that the cluster could not store (no quorum, a partition), not acknowledged
	numReasons
)

var reasonNames = [numReasons]string{
	"eof", "disconnect", "shutdown", "io_error", "malformed", "oversize", "bad_utf8",
	"protocol", "handshake_timeout", "keepalive_timeout", "backlog", "publish_flood",
	"not_authorized", "connect_refused", "takeover", "max_connections",
	"store_full", "new_inbox_rate",
	"partial_timeout", "partial_budget",
	"tls_not_tls", "tls_handshake", "tls_handshake_timeout", "tls_client_cert", "tls_handshakes_busy",
	"tls_bad_record", "tls_alert", "store_unavailable",
	"ws_bad_handshake", "ws_bad_path", "ws_bad_version", "ws_no_subprotocol", "ws_handshake_timeout", "ws_handshakes_busy",
	"ws_bad_frame", "ws_text_frame", "ws_unmasked", "ws_too_big", "ws_close",
	"cluster_unavailable",
}

// wsFailReason maps an upgrade failure to its close reason.
var wsFailReason = [edgews.NumFails]Reason{
	edgews.FailRequest:     ReasonWSBadHandshake,
	edgews.FailPath:        ReasonWSBadPath,
	edgews.FailVersion:     ReasonWSBadVersion,
	edgews.FailSubprotocol: ReasonWSNoSubprotocol,
	edgews.FailTimeout:     ReasonWSHandshakeTimeout,
	edgews.FailBusy:        ReasonWSBusy,
}

// wsCloseCode is the status code of the close frame a WebSocket client
// gets when the server closes its connection for reason (RFC 6455 7.4.1).
func wsCloseCode(reason error) uint16 {
	switch classify(reason) {
	case ReasonOversize:
		return edgews.CloseTooBig
	case ReasonMalformed, ReasonBadUTF8, ReasonProtocol:
		return edgews.CloseProtocol
	case ReasonFlood, ReasonNotAuthorized, ReasonBacklog, ReasonMaxConns, ReasonNewInboxRate, ReasonPartialBudget:
		return edgews.ClosePolicy
	case ReasonShutdown:
		return edgews.CloseGoingAway
	}
	return edgews.CloseNormal
}

// tlsFailReason maps a handshake failure to its close reason.
var tlsFailReason = [edgetls.NumFails]Reason{
	edgetls.FailNotTLS:     ReasonTLSNotTLS,
	edgetls.FailHandshake:  ReasonTLSHandshake,
	edgetls.FailTimeout:    ReasonTLSHandshakeTimeout,
	edgetls.FailClientCert: ReasonTLSClientCert,
	edgetls.FailBusy:       ReasonTLSBusy,
}

func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// closeError is the close reason the server passes to netpoll's Conn.Close.
// The values are preallocated: closing a connection allocates nothing.
type closeError struct{ r Reason }

func (e *closeError) Error() string { return "edge: close: " + e.r.String() }

var closeErrs = func() (a [numReasons]*closeError) {
	for i := range a {
		a[i] = &closeError{Reason(i)}
	}
	return a
}()

func closeErr(r Reason) error { return closeErrs[r] }

// classify maps a close reason from netpoll to a Reason.
func classify(err error) Reason {
	var ce *closeError
	var wsUpgrade *edgews.UpgradeError
	switch {
	case errors.As(err, &ce):
		return ce.r
	case err == nil, errors.Is(err, io.EOF):
		return ReasonEOF
	case errors.Is(err, netpoll.ErrShutdown), errors.Is(err, netpoll.ErrClosed):
		return ReasonShutdown
	case errors.Is(err, netpoll.ErrBacklog):
		return ReasonBacklog
	case errors.Is(err, netpoll.ErrPendingFull):
		return ReasonOversize
	case errors.Is(err, netpoll.ErrPartialTimeout):
		return ReasonPartialTimeout
	case errors.Is(err, netpoll.ErrPartialBudget):
		return ReasonPartialBudget
	case errors.Is(err, edgetls.ErrRecord):
		return ReasonTLSRecord
	case errors.Is(err, edgetls.ErrAlert):
		return ReasonTLSAlert
	case errors.As(err, &wsUpgrade):
		return wsFailReason[wsUpgrade.Fail]
	case errors.Is(err, edgews.ErrBadFrame):
		return ReasonWSBadFrame
	case errors.Is(err, edgews.ErrTextFrame):
		return ReasonWSTextFrame
	case errors.Is(err, edgews.ErrUnmasked):
		return ReasonWSUnmasked
	case errors.Is(err, edgews.ErrTooBig):
		return ReasonWSTooBig
	case errors.Is(err, edgews.ErrPeerClose):
		return ReasonWSClose
	}
	return ReasonIOError
}

// decodeReason maps a codec error to a Reason.
func decodeReason(err error) Reason {
	switch {
	case errors.Is(err, mqtt.ErrPacketTooLarge):
		return ReasonOversize
	case errors.Is(err, mqtt.ErrUTF8):
		return ReasonBadUTF8
	}
	return ReasonMalformed
}

// closeNames are the closes' counter names by reason (Stats.Counters).
var closeNames = func() (n [numReasons]string) {
	for i := range n {
		n[i] = "closes_" + Reason(i).String()
	}
	return n
}()

// reasonCounters counts closes per reason.
type reasonCounters [numReasons]atomic.Uint64

func (rc *reasonCounters) snapshot() map[string]uint64 {
	m := make(map[string]uint64, numReasons)
	for i := range rc {
		m[Reason(i).String()] = rc[i].Load()
	}
	return m
}
