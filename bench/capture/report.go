package capture

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Text renders a replay report for people, in the layout of edgebench's
// other workloads.
func (r *Report) Text() string {
	var b strings.Builder
	p := func(f string, a ...any) { fmt.Fprintf(&b, f+"\n", a...) }
	src := r.Capture
	if src == "" {
		src = "capture"
	}
	p("edgebench replay of %s against %s (speed %g, scale %d, %.1fs recorded, %.1fs scheduled, %.1fs elapsed)",
		src, r.Target, r.Speed, r.Scale, r.RecordedSeconds, r.ScheduledSeconds, r.ElapsedSeconds)
	p("  sessions     %d replayed, %d connected, %d refused, %d failed, %d skipped in capture",
		r.Sessions, r.Connected, r.Refused, r.Failed, r.Skipped)
	p("  messages     received %d (recorded %d)", r.MessagesReceived, r.MessagesRecorded)
	p("  timing       late vs recorded schedule: p50 %s p99 %s max %s mean %s (n=%d)",
		fmtUs(r.Timing.P50us), fmtUs(r.Timing.P99us), fmtUs(r.Timing.MaxUs), fmtUs(int64(r.Timing.MeanUs)), r.Timing.Count)
	p("  %-12s %-28s %s", "packets", "sent (recorded)", "received (recorded)")
	for _, t := range sortedTypes(r.Sent, r.Received, r.RecordedSent, r.RecordedReceived) {
		p("  %-12s %-28s %s", t, pair(r.Sent[t], r.RecordedSent[t]), pair(r.Received[t], r.RecordedReceived[t]))
	}
	if len(r.Errors) == 0 {
		p("  errors       none")
	} else {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(r.Errors)) {
			parts = append(parts, fmt.Sprintf("%s %d", k, r.Errors[k]))
		}
		p("  errors       %s", strings.Join(parts, ", "))
	}
	return b.String()
}

func pair(got, want Count) string {
	return fmt.Sprintf("%d/%s (%d/%s)", got.Packets, fmtBytes(got.Bytes), want.Packets, fmtBytes(want.Bytes))
}

func fmtUs(us int64) string {
	switch {
	case us >= 1e6:
		return fmt.Sprintf("%.2fs", float64(us)/1e6)
	case us >= 1e3:
		return fmt.Sprintf("%.2fms", float64(us)/1e3)
	}
	return fmt.Sprintf("%dµs", us)
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}
