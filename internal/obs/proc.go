package obs

import (
	"math"
	"runtime/metrics"
)

// procSample is what the process and kernel readers return; the have*
// fields say which parts this OS provides.
type procSample struct {
	haveRusage      bool
	cpuUser, cpuSys float64 // seconds since the process started
	ctxSwitches     float64 // voluntary + involuntary

	haveProc bool
	rss      float64 // bytes
	threads  float64

	haveTCP                      bool
	listenOverflows, listenDrops float64
	retransSegs, tcpTimeouts     float64
	activeOpens, passiveOpens    float64
	currEstab, inSegs, outSegs   float64
}

// Runtime metrics read each sample (runtime/metrics names).
const (
	rmGCCycles   = "/gc/cycles/total:gc-cycles"
	rmGCPauses   = "/sched/pauses/total/gc:seconds"
	rmGoroutines = "/sched/goroutines:goroutines"
	rmHeap       = "/memory/classes/heap/objects:bytes"
	rmGOGC       = "/gc/gogc:percent"
	rmMemLimit   = "/gc/gomemlimit:bytes"
)

// rtReader reads the Go runtime's metrics into a reused buffer.
type rtReader struct {
	samples    []metrics.Sample
	prevPauses []uint64 // GC pause histogram counts at the previous sample
}

func newRTReader() *rtReader {
	names := []string{rmGCCycles, rmGCPauses, rmGoroutines, rmHeap}
	r := &rtReader{samples: make([]metrics.Sample, len(names))}
	for i, n := range names {
		r.samples[i].Name = n
	}
	return r
}

// rtSample is one reading: totals and levels, plus the pauses since the
// previous reading.
type rtSample struct {
	gcCycles, goroutines, heap float64
	pauseSum, pauseMax         float64 // seconds, estimated from histogram buckets
}

func (r *rtReader) read() rtSample {
	metrics.Read(r.samples)
	var s rtSample
	s.gcCycles = float64(r.samples[0].Value.Uint64())
	s.goroutines = float64(r.samples[2].Value.Uint64())
	s.heap = float64(r.samples[3].Value.Uint64())
	if r.samples[1].Value.Kind() == metrics.KindFloat64Histogram {
		h := r.samples[1].Value.Float64Histogram()
		if len(r.prevPauses) != len(h.Counts) {
			r.prevPauses = make([]uint64, len(h.Counts))
		}
		for i, c := range h.Counts {
			d := c - r.prevPauses[i]
			r.prevPauses[i] = c
			if d == 0 {
				continue
			}
			// Bucket i is [Buckets[i], Buckets[i+1]); the ends may be
			// infinite, so use the finite edge.
			lo, hi := h.Buckets[i], h.Buckets[i+1]
			mid := (lo + hi) / 2
			if math.IsInf(lo, 0) {
				mid = hi
			} else if math.IsInf(hi, 0) {
				mid, hi = lo, lo
			}
			s.pauseSum += float64(d) * mid
			s.pauseMax = max(s.pauseMax, hi)
		}
	}
	return s
}

// readRuntimeFloat reads one runtime metric as a number (0 if absent).
func readRuntimeFloat(name string) float64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	switch s[0].Value.Kind() {
	case metrics.KindUint64:
		return float64(s[0].Value.Uint64())
	case metrics.KindFloat64:
		return s[0].Value.Float64()
	}
	return 0
}
