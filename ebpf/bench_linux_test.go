package steer

import (
	"log/slog"
	"testing"
)

// BenchmarkChurnImbalance measures per-loop imbalance of live connections
// under churn, for each policy and the kernel's default (off), in the same
// run: 4 loops are filled with 2000 connections, then 8 times one loop's
// connections all close (a loop's clients drop together, or long- and
// short-lived connections mix) and as many clients reconnect. After each
// reconnect wave it records max/min and the coefficient of variation of the
// live counts; the metrics are the means over the waves, and the worst.
// The client moves to CPU i mod NumCPU for connection i (see dialSpread),
// so that the cpu policy sees SYNs on every CPU, as RSS/RPS would spread
// them; loop i runs on CPU i mod NumCPU.
func BenchmarkChurnImbalance(b *testing.B) {
	const loops, fill, waves = 4, 2000, 8
	for _, p := range []Policy{PolicyOff, PolicyHash, PolicyLeast, PolicyCPU} {
		b.Run(p.String(), func(b *testing.B) {
			b.ReportAllocs()
			ns := newNetns(b)
			fds, port := listenGroup(b, ns, loops, loopback, 0)
			s, err := Attach(Config{Policy: p, Listeners: fds})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			var sumRatio, sumCV, worst float64
			var samples int
			for b.Loop() {
				a := startAcceptors(b, fds, s, nil)
				total := int64(fill)
				if err := dialSpread(ns, port, fill); err != nil {
					b.Fatal(err)
				}
				a.waitTotal(b, total)
				for w := range waves {
					closed := a.closeLoop(w % loops)
					if err := dialSpread(ns, port, closed); err != nil {
						b.Fatal(err)
					}
					total += int64(closed)
					a.waitTotal(b, total)
					ratio, cv := imbalance(a.live())
					sumRatio, sumCV, worst = sumRatio+ratio, sumCV+cv, max(worst, ratio)
					samples++
				}
				a.close()
				for i := range loops {
					s.SetLive(i, 0)
				}
			}
			b.ReportMetric(sumRatio/float64(samples), "max/min")
			b.ReportMetric(worst, "worst-max/min")
			b.ReportMetric(sumCV/float64(samples), "cv")
		})
	}
}

// BenchmarkSetLive is the cost a loop pays to keep least current: in bpf
// mode an atomic store into the mmapped map, in fallback plain memory.
func BenchmarkSetLive(b *testing.B) {
	for _, force := range []bool{false, true} {
		name := "bpf"
		if force {
			name = "fallback"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			ns := newNetns(b)
			fds, _ := listenGroup(b, ns, 4, loopback, 0)
			s, err := Attach(Config{Policy: PolicyLeast, Listeners: fds, ForceFallback: force,
				Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			var i uint32
			for b.Loop() {
				s.SetLive(int(i&3), i)
				i++
			}
		})
	}
}
