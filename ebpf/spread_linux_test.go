package steer

import (
	"math"
	"testing"
)

// spreadFailP is the chance a correct random spread may fail a spread
// check: one in a billion runs.
const spreadFailP = 1e-9

// randomSpreadBound returns the largest max/min ratio that n connections
// placed independently and uniformly at random over k loops exceed with
// probability at most pFail. Each loop's count is Binomial(n, 1/k); lo and
// hi are its quantiles with pFail/(2k) in each tail, so by the union bound
// all k counts lie in [lo, hi], and max/min <= hi/lo, except with
// probability pFail. The tails are summed exactly (log-space pmf), not
// approximated by a normal.
//
// For 10,000 connections over 4 loops at 1e-9 the bound is about 1.25: a
// fixed 1.10 (about ±2.2 standard deviations per loop) failed a correct
// flow hash by chance every few dozen runs.
func randomSpreadBound(n, k int, pFail float64) float64 {
	p := 1 / float64(k)
	tail := pFail / float64(2*k)
	lgN, _ := math.Lgamma(float64(n + 1))
	pmf := func(x int) float64 {
		a, _ := math.Lgamma(float64(x + 1))
		b, _ := math.Lgamma(float64(n - x + 1))
		return math.Exp(lgN - a - b + float64(x)*math.Log(p) + float64(n-x)*math.Log1p(-p))
	}
	lo, below := 0, 0.0 // below = P(X < lo)
	for below+pmf(lo) <= tail {
		below += pmf(lo)
		lo++
	}
	hi, above := n, 0.0 // above = P(X > hi)
	for above+pmf(hi) <= tail {
		above += pmf(hi)
		hi--
	}
	if lo == 0 {
		return math.Inf(1)
	}
	return float64(hi) / float64(lo)
}

func TestRandomSpreadBound(t *testing.T) {
	for _, tc := range []struct {
		n, k     int
		pFail    float64
		min, max float64
	}{
		// mean 2500, sd 43.3: hi/lo ~ (2500+6.3 sd)/(2500-6.3 sd)
		{10000, 4, 1e-9, 1.22, 1.26},
		// a looser failure probability gives a tighter bound
		{10000, 4, 1e-2, 1.09, 1.14},
		{1000000, 4, 1e-9, 1.02, 1.03},
		{8, 4, 1e-9, math.Inf(1), math.Inf(1)},
	} {
		got := randomSpreadBound(tc.n, tc.k, tc.pFail)
		if got < tc.min || got > tc.max {
			t.Errorf("randomSpreadBound(%d, %d, %g) = %.4f, want in [%.2f, %.2f]", tc.n, tc.k, tc.pFail, got, tc.min, tc.max)
		}
	}
}
