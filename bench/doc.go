// Package bench is the load generator behind edgebench: a lean epoll
// connection engine sharded over worker processes and source addresses, the
// workloads (connect, pairs, fanout, offline, churn), the capacity search, the
// target comparison, HDR latency measurement, server-side sampling from /proc
// and reports (text, JSON, SVG).
//
// Lifecycle: Run starts worker processes by re-executing the current binary
// with EDGEBENCH_WORKER=1 in its environment. Every program that calls Run
// (edgebench itself and test binaries) must call MaybeWorker first thing in
// main or TestMain; MaybeWorker never returns in a worker process. Workers
// are killed when the parent dies (Linux: PR_SET_PDEATHSIG) and are always
// reaped before Run returns.
//
// Why its own engine, and not netpoll or a client library: a load generator
// must cost less per connection and per message than the server it
// measures, or it measures itself. A goroutine-per-connection client (Paho,
// net.Conn) spends ~8 KB and a scheduler wake-up per connection, so 15,000
// clients on these 2-core hosts would eat the CPU the server needs. netpoll
// is the server's engine: it accepts rather than dials, and sharing it
// would let a regression in it hide in both sides of a measurement. So each
// worker runs one epoll loop of its own (engine_linux.go: dial, read, write,
// timers) driving a workload (workload_linux.go: who subscribes, who sends
// what to whom, who drops and comes back), with a minimal client codec
// (mqtt.go) that is fuzzed against the server's edge/mqtt in
// codec_fuzz_test.go so the two cannot drift apart.
//
// The engine is Linux-only; on other systems Run returns ErrNotSupported.
package bench
