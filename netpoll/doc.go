// Package netpoll is edged's event-loop engine: N loops, each one goroutine
// owning the connections it accepted for their whole life, with
// edge-triggered reads into one shared buffer per loop, coalesced writes,
// per-loop timer wheels, lock-free cross-loop queues, and slab-allocated,
// pointer-free per-connection records. An idle loop parks on the Go
// runtime's poller (Config.Wait, WaitPark, the default on Linux) or blocks
// on its own locked OS thread (WaitBlock): handlers must not rely on running
// on one OS thread.
//
// Lifecycle: New creates the listeners (one per loop in a SO_REUSEPORT group)
// and the pollers; Start runs the loops; Close stops accepting, closes every
// connection (the Handler is told with ErrShutdown) and waits for the loops.
//
// Concurrency: a *Conn belongs to its loop and may be used only inside a
// Handler callback on that loop. From anywhere else a connection is reached
// only through its Handle and Engine.Post, which refuse a stale handle and
// never deliver to a reused slot. Engine and Handle methods are safe for
// concurrent use; Conn and Loop methods are not.
//
// Platforms: epoll on Linux (tested); kqueue on FreeBSD and macOS is
// compile-checked only (CI vets it, no machine here can run it); other
// systems get ErrUnsupported from New.
package netpoll
