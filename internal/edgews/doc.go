// Package edgews serves MQTT over WebSocket (RFC 6455) on edged's event
// loops. A ws:// connection is its loop's from the accept: its HTTP
// upgrade runs in the Transport's Unwrap (the request head waits in the
// engine's partial buffer, at most 8 KiB, until its blank line; then it is
// parsed, allocating nothing, and answered), so an upgrade costs no
// goroutine, no duplicate socket, no OS thread and no garbage, and an idle
// WebSocket session what a TCP one does plus its framing state. After it, the framing runs on the
// same loop with no goroutine and no buffer per connection.
//
// What a connection keeps: a 12-byte pointer-free record in its loop's
// table (connState: the payload left in the current frame, its masking key,
// four flags). A data frame's payload is unmasked in place in the loop's
// read buffer as it arrives and handed to the MQTT handler at once, so a
// frame is never buffered whole; MQTT's own limits (maximum packet size,
// the partial-packet budget and timeout) bound what waits. Only a frame
// header or a control frame (at most 131 bytes) that arrived in part waits
// as such: as wire bytes in the engine's partial buffer for ws://, and for
// wss://, whose TLS records are already opened, in a per-loop side table
// that holds an entry only while one waits.
//
// Rules (each refused with its own error and close status code):
// binary frames only (a text frame closes with 1003, MQTT's WebSocket
// binding says binary), every client frame masked (1002), no reserved bits
// (no extension is negotiated), no unknown opcode, control frames whole
// (FIN set) and at most 125 bytes, continuations only inside a fragmented
// message, lengths in their minimal form, a data frame at most
// Config.MaxFrame (1009), a close frame's status code and UTF-8 reason
// valid. A ping is answered with a pong carrying its payload; a pong is
// ignored; a close frame is answered with a close frame (1000) and the
// connection closes. The upgrade needs GET, HTTP/1.1, Upgrade: websocket,
// Connection: Upgrade, Sec-WebSocket-Version 13, a 16-byte key, the
// listener's path and the subprotocol "mqtt"; a client must wait for the
// 101 before it sends frames (RFC 6455 4.1), and bytes sent earlier are
// refused.
//
// wss:// is TLS then WebSocket: edgetls runs the TLS handshake, off the
// loops, and then, on the same goroutine, this package's upgrade over the
// TLS session (Upgrader); on the loop the frames are decoded from the plaintext that
// edgetls's record layer opened, and our frames are sealed by it.
//
// Concurrency: Server's exported methods are safe for concurrent use,
// except those that take a *netpoll.Conn (Owns, Upgrading, Goodbye, and the
// netpoll.Transport methods): they read the connection's loop's tables and
// run on that loop only, or while it is parked (a handoff's Freeze).
package edgews
