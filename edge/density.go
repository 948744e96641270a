package edge

import "github.com/edgedhq/edged/internal/burst"

// connects counts the CONNECTs accepted in this process, for every server
// in it (the heap is the process's): once a storm of at least burst.After
// has ended (none for burst.Quiet), the heap it left behind goes back to
// the OS at once (debug.FreeOSMemory), as after a TLS handshake burst.
// Measured at 15,000 idle sessions 20 s after the storm (BENCHMARKS.md):
// persistent subscribed 791 B of RSS each with the scavenge, 839 without;
// the inbox profile, whose storm leaves ~15,000 extensions, inboxes and
// message buffers in sync.Pools, 312 B with the second GC, 716 with one.
var connects burst.Counter
