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

func chart(title, ylabel string, ss []series) string {
	var b strings.Builder
	xmax, ymax := 1.0, 0.0
	for _, s := range ss {
		for i := range s.x {
			xmax = math.Max(xmax, s.x[i])
			ymax = math.Max(ymax, s.y[i])
		}
	}
	ymax, xmax = niceMax(ymax), niceMax(xmax)
	pw, ph := float64(svgW-padL-padR), float64(svgH-padT-padB)
	px := func(x float64) float64 { return padL + x/xmax*pw }
	py := func(y float64) float64 { return padT + ph - y/ymax*ph }
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", svgW, svgH)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="18" font-size="14">%s</text>`+"\n", padL, html.EscapeString(title))
	for i := 0; i <= 4; i++ {
		y := ymax * float64(i) / 4
		fmt.Fprintf(&b, `<line x1="%d" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", padL, padL+pw, py(y), py(y))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", padL-6, py(y)+4, fmtNum(y))
	}
	for i := 0; i <= 5; i++ {
		x := xmax * float64(i) / 5
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%.0fs</text>`+"\n", px(x), svgH-padB+16, x)
	}
	fmt.Fprintf(&b, `<text x="14" y="%.1f" transform="rotate(-90 14 %.1f)" text-anchor="middle">%s</text>`+"\n",
		padT+ph/2, padT+ph/2, html.EscapeString(ylabel))
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="none" stroke="#888"/>`+"\n", padL, padT, pw, ph)
	for k, s := range ss {
		var pts []string
		for i := range s.x {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(s.x[i]), py(s.y[i])))
		}
		if len(pts) > 0 {
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n", s.color, strings.Join(pts, " "))
		}
		ly := padT + 10 + 18*k
		fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%d" y2="%d" stroke="%s" stroke-width="3"/>`+"\n", padL+pw+10, padL+pw+30, ly, ly, s.color)
		fmt.Fprintf(&b, `<text x="%.0f" y="%d">%s</text>`+"\n", padL+pw+36, ly+4, html.EscapeString(s.name))
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
	return chart(fmt.Sprintf("%s end-to-end latency per second (%s)", r.Workload, r.Target), "milliseconds", ss)
}

func throughputSVG(r *Result) string {
	x1, y1 := perSecond(r, func(s Second) float64 { return float64(s.Sent) })
	x2, y2 := perSecond(r, func(s Second) float64 { return float64(s.Received) })
	return chart(fmt.Sprintf("%s throughput (%s)", r.Workload, r.Target), "messages per second",
		[]series{{"sent/s", "#1f77b4", x1, y1}, {"received/s", "#2ca02c", x2, y2}})
}

func connectionsSVG(r *Result) string {
	x, y := perSecond(r, func(s Second) float64 { return float64(s.Up) })
	return chart(fmt.Sprintf("%s connections (%s)", r.Workload, r.Target), "connections", []series{{"connections", "#9467bd", x, y}})
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
