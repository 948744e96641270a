package bench

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgedhq/edged/bench/benchtest"
	"github.com/edgedhq/edged/internal/testenv"
	"go.uber.org/goleak"
)

// server is a target a test measures.
type server struct {
	name    string
	profile string
	start   func(t *testing.T) (addr string, pid int, admin string)
}

var servers = []server{
	{"mosquitto", "generic", func(t *testing.T) (string, int, string) {
		a, p := benchtest.StartMosquitto(t)
		return a, p, ""
	}},
	{"edged", "inbox", func(t *testing.T) (string, int, string) { return benchtest.StartEdged(t) }},
}

func quick(addr string, pid int) Options {
	o := Defaults()
	o.Target, o.ServerPID = addr, pid
	o.Workers = 2
	o.Duration = time.Second
	o.Hold = time.Second
	if testing.Verbose() {
		o.Live = os.Stderr
	}
	return o
}

func TestPairs(t *testing.T) {
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			addr, pid, admin := srv.start(t)
			for _, tc := range []struct {
				name string
				qos  int
				rate float64
			}{
				{"closed-qos0", 0, 0},
				{"closed-qos1", 1, 0},
				{"open-qos1", 1, 2000},
			} {
				t.Run(tc.name, func(t *testing.T) {
					o := quick(addr, pid)
					o.Pairs, o.QoS, o.Rate, o.Profile, o.Admin = 20, tc.qos, tc.rate, srv.profile, admin
					o.Out = t.TempDir()
					res, err := Run(context.Background(), "pairs", o)
					if err != nil {
						t.Fatalf("run: %v", err)
					}
					t.Log("\n" + Text(res))
					checkPlots(t, o.Out, "latency.svg", "throughput.svg", "connections.svg", "server.svg", "server-cpu.svg")
					if res.Received == 0 || res.Latency.Count == 0 {
						t.Fatalf("no messages measured: %+v", res)
					}
					if res.Connected != 40 {
						t.Errorf("connected %d, want 40", res.Connected)
					}
					if tc.qos == 1 && res.Acked == 0 {
						t.Errorf("qos1 but no PUBACK counted")
					}
					if len(res.Errors) != 0 {
						t.Errorf("errors: %v", res.Errors)
					}
					if res.Server == nil || res.Server.CPUSeconds <= 0 || res.Server.CPUPerMillion <= 0 {
						t.Errorf("no server CPU figures: %+v", res.Server)
					}
					// Any sample: one admin read can time out (800 ms) on a
					// loaded machine; the sampler tries again next second.
					if admin != "" && !slices.ContainsFunc(res.Server.Samples, func(x ServerSample) bool { return x.Admin != nil }) {
						t.Errorf("admin %s given but no admin stats sampled", admin)
					}
				})
			}
		})
	}
}

// TestOffline drops receivers while senders go on and proves that every
// message mosquitto accepted (PUBACKed) was delivered once receivers came
// back; with clean sessions the same check must report the loss.
func TestOffline(t *testing.T) {
	for _, tc := range []struct {
		name  string
		srv   server
		clean bool
	}{
		{"mosquitto persistent sessions lose nothing", servers[0], false},
		{"mosquitto clean sessions lose messages", servers[0], true},
		{"edged inboxes lose nothing", servers[1], false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, pid, _ := tc.srv.start(t)
			o := quick(addr, pid)
			o.Pairs, o.Rate, o.Duration, o.Profile = 20, 1000, 3*time.Second, tc.srv.profile
			o.Down, o.Up, o.Drain = 800*time.Millisecond, 800*time.Millisecond, 20*time.Second
			o.CleanSessions = tc.clean
			o.Out = t.TempDir()
			res, err := Run(context.Background(), "offline", o)
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			t.Log("\n" + Text(res))
			checkPlots(t, o.Out, "latency.svg", "throughput.svg", "connections.svg", "connects.svg")
			if res.Attempts <= 40 {
				t.Fatalf("%d connects: receivers never dropped and came back", res.Attempts)
			}
			if res.Acked == 0 {
				t.Fatalf("nothing accepted")
			}
			if !tc.clean {
				if res.Lost != 0 || res.Received < res.Acked {
					t.Errorf("lost %d, received %d of %d accepted", res.Lost, res.Received, res.Acked)
				}
				if res.Reordered != 0 {
					t.Errorf("%d messages out of order: delivery is FIFO per sender and recipient", res.Reordered)
				}
				return
			}
			if res.Lost == 0 {
				t.Errorf("clean sessions on a generic broker drop messages for absent receivers, but no loss was reported")
			}
		})
	}
}

func TestFanoutChurnConnect(t *testing.T) {
	addr, pid := benchtest.StartMosquitto(t)
	for _, tc := range []struct {
		workload string
		mod      func(*Options)
		check    func(*testing.T, *Result)
	}{
		{"fanout", func(o *Options) { o.Subs, o.Rate = 50, 100 }, func(t *testing.T, r *Result) {
			if r.Sent == 0 || r.Received < 40*r.Sent {
				t.Errorf("sent %d, received %d: want about 50 deliveries per message", r.Sent, r.Received)
			}
		}},
		{"churn", func(o *Options) { o.Conns, o.Hold, o.Ramp = 100, 300*time.Millisecond, 1000 }, func(t *testing.T, r *Result) {
			// Any reconnect proves the cycling; how many fit in the 1 s
			// window (about 300) depends on how loaded the machine is.
			if r.Connected <= 100 {
				t.Errorf("connected %d times: 100 slots cycling for 1s at 300ms should reconnect", r.Connected)
			}
		}},
		{"connect", func(o *Options) { o.Conns, o.Keepalive, o.Hold = 300, time.Second, 3*time.Second }, func(t *testing.T, r *Result) {
			// mosquitto closes a client silent for 1.5 keepalives: the
			// engine's PINGREQs keep all 300 up through a 3 s hold.
			if r.Connected != 300 || r.Touched != 300 || r.Connect.Count != 300 {
				t.Errorf("connected %d touched %d connect latencies %d, want 300", r.Connected, r.Touched, r.Connect.Count)
			}
			if r.Server == nil || r.Server.RSSAfter == 0 {
				t.Errorf("no server memory figures: %+v", r.Server)
			}
		}},
	} {
		t.Run(tc.workload, func(t *testing.T) {
			fds, before := testenv.OpenFDs(t), goleak.IgnoreCurrent()
			defer func() {
				if n := testenv.OpenFDs(t); n > fds {
					t.Errorf("file descriptors: %d before, %d after Run", fds, n)
				}
				if err := goleak.Find(before); err != nil {
					t.Errorf("goroutines left by Run: %v", err)
				}
			}()
			o := quick(addr, pid)
			tc.mod(&o)
			o.Out = t.TempDir()
			res, err := Run(context.Background(), tc.workload, o)
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			t.Log("\n" + Text(res))
			if len(res.Errors) != 0 {
				t.Errorf("errors: %v", res.Errors)
			}
			tc.check(t, res)
			files := []string{"report.json", "report.txt", "connections.svg", "connect.svg", "connects.svg", "server.svg", "server-cpu.svg"}
			if tc.workload == "fanout" {
				files = append(files, "latency.svg", "throughput.svg")
			} else {
				for _, f := range []string{"latency.svg", "throughput.svg"} {
					if _, err := os.Stat(filepath.Join(o.Out, f)); err == nil {
						t.Errorf("%s written for %s, which times no messages (a flat zero plot)", f, tc.workload)
					}
				}
			}
			var connects int64
			for _, sec := range res.Seconds {
				connects += sec.Connects
			}
			if connects == 0 || connects > res.Connected {
				t.Errorf("connects per second add up to %d of %d connected", connects, res.Connected)
			}
			for _, f := range files {
				b, err := os.ReadFile(filepath.Join(o.Out, f))
				if err != nil {
					t.Errorf("report: %v", err)
					continue
				}
				if strings.HasSuffix(f, ".svg") {
					if err := xml.Unmarshal(b, new(struct{})); err != nil {
						t.Errorf("%s is not well-formed XML: %v", f, err)
					}
				}
			}
		})
	}
}

func TestCapacityFindsKnee(t *testing.T) {
	addr, pid := benchtest.StartMosquitto(t)
	o := quick(addr, pid)
	o.Pairs = 10
	o.Capacity = CapacityOptions{ConnStep: 200, MaxConns: 420, RateStep: 1000, MaxRate: 3000, ProbeRate: 200,
		StepTime: time.Second, SLOP99: time.Minute, SLOErrors: 0.01}
	o.Out = t.TempDir()
	res, err := Run(context.Background(), "capacity", o)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	t.Log("\n" + Text(res))
	// The plots: a point per step, the SLO line, and the knee marked when
	// there is one (a loaded machine may break the first step).
	for _, f := range []string{"capacity-rate.svg", "capacity-p99.svg"} {
		b, err := os.ReadFile(filepath.Join(o.Out, f))
		svg := string(b)
		if err != nil || strings.Count(svg, `class="point"`) < len(res.Capacity.Steps) ||
			strings.Contains(svg, `class="knee"`) != (res.Capacity.Knee != nil) ||
			f == "capacity-p99.svg" && !strings.Contains(svg, `class="slo"`) {
			t.Errorf("%s: %v; want a point per step (%d), the knee iff there is one (%v), the SLO line", f, err,
				len(res.Capacity.Steps), res.Capacity.Knee != nil)
		}
	}
	o.Out = ""
	// The search follows its schedule (connections 220, 420 at the probe
	// rate, then the rate 1000..3000) until a step breaks an SLO. The p99
	// SLO is a minute, which 1 s steps cannot break; on a quiet machine no
	// SLO breaks and the search ends at the limits, but on a loaded one the
	// throughput SLO (90% of the offered rate) can break at any step. Either
	// way the steps are a prefix of the schedule, every step but the last
	// is OK, and the knee is the last OK step.
	c := res.Capacity
	sched := []struct {
		conns int
		rate  float64
	}{{220, 200}, {420, 200}, {420, 1000}, {420, 2000}, {420, 3000}}
	if c == nil || len(c.Steps) == 0 || len(c.Steps) > len(sched) {
		t.Fatalf("capacity result %+v: want 1 to %d steps", c, len(sched))
	}
	for i, st := range c.Steps {
		if st.Conns != sched[i].conns || st.Rate != sched[i].rate {
			t.Errorf("step %d: %d conns at %g/s, want %d at %g/s", i, st.Conns, st.Rate, sched[i].conns, sched[i].rate)
		}
		if i < len(c.Steps)-1 && !st.OK {
			t.Errorf("step %d broke (%s) but the search went on", i, st.Broke)
		}
	}
	last := c.Steps[len(c.Steps)-1]
	var knee *Step
	switch {
	case last.OK:
		if len(c.Steps) != len(sched) || c.Broke != "" {
			t.Errorf("last step %+v is OK, so the search must end at the limits: %d steps, broke %q", last, len(c.Steps), c.Broke)
		}
		knee = &last
	default:
		if c.Broke == "" || c.Broke != last.Broke {
			t.Errorf("search broke %q, last step broke %q", c.Broke, last.Broke)
		}
		if strings.HasPrefix(last.Broke, "p99") {
			t.Errorf("the p99 SLO of a minute broke: %s", last.Broke)
		}
		t.Logf("step %d broke on this machine: %s", len(c.Steps)-1, last.Broke)
		if len(c.Steps) > 1 {
			knee = &c.Steps[len(c.Steps)-2]
		}
	}
	if (knee == nil) != (c.Knee == nil) || knee != nil && *knee != *c.Knee {
		t.Errorf("knee %+v, want the last OK step %+v", c.Knee, knee)
	}
	// An impossible SLO breaks at the first step: no knee.
	o.Capacity.SLOP99 = time.Microsecond
	res, err = Run(context.Background(), "capacity", o)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if res.Capacity.Knee != nil || !strings.Contains(res.Capacity.Broke, "p99") {
		t.Errorf("1us p99 SLO: knee %+v broke %q, want no knee and a p99 break", res.Capacity.Knee, res.Capacity.Broke)
	}
}

func TestCompareTwoTargets(t *testing.T) {
	a, apid := benchtest.StartMosquitto(t)
	// The second target is started (and stopped) by Compare itself.
	port := benchtest.FreePort(t)
	b := fmt.Sprintf("127.0.0.1:%d", port)
	start := "mosquitto -c " + benchtest.MosquittoConf(t, port)
	o := quick("", 0)
	o.Pairs, o.Duration = 10, time.Second
	o.Out = t.TempDir()
	c, err := Compare(context.Background(), "pairs", []Target{{Name: "m1", Addr: a, PID: apid}, {Name: "m2", Addr: b, Start: start}}, 2, o)
	if err != nil {
		t.Fatalf("compare: %v", err)
	}
	t.Log("\n" + CompareText(c))
	if len(c.Runs) != 4 || c.Order[0][0] != 0 || c.Order[1][0] != 1 {
		t.Errorf("runs %d order %v: want 4 runs alternating", len(c.Runs), c.Order)
	}
	for _, m := range c.Metrics {
		if m.Name == "msgs_per_s" && (m.Medians[0] <= 0 || m.Ratios[0] != 1 || m.Ratios[1] <= 0) {
			t.Errorf("msgs_per_s medians %v ratios %v", m.Medians, m.Ratios)
		}
	}
	if _, err := os.Stat(filepath.Join(o.Out, "compare.json")); err != nil {
		t.Error(err)
	}
	for _, f := range []string{"compare-throughput.svg", "compare-latency.svg", "compare-connections.svg"} {
		b, err := os.ReadFile(filepath.Join(o.Out, f))
		if err != nil || strings.Count(string(b), "<polyline") != 4 {
			t.Errorf("%s: %v; want one line per run (4) side by side", f, err)
		}
	}
	if c.Targets[1].PID == 0 || c.Runs[1].Server == nil || c.Runs[1].Server.CPUSeconds <= 0 {
		t.Errorf("started target: pid %d, server figures %+v", c.Targets[1].PID, c.Runs[1].Server)
	}
	if err := probe(b, time.Second); err == nil {
		t.Errorf("target started by Compare still listens on %s after it returned", b)
	}
	if _, err := Compare(context.Background(), "pairs", []Target{{Name: "m1", Addr: a}, {Name: "bad", Addr: b, Start: "false"}}, 1, o); !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "exited") {
		t.Errorf("start command that exits: err %v", err)
	}
	if _, err := Compare(context.Background(), "pairs", []Target{{Name: "m1", Addr: a}, {Name: "x", Addr: "127.0.0.1:1"}}, 1, o); !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("unreachable second target: err %v", err)
	}
}

// TestCompareChurn: a churn comparison reports each target's connects per
// second and the server's and the load's CPU per connect; a pairs one
// does not (zero: left out of the table).
func TestCompareChurn(t *testing.T) {
	a, apid := benchtest.StartMosquitto(t)
	b, bpid := benchtest.StartMosquitto(t)
	o := quick("", 0)
	o.Conns, o.Hold, o.Ramp, o.Duration = 50, 50*time.Millisecond, 0, 2*time.Second
	c, err := Compare(context.Background(), "churn", []Target{{Name: "m1", Addr: a, PID: apid}, {Name: "m2", Addr: b, PID: bpid}}, 1, o)
	if err != nil {
		t.Fatalf("compare: %v", err)
	}
	text := CompareText(c)
	t.Log("\n" + text)
	for _, name := range []string{"connects_per_s", "server_cpu_us_per_connect", "load_cpu_us_per_connect"} {
		found := false
		for _, m := range c.Metrics {
			if m.Name != name {
				continue
			}
			found = true
			if m.Medians[0] <= 0 || m.Medians[1] <= 0 || m.Ratios[0] != 1 {
				t.Errorf("%s: medians %v ratios %v, want both measured", name, m.Medians, m.Ratios)
			}
		}
		if !found || !strings.Contains(text, name) {
			t.Errorf("%s missing from the comparison:\n%s", name, text)
		}
	}
	// A run's connects per second counts only the connects inside its
	// window: fewer than the run's, whose ramp and wind-down are outside.
	r := c.Runs[0]
	if r.WindowConnects <= 0 || r.WindowConnects >= r.Connected {
		t.Errorf("connects in the window %d, in the run %d: want 0 < window < run", r.WindowConnects, r.Connected)
	}
	// The per-second figures of the window's seconds add up to about
	// its connects (the ticks lag by up to a tick at either end).
	var perSec int64
	for _, sec := range r.Seconds {
		perSec += sec.Connects
	}
	if lo, hi := r.WindowConnects*8/10, r.Connected; perSec < lo || perSec > hi {
		t.Errorf("per-second connects add up to %d; want between %d (80%% of the window's %d) and the run's %d", perSec, lo, r.WindowConnects, hi)
	}
	o.Pairs, o.Duration = 5, time.Second
	c, err = Compare(context.Background(), "pairs", []Target{{Name: "m1", Addr: a, PID: apid}, {Name: "m2", Addr: b, PID: bpid}}, 1, o)
	if err != nil {
		t.Fatalf("compare pairs: %v", err)
	}
	if text := CompareText(c); strings.Contains(text, "per_connect") || strings.Contains(text, "connects_per_s") {
		t.Errorf("a pairs comparison shows churn figures:\n%s", text)
	}
}

// TestFanoutGroupEdged fans out through an edged group whose members the
// run adds and removes through the admin API.
func TestFanoutGroupEdged(t *testing.T) {
	addr, pid, admin := benchtest.StartEdged(t)
	o := quick(addr, pid)
	o.Profile, o.Admin, o.Group, o.Subs, o.Rate = "inbox", admin, "ebgroup", 30, 100
	res, err := Run(context.Background(), "fanout", o)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	t.Log("\n" + Text(res))
	if res.Sent == 0 || res.Received < 25*res.Sent || len(res.Errors) != 0 {
		t.Errorf("sent %d received %d errors %v: want about 30 deliveries per message, no errors", res.Sent, res.Received, res.Errors)
	}
	resp, err := http.Get(strings.TrimSuffix(admin, "/stats") + "/groups/ebgroup")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var g struct{ Members []string }
	if err := json.NewDecoder(resp.Body).Decode(&g); err != nil || len(g.Members) != 0 {
		t.Errorf("group members after the run: %v %v, want none", g.Members, err)
	}
	o.Admin = ""
	if _, err := Run(context.Background(), "fanout", o); !errors.Is(err, ErrBadOption) {
		t.Errorf("--group without --admin: err %v, want ErrBadOption", err)
	}
}

// TestWorkerDeathIsReported kills one worker process mid-run: Run must end
// with ErrWorker naming it, and reap every other worker.
func TestWorkerDeathIsReported(t *testing.T) {
	addr, pid := benchtest.StartMosquitto(t)
	o := quick(addr, pid)
	o.Pairs, o.Duration = 10, 20*time.Second
	exe, _ := os.Executable()
	done := make(chan error, 1)
	go func() {
		_, err := Run(context.Background(), "pairs", o)
		done <- err
	}()
	var workers []int
	for i := 0; i < 100 && len(workers) < 2; i++ {
		time.Sleep(100 * time.Millisecond)
		workers = workers[:0]
		ents, _ := filepath.Glob("/proc/[0-9]*")
		for _, e := range ents {
			p, err := strconv.Atoi(filepath.Base(e))
			if err != nil || p == pid {
				continue
			}
			if _, _, _, ppid, err := procStat(p); err == nil && ppid == os.Getpid() {
				if link, _ := os.Readlink(e + "/exe"); link == exe {
					workers = append(workers, p)
				}
			}
		}
	}
	if len(workers) < 2 {
		t.Fatalf("found %d worker processes, want 2", len(workers))
	}
	if err := syscall.Kill(workers[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrWorker) {
			t.Errorf("err %v, want ErrWorker", err)
		}
		t.Logf("Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not notice a dead worker")
	}
	for _, w := range workers[1:] {
		if err := syscall.Kill(w, 0); err == nil {
			if _, _, _, ppid, err := procStat(w); err == nil && ppid == os.Getpid() {
				t.Errorf("worker %d still running after Run returned", w)
			}
		}
	}
}

var pointsRE = regexp.MustCompile(`<polyline [^>]*points="([^"]*)"`)

// checkPlots: each named plot was written, is well-formed SVG and draws
// at least one point off the x axis (not a flat zero plot), and the phases
// of the run are shaded.
func checkPlots(t *testing.T, dir string, names ...string) {
	t.Helper()
	for _, f := range names {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Errorf("plot: %v", err)
			continue
		}
		if err := xml.Unmarshal(b, new(struct{})); err != nil {
			t.Errorf("%s is not well-formed XML: %v", f, err)
		}
		svg := string(b)
		// A point off the x axis (y of the axis: padT + plot height).
		axis := fmt.Sprintf(",%.1f", float64(svgH-padB))
		drawn := false
		for _, m := range pointsRE.FindAllStringSubmatch(svg, -1) {
			pts := strings.Fields(m[1])
			for _, p := range pts {
				drawn = drawn || !strings.HasSuffix(p, axis) // short runs: one point, drawn as a dot too
			}
		}
		if !drawn {
			t.Errorf("%s draws nothing off the axis (a flat zero plot)", f)
		}
		if !strings.HasPrefix(f, "server") && !strings.Contains(svg, `class="phase"`) {
			t.Errorf("%s shades no phase of the run", f)
		}
	}
}
