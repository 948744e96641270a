package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Text renders a result for people.
func Text(r *Result) string {
	var b strings.Builder
	p := func(f string, a ...any) { fmt.Fprintf(&b, f+"\n", a...) }
	p("edgebench %s against %s (%d workers, %.1fs, load used %.1f cpu-s)", r.Workload, r.Target, r.Workers, r.Elapsed, r.LoadCPUSeconds)
	p("  connections  peak %d, attempts %d, connected %d, connect p50 %s p99 %s max %s",
		r.PeakConns, r.Attempts, r.Connected, fmtUs(r.Connect.P50), fmtUs(r.Connect.P99), fmtUs(r.Connect.Max))
	if r.Capacity != nil {
		// The run's window is the last step's: its rate is not the run's.
		p("  messages     sent %d, acked %d, received %d over %d steps (each step's rate below)", r.Sent, r.Acked, r.Received, len(r.Capacity.Steps))
	} else if r.Sent > 0 || r.Received > 0 {
		p("  messages     sent %d, acked %d, received %d, %.0f msg/s over %.1fs", r.Sent, r.Acked, r.Received, r.MsgsPerS, r.Window)
	}
	if r.Sent > 0 || r.Received > 0 {
		p("  latency      p50 %s p90 %s p99 %s p99.9 %s max %s (n=%d)", fmtUs(r.Latency.P50), fmtUs(r.Latency.P90),
			fmtUs(r.Latency.P99), fmtUs(r.Latency.P999), fmtUs(r.Latency.Max), r.Latency.Count)
	}
	if r.Workload == "offline" {
		p("  delivery     lost %d (accepted, never delivered), duplicates %d, reordered %d, unacked %d", r.Lost, r.Dups, r.Reordered, r.Unacked)
	} else if r.Reordered > 0 {
		p("  order        %d messages arrived after a later one of the same pair", r.Reordered)
	}
	if r.Touched > 0 {
		p("  touched      %d connections carried a message", r.Touched)
	}
	if len(r.Errors) == 0 {
		p("  errors       none")
	} else {
		keys := make([]string, 0, len(r.Errors))
		for k := range r.Errors {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s %d", k, r.Errors[k]))
		}
		p("  errors       %s", strings.Join(parts, ", "))
	}
	if s := r.Server; s != nil {
		p("  server       pid %d, peak rss %s, threads %d", s.PID, fmtBytes(s.PeakRSS), s.Threads)
		if s.RSSAfter != 0 {
			p("  memory       %.0f bytes/connection (rss %s -> %s)", s.BytesPerConn, fmtBytes(s.RSSBefore), fmtBytes(s.RSSAfter))
		}
		if s.CPUSeconds > 0 {
			p("  cpu          %.2f cpu-s in window, %.2f cpu-s per million msgs, %.0f msg/s per core",
				s.CPUSeconds, s.CPUPerMillion, s.MsgsPerCoreSec)
		}
	}
	if c := r.Capacity; c != nil {
		for _, st := range c.Steps {
			v := "ok"
			if !st.OK {
				v = "broke: " + st.Broke
			}
			p("  step         conns %d rate %.0f/s -> %.0f msg/s p99 %s err %.3f%% %s", st.Conns, st.Rate, st.MsgsPerS, fmtUs(st.P99us), st.ErrFrac*100, v)
		}
		if c.Knee != nil {
			p("  knee         %d connections at %.0f msg/s (p99 %s)", c.Knee.Conns, c.Knee.MsgsPerS, fmtUs(c.Knee.P99us))
		} else {
			p("  knee         none: the first step broke")
		}
		if c.Broke != "" {
			p("  limit        %s", c.Broke)
		}
	}
	for _, n := range r.Notes {
		p("  note         %s", n)
	}
	return b.String()
}

// WriteReport writes report.json, report.txt and the SVG plots into dir.
func WriteReport(dir string, r *Result) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create report dir: %w", err)
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	files := map[string][]byte{
		"report.json":     append(js, '\n'),
		"report.txt":      []byte(Text(r)),
		"connections.svg": []byte(connectionsSVG(r)),
		"connect.svg":     []byte(connectLatencySVG(r)),
		"connects.svg":    []byte(connectsSVG(r)),
	}
	if messagingWorkload(r.Workload) { // connect and churn time no messages: no flat zero plots
		files["latency.svg"] = []byte(latencySVG(r))
		files["throughput.svg"] = []byte(throughputSVG(r))
	}
	if svg := serverSVG(r); svg != "" {
		files["server.svg"] = []byte(svg)
	}
	if svg := serverCPUSVG(r); svg != "" {
		files["server-cpu.svg"] = []byte(svg)
	}
	if r.Capacity != nil && len(r.Capacity.Steps) > 0 {
		rate, p99 := capacitySVGs(r)
		files["capacity-rate.svg"], files["capacity-p99.svg"] = []byte(rate), []byte(p99)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	}
	return nil
}

func writeComparison(dir string, c *Comparison) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create report dir: %w", err)
	}
	js, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("encode comparison: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "compare.json"), append(js, '\n'), 0o644); err != nil {
		return fmt.Errorf("write comparison: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "compare.txt"), []byte(CompareText(c)), 0o644); err != nil {
		return fmt.Errorf("write comparison: %w", err)
	}
	for name, svg := range compareSVGs(c) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(svg), 0o644); err != nil {
			return fmt.Errorf("write comparison: %w", err)
		}
	}
	return nil
}
