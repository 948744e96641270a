package netpoll

import (
	"sync"
	"time"
)

// acceptPauseLogEvery spaces the "pausing accepts" lines: at EMFILE every
// loop pauses for 100 ms and tries again, which logged ~20 lines a second
// on two loops while the condition lasted.
const acceptPauseLogEvery = 10 * time.Second

// everyLog lets one line through per interval, engine-wide, and counts the
// ones it held back so the next line can say how many. Safe for concurrent
// use: the loops share it (a rare path, so a mutex is fine).
type everyLog struct {
	every time.Duration

	mu         sync.Mutex // guards next and suppressed
	next       time.Time
	suppressed int
}

// allow reports whether a line may be logged at now and, if so, how many
// were suppressed since the last one.
func (r *everyLog) allow(now time.Time) (ok bool, suppressed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Before(r.next) {
		r.suppressed++
		return false, 0
	}
	r.next = now.Add(r.every)
	suppressed, r.suppressed = r.suppressed, 0
	return true, suppressed
}
