package testenv

import (
	"testing"
	"time"
)

// TestStallProbe checks the accounting: a probe over 100 ms reports
// non-negative figures, the longest at most the total, and its goroutine
// has exited after Stop.
func TestStallProbe(t *testing.T) {
	p := StartStallProbe()
	time.Sleep(100 * time.Millisecond)
	longest, total := p.Stop()
	if longest < 0 || total < longest {
		t.Fatalf("longest %v, total %v: want 0 <= longest <= total", longest, total)
	}
	select {
	case <-p.done:
	default:
		t.Fatal("probe goroutine still running after Stop")
	}
}
