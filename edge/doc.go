// Package edge is the edged server: MQTT 3.1.1 sessions on netpoll event
// loops, the router (a sharded user table for the messaging profile and a
// topic tree for generic MQTT), per-user inboxes with store-and-forward and
// receipts, groups, presence, stateless HMAC tokens and the admin endpoint.
//
// Lifecycle: New builds a Server from a Config, Start binds the listener and
// runs the loops, Close stops it (every connection is closed, the inboxes are
// kept in memory until the Server is dropped). The Server's methods are safe
// for concurrent use; its netpoll.Handler methods are for the engine only.
//
// The wire protocol and its semantics are those of /work/shared/PROTOCOL.md:
// u/<to>/<mid> direct messages, r/<to>/<mid> read receipts, g/<group>/<mid>
// group messages, p/<user> presence, and plain MQTT 3.1.1 on other topics.
package edge
