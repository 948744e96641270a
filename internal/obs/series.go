package obs

import (
	"math"
	"time"
)

// Windows are the decay constants of the averages kept for every figure.
var Windows = [3]time.Duration{time.Second, 10 * time.Second, 100 * time.Second}

// series is one figure's state: the last value, three exponentially decaying
// averages and a ring of past values. For a counter the value is the rate
// per second between the last two samples.
type series struct {
	name, unit string
	counter    bool
	total      float64 // counter: the last total seen
	haveTotal  bool
	value      float64
	avg        [3]float64
	n          int64     // values recorded
	hist       []float32 // ring of the last len(hist) values
	next       int       // index of the next write in hist
	seen       int64     // sample number of the last update
}

func newSeries(name, unit string, counter bool, history int) *series {
	return &series{name: name, unit: unit, counter: counter, hist: make([]float32, history)}
}

// observeLevel records a level (a gauge) sampled dt after the previous one.
func (s *series) observeLevel(v float64, dt time.Duration) { s.record(v, dt) }

// observeTotal records a counter's running total; the first total only sets
// the base, and a total that went down (a reset) counts as a rate of 0.
func (s *series) observeTotal(total float64, dt time.Duration) {
	prev, had := s.total, s.haveTotal
	s.total, s.haveTotal = total, true
	if !had || dt <= 0 {
		return
	}
	rate := 0.0
	if total >= prev {
		rate = (total - prev) / dt.Seconds()
	}
	s.record(rate, dt)
}

func (s *series) record(v float64, dt time.Duration) {
	s.value = v
	if s.n == 0 {
		s.avg = [3]float64{v, v, v}
	} else {
		for i, w := range Windows {
			a := 1 - math.Exp(-dt.Seconds()/w.Seconds())
			s.avg[i] += a * (v - s.avg[i])
		}
	}
	s.n++
	if len(s.hist) > 0 {
		s.hist[s.next] = float32(v)
		s.next = (s.next + 1) % len(s.hist)
	}
}

// history returns up to n past values, oldest first.
func (s *series) history(n int) []float64 {
	have := int(min(s.n, int64(len(s.hist))))
	n = min(n, have)
	out := make([]float64, n)
	for i := range n {
		j := (s.next - n + i + len(s.hist)) % len(s.hist)
		out[i] = float64(s.hist[j])
	}
	return out
}

// figure exports the series.
func (s *series) figure(hist int) Figure {
	f := Figure{Name: s.name, Unit: s.unit, Counter: s.counter, Value: s.value,
		Avg1: s.avg[0], Avg10: s.avg[1], Avg100: s.avg[2]}
	if s.counter {
		f.Total = s.total
	}
	if hist > 0 {
		f.History = s.history(hist)
	}
	return f
}
