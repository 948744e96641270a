// Package edgetls terminates TLS 1.2 and 1.3 for edged's event loops: the
// handshake runs in crypto/tls on a bounded set of goroutines, off the loops;
// after it, the record layer runs on the connection's loop as a
// netpoll.Transport, with no goroutine and no buffer per connection.
//
// Why take over the record layer instead of keeping a tls.Conn on the loop
// (over a transport that returns a temporary error when it is empty, which
// crypto/tls tolerates: conn.go's readRecordOrCCS does not make temporary
// errors sticky)? Memory. A tls.Conn keeps its structure, its expanded
// AES-GCM key schedules for both directions (about 1.6 KB) and a record
// input buffer that grows to the largest record seen and never shrinks
// (golang/go#43563): several KB per idle session, against a budget of
// 1,536 B. Here an idle session holds one pointer-free 136-byte record per
// connection (connState: per direction the TLS 1.3 traffic secret, or the
// TLS 1.2 key and implicit nonce, and the sequence number); the AEADs,
// keys and IVs are built on demand and kept only in a small per-loop cache
// of recently used ones. Measured at 10,000 idle sessions (BENCHMARKS.md
// "TLS"): 1,507 B of RSS per TLS session, 852 B over plain TCP; with a
// tls.Conn-like record holding expanded keys it would be several KB.
//
// How: each handshake gets a per-connection clone of the current tls.Config
// whose KeyLogWriter receives that connection's secrets (CLIENT_RANDOM for
// TLS 1.2, the *_TRAFFIC_SECRET_0 pair for TLS 1.3) and whose WrapSession
// counts the session tickets sent (each a record under the server's first
// application key: its starting sequence number). The socket is read through
// a reader that never hands crypto/tls a byte past the record it is reading,
// so whatever the client sent after its Finished (its CONNECT) is still ours
// after Handshake returns and goes to the loop with the keys. Keys come from
// the secrets with crypto/hkdf (TLS 1.3 HKDF-Expand-Label) or the TLS 1.2
// PRF built on crypto/hmac; records are protected with crypto/cipher's
// AES-GCM (and golang.org/x/crypto/chacha20poly1305, the package crypto/tls
// itself vendors, when a TLS 1.3 client prefers ChaCha20). No primitive is
// written here: only the record framing, tested against crypto/tls on the
// other end (KeyUpdate both ways, alerts, close_notify).
//
// Limits: TLS 1.2 offers only the ECDHE AES-GCM suites (crypto/tls's
// defaults minus CBC and ChaCha20 in 1.2); renegotiation is refused (as
// crypto/tls's server does); a post-handshake handshake message split
// across records is refused (only KeyUpdate is legal from a client, 5
// bytes). Session tickets are sealed with a key made at start-up and replaced
// every Config.TicketRotate, the previous two still opening tickets; the
// keys survive certificate reloads and upgrades (TicketKeys,
// SetTicketKeys), not a restart.
//
// Concurrency: Server's exported methods are safe for concurrent use; its
// netpoll.Transport methods are called by the engine on each connection's
// loop only.
package edgetls
