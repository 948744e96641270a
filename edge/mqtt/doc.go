// Package mqtt is the MQTT 3.1.1 and 5.0 (OASIS standards) packet codec of
// the edge: an in-place decoder and append-style encoders with zero heap
// allocations on the hot path (PUBLISH, PUBACK, PINGREQ/PINGRESP), in both
// versions.
//
// # Versions
//
// [Decode] and the Append* encoders speak 3.1.1; [Decode5] and the Append*5
// encoders speak 5.0 (properties, reason codes, AUTH). A connection's
// version is its CONNECT's protocol level: decode the first packet with
// Decode, and on [ErrProtocolLevel] with Decode5, which accepts a level-5
// CONNECT. The v5 errors are *[Error] values carrying the reason code to
// send; [ReasonCode] maps every codec error (of both versions) to one.
//
// # Aliasing: read this before keeping anything
//
// [Decode] does not copy. Every []byte field of the [Packet] it fills (topic,
// payload, client id, username, password, will topic and message, the raw
// filter list, SUBACK return codes) ALIASES the buffer passed to Decode. Those
// slices are valid only until that buffer is reused, e.g. until the event loop
// reads the next batch into its shared read buffer. A caller that needs a value
// later (a retained message, a stored inbox entry, a client id in the session
// table) must copy it first. The aliases are capacity-limited, so appending to
// one never overwrites the buffer.
//
// A Packet is not safe for concurrent use; it is meant to be one reused value
// per event loop.
//
// # Errors
//
// Decode returns the sentinel errors of this package unwrapped (no
// allocation on the error path, so a flood of bad packets costs no garbage);
// compare them with errors.Is. [ErrProtocolLevel] means the server should send
// CONNACK [ConnRefusedProtocolVersion] before it closes the connection; every
// other error means: close the connection.
//
// The codec is hand-written rather than built on a library because it sits on
// the hot path of every message.
package mqtt
