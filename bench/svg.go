package bench

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// A small hand-written SVG line chart: one x axis (seconds), one y axis,
// a few named series.

type series struct {
	name  string
	color string
	x, y  []float64
}

const (
	svgW, svgH             = 720, 320
	padL, padR, padT, padB = 70, 150, 30, 40
)

func niceMax(v float64) float64 {
	if v <= 0 {
		return 1
	}
	e := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if v <= m*e {
			return m * e
		}
	}
	return 10 * e
}

// band shades an x range of a chart (a run's phases), hline draws a
// horizontal reference (an SLO), mark labels one point (a knee).
type band struct {
	x0, x1 float64
	label  string
}

type hline struct {
	y     float64
	label string
}

type mark struct {
	x, y  float64
	label string
}

// extras are a chart's decorations beyond its series; xlabel names the x
// axis unit ("s" for seconds since the start, "" for plain numbers).
type extras struct {
	xunit  string
	bands  []band
	hlines []hline
	marks  []mark
}

// niceStep is a 1-2-5 step that divides span into at most n intervals.
func niceStep(span float64, n int) float64 {
	raw := span / float64(n)
	e := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*e {
			return m * e
		}
	}
	return 10 * e
}

func chart(title, ylabel string, ss []series) string {
	return chartX(title, ylabel, ss, extras{xunit: "s"})
}

// chartX draws the series on axes that end where the data ends (the x axis
// is not rounded up past the last point, so a run of 11 s spans 11 s).
func chartX(title, ylabel string, ss []series, ex extras) string {
	var b strings.Builder
	xmax, ymax := 0.0, 0.0
	for _, s := range ss {
		for i := range s.x {
			xmax = math.Max(xmax, s.x[i])
			ymax = math.Max(ymax, s.y[i])
		}
	}
	for _, h := range ex.hlines {
		ymax = math.Max(ymax, h.y)
	}
	for _, bd := range ex.bands {
		xmax = math.Max(xmax, bd.x1)
	}
	xmax = math.Max(1, math.Ceil(xmax))
	ymax = niceMax(ymax * 1.05)
	pw, ph := float64(svgW-padL-padR), float64(svgH-padT-padB)
	px := func(x float64) float64 { return padL + x/xmax*pw }
	py := func(y float64) float64 { return padT + ph - y/ymax*ph }
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", svgW, svgH)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="18" font-size="14">%s</text>`+"\n", padL, html.EscapeString(title))
	for i, bd := range ex.bands {
		fill := "#f4f4f4"
		if i%2 == 1 {
			fill = "#eaf2fb"
		}
		fmt.Fprintf(&b, `<rect class="phase" x="%.1f" y="%d" width="%.1f" height="%.0f" fill="%s"/>`+"\n", px(bd.x0), padT, px(bd.x1)-px(bd.x0), ph, fill)
		fmt.Fprintf(&b, `<text class="phase" x="%.1f" y="%d" font-size="10" fill="#666">%s</text>`+"\n", px(bd.x0)+3, padT+11, html.EscapeString(bd.label))
	}
	for i := 0; i <= 4; i++ {
		y := ymax * float64(i) / 4
		fmt.Fprintf(&b, `<line x1="%d" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", padL, padL+pw, py(y), py(y))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", padL-6, py(y)+4, fmtNum(y))
	}
	step := niceStep(xmax, 6)
	if ex.xunit == "" {
		step = max(1, step) // whole steps
	}
	for x := 0.0; x <= xmax+step/1e6; x += step {
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s%s</text>`+"\n", px(x), svgH-padB+16, fmtNum(x), ex.xunit)
	}
	fmt.Fprintf(&b, `<text x="14" y="%.1f" transform="rotate(-90 14 %.1f)" text-anchor="middle">%s</text>`+"\n",
		padT+ph/2, padT+ph/2, html.EscapeString(ylabel))
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="none" stroke="#888"/>`+"\n", padL, padT, pw, ph)
	for _, h := range ex.hlines {
		fmt.Fprintf(&b, `<line class="slo" x1="%d" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#d62728" stroke-dasharray="6 4"/>`+"\n", padL, padL+pw, py(h.y), py(h.y))
		fmt.Fprintf(&b, `<text class="slo" x="%.1f" y="%.1f" text-anchor="end" fill="#d62728">%s</text>`+"\n", padL+pw-4, py(h.y)-4, html.EscapeString(h.label))
	}
	for k, s := range ss {
		var pts []string
		for i := range s.x {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(s.x[i]), py(s.y[i])))
		}
		if len(pts) > 0 {
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n", s.color, strings.Join(pts, " "))
			if len(pts) <= 40 { // few points (capacity steps): show each
				for i := range s.x {
					fmt.Fprintf(&b, `<circle class="point" cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", px(s.x[i]), py(s.y[i]), s.color)
				}
			}
		}
		ly := padT + 10 + 18*k
		fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%d" y2="%d" stroke="%s" stroke-width="3"/>`+"\n", padL+pw+10, padL+pw+30, ly, ly, s.color)
		fmt.Fprintf(&b, `<text x="%.0f" y="%d">%s</text>`+"\n", padL+pw+36, ly+4, html.EscapeString(s.name))
	}
	for _, m := range ex.marks {
		fmt.Fprintf(&b, `<circle class="knee" cx="%.1f" cy="%.1f" r="7" fill="none" stroke="#000" stroke-width="2"/>`+"\n", px(m.x), py(m.y))
		fmt.Fprintf(&b, `<text class="knee" x="%.1f" y="%.1f" font-weight="bold">%s</text>`+"\n", px(m.x)+9, py(m.y)-9, html.EscapeString(m.label))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func fmtNum(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.3gk", v/1e3)
	}
	return fmt.Sprintf("%.3g", v)
}

func perSecond(r *Result, f func(Second) float64) (xs, ys []float64) {
	for _, s := range r.Seconds {
		xs = append(xs, s.T)
		ys = append(ys, f(s))
	}
	return xs, ys
}

// phases shades each phase of a run (ramp, settle, measure, drain) so a
// drop at the end reads as the drain it is.
func phases(r *Result) []band {
	var out []band
	prev := 0.0
	for _, s := range r.Seconds {
		if len(out) == 0 || out[len(out)-1].label != s.Phase {
			out = append(out, band{x0: prev, x1: s.T, label: s.Phase})
		} else {
			out[len(out)-1].x1 = s.T
		}
		prev = s.T
	}
	if len(out) == 1 && out[0].label == "" {
		return nil
	}
	return out
}

func runChart(r *Result, title, ylabel string, ss []series) string {
	return chartX(title, ylabel, ss, extras{xunit: "s", bands: phases(r)})
}

func latencySVG(r *Result) string {
	var ss []series
	for _, q := range []struct {
		n, c string
		f    func(Second) float64
	}{
		{"p50", "#1f77b4", func(s Second) float64 { return float64(s.P50us) / 1000 }},
		{"p99", "#ff7f0e", func(s Second) float64 { return float64(s.P99us) / 1000 }},
		{"p99.9", "#d62728", func(s Second) float64 { return float64(s.P999us) / 1000 }},
	} {
		x, y := perSecond(r, q.f)
		ss = append(ss, series{q.n, q.c, x, y})
	}
	return runChart(r, fmt.Sprintf("%s end-to-end latency per second (%s)", r.Workload, r.Target), "milliseconds", ss)
}

func throughputSVG(r *Result) string {
	x1, y1 := perSecond(r, func(s Second) float64 { return float64(s.Sent) })
	x2, y2 := perSecond(r, func(s Second) float64 { return float64(s.Received) })
	return runChart(r, fmt.Sprintf("%s throughput (%s)", r.Workload, r.Target), "messages per second",
		[]series{{"sent/s", "#1f77b4", x1, y1}, {"received/s", "#2ca02c", x2, y2}})
}

func connectionsSVG(r *Result) string {
	x, y := perSecond(r, func(s Second) float64 { return float64(s.Up) })
	return runChart(r, fmt.Sprintf("%s connections (%s)", r.Workload, r.Target), "connections", []series{{"connections", "#9467bd", x, y}})
}

// connectLatencySVG plots connect latency (TCP connect to CONNACK) per
// second, and the connects per second beside it in connectsSVG.
func connectLatencySVG(r *Result) string {
	x1, y1 := perSecond(r, func(s Second) float64 { return float64(s.ConnP50us) / 1000 })
	x2, y2 := perSecond(r, func(s Second) float64 { return float64(s.ConnP99us) / 1000 })
	return runChart(r, fmt.Sprintf("%s connect latency per second (%s)", r.Workload, r.Target), "milliseconds",
		[]series{{"p50", "#1f77b4", x1, y1}, {"p99", "#ff7f0e", x2, y2}})
}

func connectsSVG(r *Result) string {
	x, y := perSecond(r, func(s Second) float64 { return float64(s.Connects) })
	return runChart(r, fmt.Sprintf("%s connects per second (%s)", r.Workload, r.Target), "connects per second",
		[]series{{"connects/s", "#17becf", x, y}})
}

// serverSVG plots the server's RSS; "" when no server was sampled.
func serverSVG(r *Result) string {
	if r.Server == nil || len(r.Server.Samples) == 0 {
		return ""
	}
	var sx, sy []float64
	for _, s := range r.Server.Samples {
		sx = append(sx, s.T)
		sy = append(sy, float64(s.RSS)/(1<<20))
	}
	return chart(fmt.Sprintf("server RSS, process tree of pid %d", r.Server.PID), "MiB", []series{{"rss", "#8c564b", sx, sy}})
}

// serverCPUSVG plots the server's CPU use (cores: CPU-seconds per second
// between samples); "" with fewer than two samples.
func serverCPUSVG(r *Result) string {
	if r.Server == nil || len(r.Server.Samples) < 2 {
		return ""
	}
	var sx, sy []float64
	ss := r.Server.Samples
	for i := 1; i < len(ss); i++ {
		if dt := ss[i].T - ss[i-1].T; dt > 0 {
			sx = append(sx, ss[i].T)
			sy = append(sy, (ss[i].CPU-ss[i-1].CPU)/dt)
		}
	}
	return chart(fmt.Sprintf("server CPU, process tree of pid %d", r.Server.PID), "cores", []series{{"cpu", "#e377c2", sx, sy}})
}

// capacitySVGs plots a capacity search by step: the message rate reached
// and the p99 against its SLO, the knee marked on both.
func capacitySVGs(r *Result) (rate, p99 string) {
	c := r.Capacity
	var xs, offered, got, lat []float64
	for i, st := range c.Steps {
		xs = append(xs, float64(i+1))
		offered = append(offered, st.Rate)
		got = append(got, st.MsgsPerS)
		lat = append(lat, float64(st.P99us)/1000)
	}
	var rm, lm []mark
	if k := c.Knee; k != nil {
		for i := range c.Steps {
			if &c.Steps[i] == k || c.Steps[i] == *k {
				label := fmt.Sprintf("knee: %d conns, %s msg/s", k.Conns, fmtNum(k.MsgsPerS))
				rm = append(rm, mark{float64(i + 1), k.MsgsPerS, label})
				lm = append(lm, mark{float64(i + 1), float64(k.P99us) / 1000, label})
				break
			}
		}
	}
	ex := extras{marks: rm}
	rate = chartX(fmt.Sprintf("capacity: message rate by step (%s)", r.Target), "messages per second",
		[]series{{"offered", "#aaaaaa", xs, offered}, {"delivered", "#2ca02c", xs, got}}, ex)
	ex = extras{marks: lm}
	if slo := r.Options.Capacity.SLOP99; slo > 0 {
		ex.hlines = []hline{{float64(slo) / 1e6, fmt.Sprintf("SLO p99 %s", slo)}}
	}
	p99 = chartX(fmt.Sprintf("capacity: p99 latency by step (%s)", r.Target), "milliseconds",
		[]series{{"p99", "#ff7f0e", xs, lat}}, ex)
	return rate, p99
}

// compareSVGs overlays every round of every target: received messages per
// second and p99 per second (or, for workloads without messages,
// connections), one colour per target.
func compareSVGs(c *Comparison) map[string]string {
	colors := []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"}
	idx := map[string]int{}
	for i, t := range c.Targets {
		idx[t.Name] = i
	}
	var thr, p99, conns []series
	seen := map[string]int{}
	for _, r := range c.Runs {
		ti := idx[r.Name]
		seen[r.Name]++
		name := fmt.Sprintf("%s #%d", r.Name, seen[r.Name])
		col := colors[ti%len(colors)]
		x, y := perSecond(r, func(s Second) float64 { return float64(s.Received) })
		thr = append(thr, series{name, col, x, y})
		x, y = perSecond(r, func(s Second) float64 { return float64(s.P99us) / 1000 })
		p99 = append(p99, series{name, col, x, y})
		x, y = perSecond(r, func(s Second) float64 { return float64(s.Up) })
		conns = append(conns, series{name, col, x, y})
	}
	out := map[string]string{
		"compare-connections.svg": chart(fmt.Sprintf("compare %s: connections, every round", c.Workload), "connections", conns),
	}
	if messagingWorkload(c.Workload) {
		out["compare-throughput.svg"] = chart(fmt.Sprintf("compare %s: received messages per second, every round", c.Workload), "messages per second", thr)
		out["compare-latency.svg"] = chart(fmt.Sprintf("compare %s: p99 latency per second, every round", c.Workload), "milliseconds", p99)
	}
	return out
}
