package netpoll

import (
	"fmt"
	"os"
	"time"
)

// WaitMode is how an idle loop waits for its next event (Config.Wait).
//
// WaitBlock: the loop runs on a locked OS thread that blocks in
// epoll_wait/kevent. Every loop holds a P while it sleeps in that syscall,
// so the runtime's sysmon thread keeps waking (every 20 us while a P has
// been in a syscall for a tick) to retake it: at moderate load, where loops
// sleep and wake once per message, sysmon and the P hand-offs cost about as
// much CPU as a loop (BENCHMARKS.md, issue #12 part 3).
//
// WaitPark: the loop's epoll descriptor is itself registered with the Go
// runtime's poller, and an idle loop is a goroutine parked on it (an os.File
// read that polls the loop's epoll set without blocking, and parks while it
// is empty). An idle loop holds no P and no thread: sysmon sleeps, several
// loops with a little work each run on one thread, and a loop woken by
// another runs as a goroutine switch, not a thread wake-up. The loop
// goroutine is not locked to its thread (a parked locked goroutine would
// still cost a thread hand-off per wake-up).
//
// The price: the loops share the Ps with every other goroutine of the
// process, so a CPU-bound goroutine can delay a runnable loop until the
// runtime preempts it (sysmon, after 10 ms of running). sysmon does that
// only while it is awake, and it sleeps deeply once every P was idle; the
// loops' raw syscalls do not wake it, but a timer does: so no park lasts
// longer than maxPark, and a loop held up this way waits at most about
// maxPark plus a time slice (found in review: with unbounded parks a 3 s
// computation on the only P held an idle loop's connections for 3 s).
//
// The nested epoll needs a kernel whose epoll wakes its own poll waiters on
// every readiness callback, including one that lands while the set is
// being scanned: Linux 5.7 or later (or a stable kernel with commit
// 0c54a6a44bf3, "epoll: fix missing wakeup for ovflist"). On 5.5 and 5.6
// without it a wake-up could be lost; use WaitBlock there.
type WaitMode string

const (
	WaitBlock WaitMode = "block"
	WaitPark  WaitMode = "park"
)

// DefaultWait is the WaitMode of a Config that names none (and of an
// EDGED_LOOP_WAIT that is unset).
const DefaultWait = WaitPark

// waitEnv is the environment variable that picks the WaitMode of a Config
// that names none, to compare the modes with one binary.
const waitEnv = "EDGED_LOOP_WAIT"

// resolveWait returns the mode to run: m, else the environment's, else
// DefaultWait; WaitPark becomes WaitBlock where it is not supported.
func resolveWait(m WaitMode) (WaitMode, error) {
	if m == "" {
		m = WaitMode(os.Getenv(waitEnv))
	}
	switch m {
	case "":
		m = DefaultWait
	case WaitBlock, WaitPark:
	default:
		return "", fmt.Errorf("netpoll: config: wait mode %q, want %q or %q", m, WaitBlock, WaitPark)
	}
	if m == WaitPark && !canPark {
		m = WaitBlock
	}
	return m, nil
}

// Wait returns the WaitMode the engine's loops run.
func (e *Engine) Wait() WaitMode { return e.cfg.Wait }

// maxPark bounds a WaitPark loop's park, in milliseconds, so that the
// runtime's sysmon, which sleeps until the next timer once every P was
// idle, wakes at least this often and preempts a goroutine that keeps a P
// from a runnable loop (see WaitPark). An idle loop wakes 100 times a
// second for it.
const maxPark = 10

// waitFor is the loop's wait for events, up to timeoutMs (-1: no limit),
// in the engine's mode. A wait of 0 only looks.
func (l *Loop) waitFor(timeoutMs int) (int, error) {
	if timeoutMs == 0 || !l.parks {
		return l.p.wait(l.evs[:], timeoutMs)
	}
	if timeoutMs < 0 || timeoutMs > maxPark {
		timeoutMs = maxPark
	}
	var deadline time.Time
	if timeoutMs > 0 {
		// Rounded up to the millisecond, so that the iterations of one
		// millisecond that wait for the same timer set the same deadline
		// (an unchanged deadline is not set again).
		deadline = time.Now().Add(time.Duration(timeoutMs)*time.Millisecond + time.Millisecond - 1).Truncate(time.Millisecond)
	}
	n, err := l.p.park(l.evs[:], deadline)
	if l.p.parked {
		l.lastPark = time.Now()
	}
	return n, err
}

// yieldAfter is how long a WaitPark loop may run without parking (every
// look found work) before it checks for starved siblings (yieldIfStarved).
const yieldAfter = time.Millisecond

// yieldIfStarved gets a sibling loop that is parked with events ready a
// thread, when this loop has been busy (not parked) for yieldAfter. The
// runtime notices a parked loop's readiness only when some thread polls its
// poller: one with nothing to run, or sysmon every 10 ms, and only while
// sysmon is awake (it sleeps deeply once every P was idle, and the loops'
// raw syscalls do not wake it). On two Ps, the thread that was polling may
// be the one now running this loop, with the other thread asleep: the
// sibling's work would wait until this loop parks. Readying the engine's
// kicker goroutine wakes an idle thread (the runtime's wakep), which, with
// nothing else to run, polls and runs the sibling. (A short time.Sleep
// would do it on this thread, but could cost this loop a millisecond: the
// runtime's epoll wait rounds up to whole milliseconds.)
func (l *Loop) yieldIfStarved() {
	if !l.parks || l.e.kick == nil || l.now.Sub(l.lastPark) < yieldAfter {
		return
	}
	l.lastPark = l.now
	for _, o := range l.e.loops {
		if o != l && o.sleeping.Load() != 0 && (o.q.length.Load() > 0 || o.p.pending()) {
			select {
			case l.e.kick <- struct{}{}:
				l.yields.Add(1)
			default: // a kick is on its way
			}
			return
		}
	}
}

// kicker receives the kicks of yieldIfStarved: being readied is its whole
// job. It ends when release closes kick.
func (e *Engine) kicker() {
	defer close(e.kicked)
	for range e.kick {
	}
}
