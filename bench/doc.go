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
// The engine is Linux-only; on other systems Run returns ErrNotSupported.
package bench
