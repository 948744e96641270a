package obs

import (
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgedhq/edged/netpoll"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a Reporter. Every source is optional; a nil source
// contributes no figures. The sources are called once per sample from one
// goroutine and must be safe to call from it (any goroutine).
type Options struct {
	// LoopStats returns the event loops' counters (netpoll.Engine.Stats).
	LoopStats func() []netpoll.LoopStats
	// Counters returns the server's monotonic counters by name (messages
	// in and out, closes by reason, ...): each becomes a per-second rate
	// figure and a Prometheus counter. Names should be snake_case and must
	// not repeat the reporter's own figure names (conns, accepts, rss, ...).
	Counters func() map[string]int64
	// Gauges returns the server's levels by name (clients, inbox totals).
	Gauges func() map[string]int64
	// FillCounters and FillGauges, if set, are used instead of Counters
	// and Gauges: they write the same figures into a map the reporter
	// clears and reuses, so that a sample of an idle server need allocate
	// nothing (its garbage is RSS until the next collection).
	FillCounters, FillGauges func(m map[string]int64)
	// Queues returns the queues worth watching (per-connection backlog,
	// inboxes); it may leave out empty or short ones.
	Queues func() []QueueInfo
	// Info, if set, is called for each /stats request and its result is
	// served as the snapshot's "server" field (e.g. the server's own stats
	// struct, closes by reason included).
	Info func() any
	// Knobs are the server's own knobs (accept pause, queue cap, in-flight
	// window); the runtime ones and the alarm thresholds are added.
	Knobs []Knob
	// Thresholds override DefaultThresholds per queue kind (0 disables).
	Thresholds map[string]int64
	// Interval between samples (default 1 s); History is the number of
	// samples each figure keeps (default 300, five minutes at 1 s); TopN is
	// the length of the longest-queues list (default 10).
	Interval time.Duration
	History  int
	TopN     int
	// Logger receives knob changes and alarms (default slog.Default()).
	Logger *slog.Logger
	// LogLevel is the level behind Logger's handler, changed by the
	// log_level knob (default: a new LevelVar, see Reporter.LogLevel).
	LogLevel *slog.LevelVar
	// StatsPath is where Mount serves the JSON stats (default /stats).
	StatsPath string
}

// Reporter samples its sources, keeps the figures and alarms, and serves
// them. Its methods are safe for concurrent use.
type Reporter struct {
	opt   Options
	log   *slog.Logger
	level *slog.LevelVar
	knobs *knobTable
	reg   *prometheus.Registry
	proc  *procReader
	rt    *rtReader

	mu         sync.Mutex // guards the fields below
	series     map[string]*series
	order      []string // series names in the order they appeared
	last       time.Time
	n          int64 // samples taken
	loops      []LoopView
	prevLoops  []netpoll.LoopStats
	queues     map[qkey]*qstate
	alarms     map[qkey]*Alarm
	thresholds map[string]int64
	top        []QueueView
	fired      int64
	cost       time.Duration
	// ctrs and gauges are the maps FillCounters and FillGauges fill,
	// keys the sorted names of one of them, names the figure names by
	// source name (metricName): reused from sample to sample. Guarded
	// by sampling.
	ctrs, gauges map[string]int64
	keys         []string
	names        map[string]string

	sampling sync.Mutex // one Sample at a time (sources are not reentrant)
	runMu    sync.Mutex // guards stop, done
	stop     chan struct{}
	done     chan struct{}
}

// LoopView is one event loop in /stats.
type LoopView struct {
	Loop        int     `json:"loop"`
	Conns       int64   `json:"conns"`
	AcceptsPerS float64 `json:"accepts_per_s"`
	Util        float64 `json:"util"` // busy / (busy + waiting) over the last interval
	QueuedBytes int64   `json:"queued_bytes"`
	QueueLen    int64   `json:"queue_len"`
}

// Figure is one sampled figure. For a counter Value is the rate per second
// over the last interval and Total the running total.
type Figure struct {
	Name    string    `json:"name"`
	Unit    string    `json:"unit"`
	Counter bool      `json:"counter,omitempty"`
	Value   float64   `json:"value"`
	Total   float64   `json:"total,omitempty"`
	Avg1    float64   `json:"avg1"`
	Avg10   float64   `json:"avg10"`
	Avg100  float64   `json:"avg100"`
	History []float64 `json:"history,omitempty"`
}

// Snapshot is the reporter's state as /stats serves it.
type Snapshot struct {
	Time         time.Time   `json:"time"`
	IntervalS    float64     `json:"interval_s"`
	Samples      int64       `json:"samples"`
	SampleCostUs float64     `json:"sample_cost_us"` // wall time of the last sample
	Figures      []Figure    `json:"figures"`
	Loops        []LoopView  `json:"loops"`
	TopQueues    []QueueView `json:"top_queues"`
	Alarms       []Alarm     `json:"alarms"`
	AlarmsFired  int64       `json:"alarms_fired"`
	Server       any         `json:"server,omitempty"` // Options.Info, on /stats only
}

// Figure returns the named figure and whether it exists.
func (s *Snapshot) Figure(name string) (Figure, bool) {
	i := slices.IndexFunc(s.Figures, func(f Figure) bool { return f.Name == name })
	if i < 0 {
		return Figure{}, false
	}
	return s.Figures[i], true
}

// New builds a Reporter; call Start to sample in the background (or Sample
// by hand). It returns an error wrapping ErrBadValue for invalid Options
// (a knob without a name or Get, a name used twice, a negative setting).
func New(opt Options) (*Reporter, error) {
	if opt.Interval < 0 || opt.History < 0 || opt.TopN < 0 {
		return nil, fmt.Errorf("check options: negative interval, history or top: %w", ErrBadValue)
	}
	if opt.Interval == 0 {
		opt.Interval = time.Second
	}
	if opt.History == 0 {
		opt.History = 300
	}
	if opt.TopN == 0 {
		opt.TopN = 10
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.LogLevel == nil {
		opt.LogLevel = new(slog.LevelVar)
	}
	if opt.StatsPath == "" {
		opt.StatsPath = "/stats"
	}
	r := &Reporter{
		opt: opt, log: opt.Logger, level: opt.LogLevel,
		proc: newProcReader(), rt: newRTReader(),
		series: map[string]*series{}, queues: map[qkey]*qstate{}, alarms: map[qkey]*Alarm{},
		thresholds: map[string]int64{},
	}
	for k, v := range DefaultThresholds {
		r.thresholds[k] = v
	}
	for k, v := range opt.Thresholds {
		if v < 0 {
			return nil, fmt.Errorf("check options: threshold %s = %d: %w", k, v, ErrBadValue)
		}
		r.thresholds[k] = v
	}
	knobs := append(RuntimeKnobs(opt.LogLevel), opt.Knobs...)
	for kind := range r.thresholds {
		knobs = append(knobs, r.thresholdKnob(kind))
	}
	var err error
	if r.knobs, err = newKnobTable(r.log, knobs); err != nil {
		return nil, err
	}
	r.reg = r.newRegistry()
	return r, nil
}

func (r *Reporter) thresholdKnob(kind string) Knob {
	return Knob{
		Name: "alarm_" + kind,
		Help: "queue alarm threshold for " + kind + " queues (0 disables)",
		Get: func() string {
			r.mu.Lock()
			defer r.mu.Unlock()
			return strconv.FormatInt(r.thresholds[kind], 10)
		},
		Set: func(v string) error {
			n, err := parseInt(v, 0, math.MaxInt64)
			if err != nil {
				return err
			}
			r.mu.Lock()
			r.thresholds[kind] = n
			r.mu.Unlock()
			return nil
		},
	}
}

// LogLevel returns the level the log_level knob changes: build the
// server's log handler with it (slog.HandlerOptions{Level: r.LogLevel()}).
func (r *Reporter) LogLevel() *slog.LevelVar { return r.level }

// Registry returns the reporter's private Prometheus registry (the
// reporter's figures plus the Go and process collectors) for callers that
// want to add their own collectors.
func (r *Reporter) Registry() *prometheus.Registry { return r.reg }

// Start samples once now and then every Interval until Close.
func (r *Reporter) Start() {
	r.runMu.Lock()
	defer r.runMu.Unlock()
	if r.stop != nil {
		return
	}
	r.stop, r.done = make(chan struct{}), make(chan struct{})
	r.Sample()
	go r.run(r.stop, r.done)
}

func (r *Reporter) run(stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(r.opt.Interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			r.Sample()
		}
	}
}

// Close stops the sampler and waits for it; the routes keep serving the
// last snapshot. It is safe to call more than once.
func (r *Reporter) Close() error {
	r.runMu.Lock()
	defer r.runMu.Unlock()
	if r.stop != nil {
		select {
		case <-r.stop:
		default:
			close(r.stop)
			<-r.done
		}
	}
	return nil
}

// Sample takes one sample now: reads every source, updates the figures
// and the queues, and logs alarms that fired or cleared.
func (r *Reporter) Sample() {
	r.sampling.Lock()
	defer r.sampling.Unlock()
	t0 := time.Now()
	var ps procSample
	r.proc.read(&ps)
	rs := r.rt.read()
	var loops []netpoll.LoopStats
	if r.opt.LoopStats != nil {
		loops = r.opt.LoopStats()
	}
	ctrs := r.source(&r.ctrs, r.opt.FillCounters, r.opt.Counters)
	gauges := r.source(&r.gauges, r.opt.FillGauges, r.opt.Gauges)
	var qs []QueueInfo
	if r.opt.Queues != nil {
		qs = r.opt.Queues()
	}

	r.mu.Lock()
	now := time.Now()
	var dt time.Duration
	if r.n > 0 {
		dt = now.Sub(r.last)
	}
	r.last = now
	r.n++
	lvl := func(name, unit string, v float64) { r.get(name, unit, false).observeLevel(v, dt) }
	ctr := func(name, unit string, v float64) { r.get(name, unit, true).observeTotal(v, dt) }
	if ps.haveRusage {
		ctr("cpu_user", "cores", ps.cpuUser)
		ctr("cpu_system", "cores", ps.cpuSys)
		ctr("ctx_switches", "/s", ps.ctxSwitches)
	}
	if ps.haveProc {
		lvl("rss", "B", ps.rss)
		lvl("threads", "", ps.threads)
	}
	lvl("goroutines", "", rs.goroutines)
	lvl("heap", "B", rs.heap)
	ctr("gc_cycles", "/s", rs.gcCycles)
	if r.n > 1 {
		lvl("gc_pause", "s/s", rs.pauseSum/max(dt.Seconds(), 1e-3))
		lvl("gc_pause_max", "s", rs.pauseMax)
	} else { // the first reading holds the pauses since start: keep the row's place only
		r.get("gc_pause", "s/s", false)
		r.get("gc_pause_max", "s", false)
	}
	if ps.haveTCP {
		ctr("tcp_listen_overflows", "/s", ps.listenOverflows)
		ctr("tcp_listen_drops", "/s", ps.listenDrops)
		ctr("tcp_retrans_segs", "/s", ps.retransSegs)
		ctr("tcp_timeouts", "/s", ps.tcpTimeouts)
		ctr("tcp_active_opens", "/s", ps.activeOpens)
		ctr("tcp_passive_opens", "/s", ps.passiveOpens)
		ctr("tcp_in_segs", "/s", ps.inSegs)
		ctr("tcp_out_segs", "/s", ps.outSegs)
		lvl("tcp_curr_estab", "", ps.currEstab)
	}
	if r.opt.LoopStats != nil {
		qs = r.loopFigures(loops, qs, dt)
	}
	for _, k := range r.sorted(ctrs) {
		ctr(r.metricName(k), "/s", float64(ctrs[k]))
	}
	for _, k := range r.sorted(gauges) {
		lvl(r.metricName(k), "", float64(gauges[k]))
	}
	evs := r.trackQueues(qs, now, dt)
	lvl("alarms", "", float64(len(r.alarms)))
	r.cost = time.Since(t0)
	r.mu.Unlock()

	for _, e := range evs {
		if e.fired {
			r.log.Warn("queue alarm", "kind", e.a.Kind, "queue", e.a.Name, "len", e.a.Len, "threshold", e.a.Threshold)
		} else {
			r.log.Info("queue alarm cleared", "kind", e.a.Kind, "queue", e.a.Name, "len", e.a.Len,
				"threshold", e.a.Threshold, "why", e.why, "lasted", now.Sub(e.a.Since).Round(time.Millisecond).String())
		}
	}
}

// loopFigures turns the loops' counters into figures, per-loop views and
// loop queues. Caller holds r.mu.
func (r *Reporter) loopFigures(loops []netpoll.LoopStats, qs []QueueInfo, dt time.Duration) []QueueInfo {
	var sum netpoll.LoopStats
	r.loops = r.loops[:0]
	for i, l := range loops {
		sum.Conns += l.Conns
		sum.Accepts += l.Accepts
		sum.AcceptErrs += l.AcceptErrs
		sum.Reads += l.Reads
		sum.Writes += l.Writes
		sum.BytesIn += l.BytesIn
		sum.BytesOut += l.BytesOut
		sum.Wakeups += l.Wakeups
		sum.QueuedBytes += l.QueuedBytes
		sum.QueueLen += l.QueueLen
		sum.Stale += l.Stale
		v := LoopView{Loop: l.Loop, Conns: l.Conns, QueuedBytes: l.QueuedBytes, QueueLen: l.QueueLen}
		if i < len(r.prevLoops) && dt > 0 {
			p := r.prevLoops[i]
			busy, wait := l.Busy-p.Busy, l.Wait-p.Wait
			if busy+wait > 0 {
				v.Util = float64(busy) / float64(busy+wait)
			}
			v.AcceptsPerS = float64(l.Accepts-p.Accepts) / dt.Seconds()
			r.get(fmt.Sprintf("loop%d_util", l.Loop), "ratio", false).observeLevel(v.Util, dt)
		} else {
			r.get(fmt.Sprintf("loop%d_util", l.Loop), "ratio", false)
		}
		r.loops = append(r.loops, v)
		name := "loop" + strconv.Itoa(l.Loop)
		qs = append(qs, QueueInfo{Kind: KindLoopOut, Name: name, Len: l.QueuedBytes},
			QueueInfo{Kind: KindLoopXQ, Name: name, Len: l.QueueLen})
	}
	r.prevLoops = append(r.prevLoops[:0], loops...)
	lvl := func(name, unit string, v float64) { r.get(name, unit, false).observeLevel(v, dt) }
	ctr := func(name, unit string, v float64) { r.get(name, unit, true).observeTotal(v, dt) }
	lvl("conns", "", float64(sum.Conns))
	ctr("accepts", "/s", float64(sum.Accepts))
	ctr("accept_errors", "/s", float64(sum.AcceptErrs))
	ctr("reads", "/s", float64(sum.Reads))
	ctr("writes", "/s", float64(sum.Writes))
	ctr("bytes_in", "B/s", float64(sum.BytesIn))
	ctr("bytes_out", "B/s", float64(sum.BytesOut))
	ctr("wakeups", "/s", float64(sum.Wakeups))
	ctr("stale_drops", "/s", float64(sum.Stale))
	lvl("loop_queued_bytes", "B", float64(sum.QueuedBytes))
	lvl("loop_queue_len", "", float64(sum.QueueLen))
	return qs
}

// get returns the named series, creating it. Caller holds r.mu.
func (r *Reporter) get(name, unit string, counter bool) *series {
	s, ok := r.series[name]
	if !ok {
		s = newSeries(name, unit, counter, r.opt.History)
		r.series[name] = s
		r.order = append(r.order, name)
	}
	s.seen = r.n
	return s
}

// Snapshot returns the current state with up to history past values per
// figure (0 for none).
func (r *Reporter) Snapshot(history int) Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Snapshot{
		Time: r.last, IntervalS: r.opt.Interval.Seconds(), Samples: r.n,
		SampleCostUs: float64(r.cost) / 1e3, AlarmsFired: r.fired,
		Loops:     slices.Clone(r.loops),
		TopQueues: slices.Clone(r.top),
		Figures:   make([]Figure, 0, len(r.order)),
		Alarms:    make([]Alarm, 0, len(r.alarms)),
	}
	if s.Loops == nil {
		s.Loops = []LoopView{}
	}
	if s.TopQueues == nil {
		s.TopQueues = []QueueView{}
	}
	for _, name := range r.order {
		s.Figures = append(s.Figures, r.series[name].figure(history))
	}
	for _, a := range r.alarms {
		s.Alarms = append(s.Alarms, *a)
	}
	slices.SortFunc(s.Alarms, func(x, y Alarm) int { return cmpKey(x.Kind, x.Name, y.Kind, y.Name) })
	return s
}

// Knobs returns every knob and its value, in name order.
func (r *Reporter) Knobs() []KnobValue { return r.knobs.list() }

// SetKnob changes a knob and logs the old and new value; who names the
// caller in the log. It returns errors wrapping ErrUnknownKnob, ErrReadOnly
// or ErrBadValue.
func (r *Reporter) SetKnob(name, value, who string) (KnobChange, error) {
	return r.knobs.set(name, value, who)
}

// metricName makes a source's key a valid figure and metric name.
// source reads one map source: fill into *m (cleared, made on first use)
// if set, else get. Caller holds sampling.
func (r *Reporter) source(m *map[string]int64, fill func(map[string]int64), get func() map[string]int64) map[string]int64 {
	switch {
	case fill != nil:
		if *m == nil {
			*m = make(map[string]int64)
		}
		clear(*m)
		fill(*m)
		return *m
	case get != nil:
		return get()
	}
	return nil
}

// sorted returns m's keys sorted, in r.keys (valid until the next call).
// Caller holds sampling.
func (r *Reporter) sorted(m map[string]int64) []string {
	r.keys = slices.AppendSeq(r.keys[:0], maps.Keys(m))
	slices.Sort(r.keys)
	return r.keys
}

// metricName is metricName(k), remembered. Caller holds sampling.
func (r *Reporter) metricName(k string) string {
	if n, ok := r.names[k]; ok {
		return n
	}
	if r.names == nil {
		r.names = make(map[string]string)
	}
	n := metricName(k)
	if len(r.names) < maxNames {
		r.names[k] = n
	}
	return n
}

// maxNames bounds the names metricName remembers (a source whose names
// keep changing must not grow it for ever).
const maxNames = 4096

func metricName(k string) string {
	b := []byte(strings.ToLower(k))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			b[i] = '_'
		}
	}
	if len(b) == 0 || b[0] >= '0' && b[0] <= '9' {
		b = append([]byte{'_'}, b...)
	}
	return string(b)
}
