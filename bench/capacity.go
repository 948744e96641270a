package bench

import (
	"fmt"
)

// Step is one capacity step.
type Step struct {
	Conns    int     `json:"conns"`
	Rate     float64 `json:"offered_rate"`
	MsgsPerS float64 `json:"msgs_per_s"`
	P99us    int64   `json:"p99_us"`
	ErrFrac  float64 `json:"error_fraction"`
	RSS      int64   `json:"server_rss_bytes,omitempty"`
	OK       bool    `json:"ok"`
	Broke    string  `json:"broke,omitempty"` // which SLO broke
}

// CapacityResult is the capacity search: every step and the knee, the
// highest step that met every SLO.
type CapacityResult struct {
	Steps []Step `json:"steps"`
	Knee  *Step  `json:"knee,omitempty"`
	Broke string `json:"broke,omitempty"` // the SLO that ended the search ("" = limits reached)
}

// capacity steps connections up (with a probe message rate), then the
// message rate at the highest connection count, until an SLO breaks.
func (r *run) capacity() error {
	o, c := r.o, r.o.Capacity
	cr := &CapacityResult{}
	r.res.Capacity = cr
	base := 2 * o.Pairs
	if err := r.rampTo(base, o.Ramp); err != nil {
		return err
	}
	if err := r.settle(r.subscribers()); err != nil {
		return err
	}
	r.setRate(c.ProbeRate, false)
	conns := base
	for {
		conns = min(c.MaxConns, conns+c.ConnStep)
		if err := r.rampTo(conns, o.Ramp); err != nil {
			return err
		}
		st, err := r.step(conns, c.ProbeRate)
		if err != nil {
			return err
		}
		cr.Steps = append(cr.Steps, st)
		if !st.OK {
			cr.Broke = st.Broke
			return nil
		}
		cr.Knee = &cr.Steps[len(cr.Steps)-1]
		if conns >= c.MaxConns {
			break
		}
	}
	for rate := c.RateStep; rate <= c.MaxRate; rate += c.RateStep {
		r.setRate(rate, false)
		st, err := r.step(conns, rate)
		if err != nil {
			return err
		}
		cr.Steps = append(cr.Steps, st)
		if !st.OK {
			cr.Broke = st.Broke
			return nil
		}
		cr.Knee = &cr.Steps[len(cr.Steps)-1]
	}
	return nil
}

// step measures one capacity step and checks the SLOs.
func (r *run) step(conns int, rate float64) (Step, error) {
	c := r.o.Capacity
	w := r.openWindow()
	if err := r.hold(fmt.Sprintf("%dc", conns), c.StepTime); err != nil {
		return Step{}, err
	}
	r.closeWindow(w)
	s := r.sum()
	st := Step{Conns: conns, Rate: rate, MsgsPerS: r.res.MsgsPerS, P99us: r.stepLat.ValueAtQuantile(99)}
	ops := (s.Sent - w.tick.Sent) + (s.Attempts - w.tick.Attempts)
	if ops > 0 {
		st.ErrFrac = float64(errTotal(s)-errTotal(w.tick)) / float64(ops)
	}
	if x, ok := r.smp.now(); ok {
		st.RSS = x.RSS
	}
	switch {
	case s.Up < conns:
		st.Broke = fmt.Sprintf("connections: %d of %d up", s.Up, conns)
	case st.P99us > c.SLOP99.Microseconds():
		st.Broke = fmt.Sprintf("p99 %s > %s", fmtUs(st.P99us), c.SLOP99)
	case st.ErrFrac > c.SLOErrors:
		st.Broke = fmt.Sprintf("errors %.3f%% > %.3f%%", st.ErrFrac*100, c.SLOErrors*100)
	case c.SLORSS > 0 && st.RSS > c.SLORSS:
		st.Broke = fmt.Sprintf("server rss %s > %s", fmtBytes(st.RSS), fmtBytes(c.SLORSS))
	case st.MsgsPerS < 0.9*rate:
		st.Broke = fmt.Sprintf("throughput %.0f/s < 90%% of offered %.0f/s", st.MsgsPerS, rate)
	default:
		st.OK = true
	}
	if r.o.Live != nil {
		verdict := "ok"
		if !st.OK {
			verdict = "BROKE: " + st.Broke
		}
		fmt.Fprintf(r.o.Live, "step conns %d rate %.0f/s: %.0f msg/s p99 %s err %.3f%% -> %s\n",
			conns, rate, st.MsgsPerS, fmtUs(st.P99us), st.ErrFrac*100, verdict)
	}
	return st, nil
}
