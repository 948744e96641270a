// Package edge is the edged server: MQTT 3.1.1 sessions on netpoll event
// loops, the router (a sharded, pointer-free user table for the messaging
// profile and a topic tree for generic MQTT), per-user inboxes with
// store-and-forward and receipts, groups, presence, stateless HMAC tokens
// (IssueToken, VerifyToken) and the admin HTTP endpoint (Mux).
//
// Lifecycle: New builds a Server from a Config, Start binds the listeners
// and runs the loops, Close stops it (every connection is closed; inboxes
// stay in memory until the Server is dropped — the edge keeps no history
// on disk). The Server's exported methods are safe for concurrent use; the
// engine's callbacks are an unexported handler (handler.go). The lock order
// is written in locks.go.
//
// Every closed connection is counted by Reason (Stats.Closes) so
// that the observability work can export them.
//
// The wire protocol and its semantics are those of PROTOCOL.md:
// u/<to>/<mid> direct messages, r/<to>/<mid> read receipts, g/<group>/<mid>
// group messages, p/<user> presence, and plain MQTT 3.1.1 on other topics.
package edge
