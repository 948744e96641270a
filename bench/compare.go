package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Target is one server in a comparison.
type Target struct {
	Name    string `json:"name"`
	Addr    string `json:"addr"`
	PID     int    `json:"pid,omitempty"`
	Admin   string `json:"admin,omitempty"`
	Profile string `json:"profile,omitempty"` // overrides Options.Profile for this target
	WS      string `json:"ws,omitempty"`      // overrides Options.WS: this target is a WebSocket listener on this path
	// Start, when set, is a shell command that runs the server: Compare
	// starts it (sh -c 'exec <Start>') before the first round, waits until
	// Addr accepts connections, measures its PID unless PID is set, and
	// stops it (SIGTERM, then SIGKILL after 5 s) after the last round.
	Start string `json:"start,omitempty"`
}

// startEnv puts the directory of the running binary first on PATH, so that
// `--start 'edged=edged ...'` finds the edged that `make build` put beside
// edgebench in bin/ without a path or an install.
func startEnv(env []string) []string {
	exe, err := os.Executable()
	if err != nil {
		return env
	}
	dir := filepath.Dir(exe)
	for i, kv := range env {
		if path, ok := strings.CutPrefix(kv, "PATH="); ok {
			env[i] = "PATH=" + dir + string(os.PathListSeparator) + path
			return env
		}
	}
	return append(env, "PATH="+dir)
}

// startTarget runs t.Start and waits until t.Addr accepts connections.
func startTarget(t *Target) (stop func(), err error) {
	cmd := exec.Command("/bin/sh", "-c", "exec "+t.Start)
	cmd.Env = startEnv(os.Environ())
	logw := &limitedWriter{w: &bytes.Buffer{}, n: 16 << 10}
	cmd.Stdout, cmd.Stderr = logw, logw
	cmd.SysProcAttr = workerAttr() // dies with edgebench
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start target %s: %w", t.Name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	if t.PID == 0 {
		t.PID = cmd.Process.Pid
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			return nil, fmt.Errorf("start target %s: %q exited: %s: %w", t.Name, t.Start, strings.TrimSpace(logw.String()), ErrUnreachable)
		default:
		}
		if probe(t.Addr, 500*time.Millisecond) == nil {
			return stop, nil
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("start target %s: %s not accepting after 10s: %w", t.Name, t.Addr, ErrUnreachable)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ParseTarget parses "name=host:port[,pid=PID][,admin=URL][,profile=P][,ws=/PATH]". Errors wrap
// ErrBadOption.
func ParseTarget(s string) (Target, error) {
	bad := func(why string) (Target, error) {
		return Target{}, fmt.Errorf("parse target %q (want name=host:port[,pid=PID][,admin=URL][,profile=generic|inbox][,ws=/PATH]): %s: %w", s, why, ErrBadOption)
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
		case "profile":
			if v != "generic" && v != "inbox" {
				return bad("profile must be generic or inbox")
			}
			t.Profile = v
		case "ws":
			if !strings.HasPrefix(v, "/") {
				return bad("ws must be a path, e.g. /mqtt")
			}
			t.WS = v
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
	// churn: connects (TCP, TLS handshake, CONNECT/CONNACK) per second of
	// the window, and the server's CPU in the window per connect in it;
	// the load generator's CPU is its whole run's (ramp and wind-down too)
	// per connect in the window, so it reads a little high.
	{"connects_per_s", "higher", func(r *Result) float64 {
		if r.Workload != "churn" || r.Window <= 0 {
			return 0
		}
		return float64(r.WindowConnects) / r.Window
	}},
	{"server_cpu_us_per_connect", "lower", func(r *Result) float64 {
		if r.Workload != "churn" || r.Server == nil || r.WindowConnects == 0 {
			return 0
		}
		return 1e6 * r.Server.CPUSeconds / float64(r.WindowConnects)
	}},
	{"load_cpu_us_per_connect", "lower", func(r *Result) float64 {
		if r.Workload != "churn" || r.WindowConnects == 0 {
			return 0
		}
		return 1e6 * r.LoadCPUSeconds / float64(r.WindowConnects)
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
	targets = append([]Target(nil), targets...)
	for i := range targets {
		t := &targets[i]
		if t.Start != "" {
			stop, err := startTarget(t)
			if err != nil {
				return nil, err
			}
			defer stop()
		}
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
			if t.Profile != "" {
				ro.Profile = t.Profile
			}
			if t.WS != "" {
				ro.WS = t.WS
			}
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

// CompareText renders a comparison as a table of medians and ratios;
// figures that are zero for every target (not measured) are left out.
func CompareText(c *Comparison) string {
	var b strings.Builder
	fmt.Fprintf(&b, "edgebench compare %s, %d rounds, alternating order; medians, ratio = target / %s\n", c.Workload, c.Rounds, c.Targets[0].Name)
	width := len("metric")
	for _, m := range c.Metrics {
		width = max(width, len(m.Name+" ("+m.Better+" is better)"))
	}
	fmt.Fprintf(&b, "%-*s", width, "metric")
	for _, t := range c.Targets {
		fmt.Fprintf(&b, " %12s", t.Name)
	}
	for _, t := range c.Targets[1:] {
		fmt.Fprintf(&b, " %12s", t.Name+"/"+c.Targets[0].Name)
	}
	b.WriteString("\n")
	for _, m := range c.Metrics {
		measured := false
		for _, v := range m.Medians {
			measured = measured || v != 0
		}
		if !measured && m.Name != "errors" {
			continue
		}
		fmt.Fprintf(&b, "%-*s", width, m.Name+" ("+m.Better+" is better)")
		for _, v := range m.Medians {
			fmt.Fprintf(&b, " %12.1f", v)
		}
		for _, r := range m.Ratios[1:] {
			if m.Medians[0] == 0 {
				fmt.Fprintf(&b, " %12s", "-")
				continue
			}
			fmt.Fprintf(&b, " %12.2f", r)
		}
		b.WriteString("\n")
	}
	return b.String()
}
