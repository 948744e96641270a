package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/edgedhq/edged/internal/buildinfo"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/edgedhq/edged/bench"
	"github.com/edgedhq/edged/bench/capture"
)

// Exit codes.
const (
	exitOK    = 0
	exitRun   = 1 // the run failed: unreachable target, worker failure
	exitUsage = 2 // bad command line
	exitCheck = 3 // the run finished but a check failed (offline: messages lost)
)

// command is one verb of the command table.
type command struct {
	name    string
	summary string
	about   string
	groups  []string // flag groups, see addFlags
}

var commands = []command{
	{"connect", "ramp N connections at R per second and hold them",
		"Opens --conns connections at --ramp per second, has each carry one message\n" +
			"(to itself), holds them for --hold with keepalives, then disconnects.\n" +
			"With --server-pid it reports the server's bytes per connection: RSS after\n" +
			"the connections settled and carried a message, minus RSS before.",
		[]string{"conns", "ramp", "hold"}},
	{"pairs", "1:1 messaging between K sender/receiver pairs",
		"Each pair is a sender and a receiver connection. Closed loop (--rate 0):\n" +
			"each pair keeps --window messages in flight. Open loop (--rate R): R\n" +
			"messages per second in all, each stamped with its intended send time so\n" +
			"queueing shows in the latency (no coordinated omission).\n" +
			"--profile generic: each receiver subscribes its own topic (any broker).\n" +
			"--profile inbox: senders publish u/<receiver>/<mid> (edged's inboxes).",
		[]string{"pairs", "rate", "window", "duration", "ramp"}},
	{"fanout", "one publisher to many subscribers of one topic",
		"One connection publishes --rate messages per second to one topic that\n" +
			"--subs connections subscribe; latency is measured at every subscriber.\n" +
			"With --group G (edged): the run's connections join group G through the\n" +
			"admin API, the publisher sends g/G/<mid> and every member receives it in\n" +
			"its inbox; the members are removed again at the end.",
		[]string{"subs", "rate", "duration", "ramp"}},
	{"offline", "receivers drop and come back while senders go on; checks nothing is lost",
		"Pairs with persistent sessions (clean session 0) and QoS 1. Receivers drop\n" +
			"abruptly (no DISCONNECT) for about --down every --up while senders keep\n" +
			"sending at --rate. Then senders stop, every receiver comes back and\n" +
			"edgebench waits up to --drain for the rest. Every message the server\n" +
			"PUBACKed must arrive: lost > 0 exits with status 3.",
		[]string{"pairs", "rate", "duration", "ramp", "offline"}},
	{"churn", "connect/disconnect storms",
		"Keeps --conns connection slots cycling: connect (at most --ramp per\n" +
			"second), stay up about --hold, DISCONNECT, connect again, for --duration.",
		[]string{"conns", "ramp", "hold", "duration"}},
	{"capacity", "step connections, then message rate, until an SLO breaks; report the knee",
		"Starts --pairs pairs sending --probe-rate messages per second, adds\n" +
			"--conn-step idle connections per step up to --max-conns, then raises the\n" +
			"rate by --rate-step per step up to --max-rate. Each step is measured for\n" +
			"--step-time; a step breaks when p99 > --slo-p99, errors > --slo-errors,\n" +
			"server RSS > --slo-rss, connections fail, or throughput falls below 90%\n" +
			"of the offered rate. The knee is the last step that held every SLO.",
		[]string{"pairs", "ramp", "capacity"}},
	{"compare", "one workload against several targets, alternating rounds, with ratios",
		"Runs --workload against every --target, --rounds times, alternating the\n" +
			"order (A B, B A, ...) so a noisy machine drifts evenly over all targets,\n" +
			"and prints the median of each figure per target and its ratio to the\n" +
			"first target. Name each server and its address; start it yourself\n" +
			"(give pid=) or let edgebench start and stop it with --start:\n" +
			"  --target mosquitto=127.0.0.1:1883,pid=1234 --target edged=127.0.0.1:1884,profile=inbox\n" +
			"  --start 'edged=edged --listen 127.0.0.1:1884'\n" +
			"(pid enables server memory/CPU figures; admin=URL adds GET /stats;\n" +
			"profile=inbox|generic overrides --profile for that target, e.g. for edged;\n" +
			"ws=/PATH makes that target a WebSocket listener, e.g. edged's ws:// one).",
		[]string{"conns", "ramp", "hold", "pairs", "rate", "window", "duration", "subs", "offline", "compare"}},
}

// external verbs live in other packages, with their own flags and help.
var external = []struct {
	name, summary string
	main          func(args []string, stdout, stderr io.Writer) int
}{
	{"record", "capture a server port's MQTT traffic into a pcap file (bench/capture)", capture.RecordMain},
	{"replay", "replay recorded sessions against a target on their schedule (bench/capture)", capture.ReplayMain},
}

func topUsage(w io.Writer) {
	fmt.Fprint(w, `edgebench: capacity benchmark for MQTT edge hosts (edged, mosquitto, any MQTT 3.1.1 broker)

Usage:
  edgebench <workload> [flags]
  edgebench <workload> --help
  edgebench --version

Workloads:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "\nTraffic capture:\n")
	for _, c := range external {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Load runs in worker processes (this binary re-executed), at most
--max-per-worker sockets each and at least one per CPU, bound to --src
addresses so ephemeral ports do not run out. Each second a live line goes to
stderr; the report goes to stdout (text, or JSON with --json), and --out DIR
gets report.json, report.txt and SVG plots.

Flags take one or two dashes (-rate or --rate). Exit status: 0 ok, 1 run failed (e.g. target unreachable), 2 bad command
line, 3 a check failed (offline: messages lost).
`)
}

// flagSet builds the flags of c into o. It returns extra values the caller
// resolves after parsing.
type extras struct {
	json, quiet bool
	targets     []bench.Target
	starts      [][2]string // compare --start name=command
	workload    string
	rounds      int
	sloErrPct   float64
}

func flagSet(c command, o *bench.Options, x *extras) *flag.FlagSet {
	fs := flag.NewFlagSet("edgebench "+c.name, flag.ContinueOnError)
	has := map[string]bool{}
	for _, g := range c.groups {
		has[g] = true
	}
	if has["compare"] {
		fs.Func("target", "a target `name=host:port[,pid=PID][,admin=URL][,profile=P][,ws=/PATH]` (repeat; at least two)", func(s string) error {
			t, err := bench.ParseTarget(s)
			if err == nil {
				x.targets = append(x.targets, t)
			}
			return err
		})
		fs.Func("start", "start a target's server: `name=command` (run with sh -c before the first round, stopped after the last; its pid gives server figures)", func(s string) error {
			name, cmdline, ok := strings.Cut(s, "=")
			if !ok || name == "" || cmdline == "" {
				return fmt.Errorf("want name=command, got %q", s)
			}
			x.starts = append(x.starts, [2]string{name, cmdline})
			return nil
		})
		fs.StringVar(&x.workload, "workload", "pairs", "the `workload` to compare: connect, pairs, fanout, offline or churn")
		fs.IntVar(&x.rounds, "rounds", 3, "rounds; each runs every target once")
	} else {
		fs.StringVar(&o.Target, "target", o.Target, "MQTT server `host:port` (IPv4)")
		fs.IntVar(&o.ServerPID, "server-pid", 0, "server process id on this host: sample RSS, CPU and threads of its process tree from /proc")
		fs.StringVar(&o.Admin, "admin", "", "server counters `URL`: a GET answering a flat JSON object of numbers, e.g. edged's http://127.0.0.1:9090/server/stats (sends $EDGED_ADMIN_TOKEN if set); skipped when absent")
	}
	fs.Func("src", "source IPv4 `addresses` bound before connect, e.g. 127.0.0.2-127.0.0.100 (default: kernel's choice; loopback runs over 20000 connections use 127.0.0.2-127.0.0.33)", func(s string) error {
		v, err := bench.ParseSrc(s)
		o.Src = v
		return err
	})
	fs.IntVar(&o.Workers, "workers", 0, "worker processes (0: one per CPU, more if connections need them)")
	fs.IntVar(&o.MaxPerWorker, "max-per-worker", o.MaxPerWorker, "sockets per worker process (the per-process file limit is 20000)")
	fs.StringVar(&o.Profile, "profile", o.Profile, "topic `profile`: generic (plain topics) or inbox (edged's u/<user>/<mid> inboxes)")
	fs.IntVar(&o.QoS, "qos", o.QoS, "publish and subscribe QoS, 0 or 1")
	fs.IntVar(&o.Size, "size", o.Size, "payload `bytes` (at least 23: the timestamp header)")
	fs.DurationVar(&o.Keepalive, "keepalive", o.Keepalive, "MQTT keepalive")
	fs.DurationVar(&o.ConnectTimeout, "connect-timeout", o.ConnectTimeout, "limit for TCP connect plus CONNACK")
	fs.IntVar(&o.MaxPending, "max-pending", o.MaxPending, "connects in progress per worker")
	fs.BoolVar(&o.TLS, "tls", false, "connect over TLS (each connection through a crypto/tls relay in the worker; at most 5000 per worker)")
	fs.StringVar(&o.CAFile, "cafile", "", "PEM `file` of the CAs that --tls trusts (default: the system's)")
	fs.BoolVar(&o.TLSResume, "tls-resume", false, "with --tls: resume sessions from tickets (default: every handshake is full)")
	fs.StringVar(&o.WS, "ws", "", "connect over WebSocket to this `path` of the target (e.g. /mqtt), subprotocol mqtt, framed by the worker's engine; with --tls wss://, through the TLS relay")
	fs.StringVar(&o.Username, "username", "", "MQTT username (profile inbox: default the client id)")
	fs.StringVar(&o.Password, "password", "", "MQTT password")
	fs.StringVar(&o.Out, "out", "", "write report.json, report.txt and SVG plots into `DIR`")
	fs.BoolVar(&x.json, "json", false, "print the report as JSON instead of text")
	fs.BoolVar(&x.quiet, "quiet", false, "no live lines on stderr")
	if has["conns"] {
		fs.IntVar(&o.Conns, "conns", o.Conns, "connections")
	}
	if has["ramp"] {
		fs.Float64Var(&o.Ramp, "ramp", o.Ramp, "connects per second (0: as fast as possible)")
	}
	if has["hold"] {
		fs.DurationVar(&o.Hold, "hold", o.Hold, "connect: how long to hold the connections; churn: how long each stays up")
	}
	if c.name == "connect" || c.name == "compare" {
		fs.BoolVar(&o.Persistent, "persistent", false, "connect: persistent sessions (clean session 0) instead of clean ones")
	}
	if has["pairs"] {
		fs.IntVar(&o.Pairs, "pairs", o.Pairs, "sender/receiver pairs")
	}
	if has["rate"] {
		fs.Float64Var(&o.Rate, "rate", o.Rate, "messages per second in all (pairs: 0 = closed loop)")
	}
	if has["window"] {
		fs.IntVar(&o.Window, "window", o.Window, "closed loop: messages in flight per pair")
	}
	if has["duration"] {
		fs.DurationVar(&o.Duration, "duration", o.Duration, "measured time")
	}
	if has["subs"] {
		fs.IntVar(&o.Subs, "subs", o.Subs, "fanout subscribers")
		fs.StringVar(&o.Group, "group", "", "fanout to this edged group instead of a topic: members (this run's connections) are added and removed through the admin API; needs --profile inbox and --admin")
	}
	if has["offline"] {
		fs.DurationVar(&o.Down, "down", o.Down, "offline: about how long a receiver stays away")
		fs.DurationVar(&o.Up, "up", o.Up, "offline: about how long a receiver stays connected")
		fs.DurationVar(&o.Drain, "drain", o.Drain, "offline: longest wait for queued messages after senders stop")
		fs.BoolVar(&o.CleanSessions, "clean-sessions", false, "offline: receivers use clean sessions (a generic broker then drops messages: shows a failing check)")
	}
	if has["capacity"] {
		cp := &o.Capacity
		fs.IntVar(&cp.ConnStep, "conn-step", cp.ConnStep, "connections added per step")
		fs.IntVar(&cp.MaxConns, "max-conns", cp.MaxConns, "last connection step")
		fs.Float64Var(&cp.RateStep, "rate-step", cp.RateStep, "messages per second added per step")
		fs.Float64Var(&cp.MaxRate, "max-rate", cp.MaxRate, "last rate step")
		fs.Float64Var(&cp.ProbeRate, "probe-rate", cp.ProbeRate, "message rate while connections are stepped")
		fs.DurationVar(&cp.StepTime, "step-time", cp.StepTime, "measured time per step")
		fs.DurationVar(&cp.SLOP99, "slo-p99", cp.SLOP99, "SLO: p99 end-to-end latency")
		x.sloErrPct = cp.SLOErrors * 100
		fs.Float64Var(&x.sloErrPct, "slo-errors", x.sloErrPct, "SLO: errors in `percent` of connects plus messages")
		fs.Func("slo-rss", "SLO: server RSS `size`, e.g. 8GiB (needs --server-pid; default none)", func(s string) error {
			v, err := bench.ParseBytes(s)
			cp.SLORSS = v
			return err
		})
	}
	return fs
}

func printUsage(w io.Writer, c command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: edgebench %s [flags]\n\n%s.\n\n%s\n\nFlags:\n", c.name, c.summary, c.about)
	fs.SetOutput(w)
	fs.PrintDefaults()
}

func usageErr(stderr io.Writer, name string, err error) int {
	fmt.Fprintf(stderr, "edgebench %s: %v\nRun 'edgebench %s --help' for usage.\n", name, err, name)
	return exitUsage
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		topUsage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		topUsage(stdout)
		return exitOK
	case "-version", "--version", "version":
		fmt.Fprintf(stdout, "edgebench %s\n", buildinfo.String(version))
		return exitOK
	}
	for _, x := range external {
		if x.name == args[0] {
			return x.main(args[1:], stdout, stderr)
		}
	}
	var c *command
	for i := range commands {
		if commands[i].name == args[0] {
			c = &commands[i]
		}
	}
	if c == nil {
		fmt.Fprintf(stderr, "edgebench: unknown workload %q\nRun 'edgebench --help' for usage.\n", args[0])
		return exitUsage
	}
	o := bench.Defaults()
	var x extras
	fs := flagSet(*c, &o, &x)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout, *c, fs)
			return exitOK
		}
		return usageErr(stderr, c.name, err)
	}
	if fs.NArg() > 0 {
		return usageErr(stderr, c.name, fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	o.Capacity.SLOErrors = x.sloErrPct / 100
	if !x.quiet {
		o.Live = stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if c.name == "compare" {
		return runCompare(ctx, o, x, stdout, stderr)
	}
	if err := o.Validate(c.name); err != nil {
		return usageErr(stderr, c.name, err)
	}
	res, err := bench.Run(ctx, c.name, o)
	if err != nil {
		if res != nil && errors.Is(err, context.Canceled) {
			fmt.Fprint(stdout, bench.Text(res)) // interrupted: what was measured so far
		}
		fmt.Fprintf(stderr, "edgebench %s: %v\n", c.name, err)
		return exitRun
	}
	if x.json {
		b, _ := json.MarshalIndent(res, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
	} else {
		fmt.Fprint(stdout, bench.Text(res))
	}
	if c.name == "offline" && (res.Lost > 0 || res.Received == 0) {
		fmt.Fprintf(stderr, "edgebench offline: check failed: %d accepted messages lost, %d received\n", res.Lost, res.Received)
		return exitCheck
	}
	return exitOK
}

func runCompare(ctx context.Context, o bench.Options, x extras, stdout, stderr io.Writer) int {
	if len(x.targets) < 2 {
		return usageErr(stderr, "compare", fmt.Errorf("need at least two --target name=host:port, got %d", len(x.targets)))
	}
	if x.workload == "capacity" || x.workload == "compare" {
		return usageErr(stderr, "compare", fmt.Errorf("--workload %s cannot be compared (use connect, pairs, fanout, offline or churn)", x.workload))
	}
	for _, st := range x.starts {
		found := false
		for i := range x.targets {
			if x.targets[i].Name == st[0] {
				x.targets[i].Start, found = st[1], true
			}
		}
		if !found {
			return usageErr(stderr, "compare", fmt.Errorf("--start %s: no --target named %s", st[0], st[0]))
		}
	}
	o.Target = x.targets[0].Addr
	if err := o.Validate(x.workload); err != nil {
		return usageErr(stderr, "compare", err)
	}
	for _, t := range x.targets {
		v := o
		v.Target = t.Addr
		if err := v.Validate(x.workload); err != nil {
			return usageErr(stderr, "compare", fmt.Errorf("target %s: %w", t.Name, err))
		}
	}
	cmp, err := bench.Compare(ctx, x.workload, x.targets, x.rounds, o)
	if err != nil {
		fmt.Fprintf(stderr, "edgebench compare: %v\n", err)
		return exitRun
	}
	if x.json {
		b, _ := json.MarshalIndent(cmp, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
	} else {
		fmt.Fprint(stdout, bench.CompareText(cmp))
	}
	return exitOK
}
