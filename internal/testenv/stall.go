package testenv

import (
	"sync"
	"time"
)

// StallProbe measures how late this process is scheduled while a timed
// test runs: a goroutine sleeps stallTick in a loop and records how much
// later than asked each sleep returned. A timing assertion (a replay's
// lateness, a deadline) adds what the probe saw to its tolerance, so a
// machine that is stalled (shared cores, compilers, the race detector)
// cannot fail it by chance while a real slowdown of the code still does.
type StallProbe struct {
	stop chan struct{}
	done chan struct{}

	mu    sync.Mutex // guards the fields below
	max   time.Duration
	total time.Duration
}

// stallTick is short enough to see a stall of a few ms, long enough that
// the probe costs nothing measurable.
const stallTick = 5 * time.Millisecond

// StartStallProbe starts a probe; Stop ends it.
func StartStallProbe() *StallProbe {
	p := &StallProbe{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			t0 := time.Now()
			select {
			case <-p.stop:
				return
			case <-time.After(stallTick):
			}
			late := max(0, time.Since(t0)-stallTick)
			p.mu.Lock()
			p.max = max(p.max, late)
			p.total += late
			p.mu.Unlock()
		}
	}()
	return p
}

// Stop ends the probe and returns the longest single stall it saw and the
// sum of all of them (how much wall time the process lost in all).
func (p *StallProbe) Stop() (longest, total time.Duration) {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.max, p.total
}
