// Package obs is edged's built-in observability: an activity reporter that
// samples the process, the kernel's TCP counters and the server once a second
// (each figure with decaying averages over 1, 10 and 100 seconds and a few
// minutes of history), queue alarms with drain rates, live knobs, and the
// admin HTTP routes that serve them (/debug/pprof/*, /metrics, /stats,
// /knobs).
//
// Lifecycle: New builds a Reporter from Options (sources are plain funcs, so
// the server plugs in without importing this package's types beyond
// QueueInfo and Knob); Start runs the sampler goroutine, Close stops it and
// waits for it. Mount registers the routes on a caller's ServeMux. Every
// Reporter method is safe for concurrent use; the source funcs are called
// from the sampler goroutine (and from Sample), never concurrently with
// each other.
//
// Helpers for the server: Backlogs tracks per-connection output backlog on
// the loops for Options.Queues; IntKnob and BoolKnob make knobs over atomics.
// StartProfile is the whole-run profiler behind edged --profile.
package obs
