package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Target is one server in a comparison.
type Target struct {
	Name  string `json:"name"`
	Addr  string `json:"addr"`
	PID   int    `json:"pid,omitempty"`
	Admin string `json:"admin,omitempty"`
}

// ParseTarget parses "name=host:port[,pid=PID][,admin=URL]". Errors wrap
// ErrBadOption.
func ParseTarget(s string) (Target, error) {
	bad := func(why string) (Target, error) {
		return Target{}, fmt.Errorf("parse target %q (want name=host:port[,pid=PID][,admin=URL]): %s: %w", s, why, ErrBadOption)
	}
	name, rest, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return bad("missing name=")
	}
	parts := strings.Split(rest, ",")
	t := Target{Name: name, Addr: parts[0]}
	if t.Addr == "" {
		return bad("missing address")
	}
	for _, p := range parts[1:] {
		k, v, _ := strings.Cut(p, "=")
		switch k {
		case "pid":
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return bad("pid must be a positive number")
			}
			t.PID = n
		case "admin":
			t.Admin = v
		default:
			return bad("unknown key " + strconv.Quote(k))
		}
	}
	return t, nil
}

// Metric is one compared figure: its value per target per round, the
// median per target, and each target's median divided by the first's.
type Metric struct {
	Name    string      `json:"name"`
	Better  string      `json:"better"` // "higher" or "lower"
	Values  [][]float64 `json:"values"` // [target][round]
	Medians []float64   `json:"medians"`
	Ratios  []float64   `json:"ratios"` // median / first target's median
}

// Comparison is the result of Compare.
type Comparison struct {
	Workload string    `json:"workload"`
	Rounds   int       `json:"rounds"`
	Targets  []Target  `json:"targets"`
	Order    [][]int   `json:"order"` // target indices run in each round
	Metrics  []Metric  `json:"metrics"`
	Runs     []*Result `json:"runs"`
}

var compareMetrics = []struct {
	name, better string
	get          func(*Result) float64
}{
	{"msgs_per_s", "higher", func(r *Result) float64 { return r.MsgsPerS }},
	{"latency_p50_us", "lower", func(r *Result) float64 { return float64(r.Latency.P50) }},
	{"latency_p99_us", "lower", func(r *Result) float64 { return float64(r.Latency.P99) }},
	{"connect_p99_us", "lower", func(r *Result) float64 { return float64(r.Connect.P99) }},
	{"errors", "lower", func(r *Result) float64 { return float64(errTotal(Tick{Errors: r.Errors})) }},
	{"server_bytes_per_conn", "lower", func(r *Result) float64 {
		if r.Server == nil {
			return 0
		}
		return r.Server.BytesPerConn
	}},
	{"server_cpu_s_per_million_msgs", "lower", func(r *Result) float64 {
		if r.Server == nil {
			return 0
		}
		return r.Server.CPUPerMillion
	}},
}

// Compare runs workload against every target for rounds rounds, alternating
// the order each round (A B, B A, ...) so slow drift of a shared machine
// falls evenly on every target, and reports medians and ratios. o.Target,
// o.ServerPID and o.Admin are taken from each target; o.Out, when set, gets
// compare.json, compare.txt and one report directory per run.
func Compare(ctx context.Context, workload string, targets []Target, rounds int, o Options) (*Comparison, error) {
	if len(targets) < 2 {
		return nil, fmt.Errorf("compare needs at least two targets, got %d: %w", len(targets), ErrBadOption)
	}
	if rounds < 1 {
		return nil, fmt.Errorf("compare rounds %d (want >= 1): %w", rounds, ErrBadOption)
	}
	if workload == "capacity" {
		return nil, fmt.Errorf("compare runs one workload, not capacity: %w", ErrBadOption)
	}
	for _, t := range targets {
		if err := probe(t.Addr, 3*time.Second); err != nil {
			return nil, fmt.Errorf("target %s: %w", t.Name, err)
		}
	}
	c := &Comparison{Workload: workload, Rounds: rounds, Targets: targets}
	vals := make([][][]float64, len(compareMetrics))
	for m := range vals {
		vals[m] = make([][]float64, len(targets))
	}
	for round := 0; round < rounds; round++ {
		order := make([]int, len(targets))
		for i := range order {
			order[i] = i
			if round%2 == 1 {
				order[i] = len(targets) - 1 - i
			}
		}
		c.Order = append(c.Order, order)
		for _, ti := range order {
			t := targets[ti]
			ro := o
			ro.Target, ro.ServerPID, ro.Admin = t.Addr, t.PID, t.Admin
			if o.Out != "" {
				ro.Out = filepath.Join(o.Out, fmt.Sprintf("%s-round%d", t.Name, round+1))
			}
			if o.Live != nil {
				fmt.Fprintf(o.Live, "== round %d/%d: %s (%s)\n", round+1, rounds, t.Name, t.Addr)
			}
			res, err := Run(ctx, workload, ro)
			if err != nil {
				return c, fmt.Errorf("compare %s round %d: %w", t.Name, round+1, err)
			}
			res.Name = t.Name
			c.Runs = append(c.Runs, res)
			for m, cm := range compareMetrics {
				vals[m][ti] = append(vals[m][ti], cm.get(res))
			}
		}
	}
	for m, cm := range compareMetrics {
		met := Metric{Name: cm.name, Better: cm.better, Values: vals[m]}
		for ti := range targets {
			met.Medians = append(met.Medians, median(vals[m][ti]))
		}
		for ti := range targets {
			r := 0.0
			if met.Medians[0] != 0 {
				r = met.Medians[ti] / met.Medians[0]
			}
			met.Ratios = append(met.Ratios, r)
		}
		c.Metrics = append(c.Metrics, met)
	}
	if o.Out != "" {
		if err := writeComparison(o.Out, c); err != nil {
			return c, err
		}
	}
	return c, nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// CompareText renders a comparison as a table of medians and ratios.
func CompareText(c *Comparison) string {
	var b strings.Builder
	fmt.Fprintf(&b, "edgebench compare %s, %d rounds, alternating order; medians, ratio = target / %s\n", c.Workload, c.Rounds, c.Targets[0].Name)
	fmt.Fprintf(&b, "%-30s", "metric")
	for _, t := range c.Targets {
		fmt.Fprintf(&b, " %14s", t.Name)
	}
	for _, t := range c.Targets[1:] {
		fmt.Fprintf(&b, " %10s", t.Name+"/"+c.Targets[0].Name)
	}
	b.WriteString("\n")
	for _, m := range c.Metrics {
		fmt.Fprintf(&b, "%-30s", m.Name+" ("+m.Better+")")
		for _, v := range m.Medians {
			fmt.Fprintf(&b, " %14.1f", v)
		}
		for _, r := range m.Ratios[1:] {
			fmt.Fprintf(&b, " %10.2f", r)
		}
		b.WriteString("\n")
	}
	return b.String()
}
