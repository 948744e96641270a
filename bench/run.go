package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"runtime"
	"strings"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Latency histograms hold microseconds from 1 us to 1 h, 3 significant digits.
const histMaxUs = 3_600_000_000

func newHist() *hdr.Histogram         { return hdr.New(1, histMaxUs, 3) }
func newPacked() *hdr.PackedHistogram { return hdr.NewPacked(1, histMaxUs, 3) }
func clampUs(us int64) int64          { return min(max(us, 1), histMaxUs) }

// buckets flattens a sparse histogram into (value, count) pairs for a Tick;
// nil when empty.
func buckets(p *hdr.PackedHistogram) []int64 {
	if p.TotalCount() == 0 {
		return nil
	}
	out := make([]int64, 0, 2*p.Populated())
	p.ForEachBucket(func(v, c int64) bool {
		out = append(out, v, c)
		return true
	})
	return out
}

// addBuckets records (value, count) pairs into every histogram of hs.
func addBuckets(pairs []int64, hs ...*hdr.Histogram) {
	for i := 0; i+1 < len(pairs); i += 2 {
		for _, h := range hs {
			_ = h.RecordValues(clampUs(pairs[i]), max(0, pairs[i+1]))
		}
	}
}

// Second is one second of a run, summed over workers.
type Second struct {
	T        float64 `json:"t"`
	Up       int     `json:"up"`
	Pending  int     `json:"pending"`
	Sent     int64   `json:"sent_per_s"`
	Received int64   `json:"recv_per_s"`
	Errors   int64   `json:"errors_total"`
	P50us    int64   `json:"p50_us"`
	P99us    int64   `json:"p99_us"`
	P999us   int64   `json:"p999_us"`
	// Connects is the connections established this second; ConnP50us and
	// ConnP99us their connect latency (TCP connect to CONNACK).
	Connects  int64  `json:"connects_per_s"`
	ConnP50us int64  `json:"connect_p50_us,omitempty"`
	ConnP99us int64  `json:"connect_p99_us,omitempty"`
	Phase     string `json:"phase,omitempty"`
}

// Percentiles summarise a histogram in microseconds.
type Percentiles struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_us"`
	P50   int64   `json:"p50_us"`
	P90   int64   `json:"p90_us"`
	P99   int64   `json:"p99_us"`
	P999  int64   `json:"p999_us"`
	Max   int64   `json:"max_us"`
}

func percentiles(h *hdr.Histogram) Percentiles {
	return Percentiles{Count: h.TotalCount(), Mean: h.Mean(), P50: h.ValueAtQuantile(50), P90: h.ValueAtQuantile(90),
		P99: h.ValueAtQuantile(99), P999: h.ValueAtQuantile(99.9), Max: h.Max()}
}

// ServerFigures are the server-side and derived figures of a run.
type ServerFigures struct {
	PID            int            `json:"pid,omitempty"`
	RSSBefore      int64          `json:"rss_before_bytes,omitempty"`
	RSSAfter       int64          `json:"rss_after_bytes,omitempty"`
	BytesPerConn   float64        `json:"bytes_per_conn,omitempty"`
	CPUSeconds     float64        `json:"cpu_seconds,omitempty"` // during the measured window
	CPUPerMillion  float64        `json:"cpu_s_per_million_msgs,omitempty"`
	MsgsPerCoreSec float64        `json:"msgs_per_s_per_core,omitempty"` // messages per CPU-second of the server
	PeakRSS        int64          `json:"peak_rss_bytes,omitempty"`
	Threads        int            `json:"threads,omitempty"`
	Samples        []ServerSample `json:"samples,omitempty"`
}

// Result is everything a run measured.
type Result struct {
	Workload  string    `json:"workload"`
	Target    string    `json:"target"`
	Name      string    `json:"name,omitempty"`
	Started   time.Time `json:"started"`
	Options   Options   `json:"options"`
	Workers   int       `json:"workers"`
	Elapsed   float64   `json:"elapsed_s"`
	Window    float64   `json:"window_s"` // measured traffic window
	PeakConns int       `json:"peak_conns"`
	Attempts  int64     `json:"connect_attempts"`
	Connected int64     `json:"connected"`
	Touched   int64     `json:"touched,omitempty"`
	Sent      int64     `json:"sent"`
	Acked     int64     `json:"acked"`
	Received  int64     `json:"received"`
	Dups      int64     `json:"dups,omitempty"`
	Reordered int64     `json:"reordered,omitempty"` // per-pair order broken (PROTOCOL.md: FIFO per sender and recipient)
	Lost      int64     `json:"lost"`
	Unacked   int64     `json:"unacked,omitempty"`
	MsgsPerS  float64   `json:"msgs_per_s"` // received per second in the window
	// WindowConnects is the connects completed inside the measured window
	// (Connected counts the whole run, ramp and wind-down too).
	WindowConnects int64 `json:"window_connects,omitempty"`
	// LoadCPUSeconds is the CPU time edgebench's workers used in the whole
	// run: on a shared host it shows how much of the box the load took.
	LoadCPUSeconds float64          `json:"load_cpu_seconds"`
	Errors         map[string]int64 `json:"errors"`
	Latency        Percentiles      `json:"latency"`
	Connect        Percentiles      `json:"connect_latency"`
	Server         *ServerFigures   `json:"server,omitempty"`
	Seconds        []Second         `json:"seconds"`
	Capacity       *CapacityResult  `json:"capacity,omitempty"`
	Notes          []string         `json:"notes,omitempty"`
}

// run is one Run in progress.
type run struct {
	o       Options
	res     *Result
	p       *pool
	smp     *sampler
	start   time.Time
	latest  []Tick
	lat     *hdr.Histogram // whole run
	ivLat   *hdr.Histogram // this second
	stepLat *hdr.Histogram // current capacity step
	connLat *hdr.Histogram
	ivConn  *hdr.Histogram // connect latency this second
	lastSec time.Time
	prefix  string
	prev    Tick // sums at the previous second
	phase   string
	want    int // connections wanted (for the progress bar)
	ctx     context.Context
}

// Run runs workload against o.Target and returns its result. It checks the
// target first and fails fast (ErrUnreachable, naming the address); it
// starts worker processes (see MaybeWorker) and reaps them all before it
// returns. Errors: ErrBadOption, ErrUnreachable, ErrWorker, ErrNotSupported.
func Run(ctx context.Context, workload string, o Options) (*Result, error) {
	if runtime.GOOS != "linux" {
		return nil, ErrNotSupported
	}
	if err := o.Validate(workload); err != nil {
		return nil, err
	}
	if err := probe(o.Target, 3*time.Second); err != nil {
		return nil, err
	}
	if err := probeSrc(o.Target, o.Src); err != nil {
		return nil, err
	}
	r := &run{o: o, start: time.Now(), lat: newHist(), ivLat: newHist(), stepLat: newHist(), connLat: newHist(), ivConn: newHist(), ctx: ctx}
	r.res = &Result{Workload: workload, Target: o.Target, Started: r.start, Options: o, Errors: map[string]int64{}}
	setups, err := r.plan(workload)
	if err != nil {
		return nil, err
	}
	r.res.Workers = len(setups)
	r.latest = make([]Tick, len(setups))
	r.smp = startSampler(o.ServerPID, o.Admin, r.start)
	defer r.smp.stop()
	if o.ServerPID > 0 {
		r.res.Server = &ServerFigures{PID: o.ServerPID}
		if _, ok := r.smp.now(); !ok {
			return nil, fmt.Errorf("read server process %d: %w", o.ServerPID, ErrBadOption)
		}
	}
	r.p, err = startPool(setups)
	if err != nil {
		return nil, err
	}
	err = r.workload(workload)
	r.p.stop(15 * time.Second)
	r.res.LoadCPUSeconds = r.p.cpuSeconds()
	r.collect(0) // final ticks
	r.finish()
	if err != nil {
		return r.res, err
	}
	if o.Out != "" {
		if err := WriteReport(o.Out, r.res); err != nil {
			return r.res, err
		}
	}
	return r.res, nil
}

// probe dials the target once so an unreachable target fails fast.
func probe(target string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp4", target, timeout)
	if err != nil {
		return fmt.Errorf("connect target %s: %w (%v)", target, ErrUnreachable, err)
	}
	return c.Close()
}

// probeSrc checks that the first and last source addresses can reach the
// target, so a source address not configured on this host fails the run at
// once instead of failing every connection.
func probeSrc(target string, src []string) error {
	if len(src) == 0 {
		return nil
	}
	for _, a := range []string{src[0], src[len(src)-1]} {
		ip := net.ParseIP(a)
		d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: ip}}
		c, err := d.Dial("tcp4", target)
		if err != nil {
			return fmt.Errorf("connect target %s from source %s: %w (%v)", target, a, ErrUnreachable, err)
		}
		c.Close()
	}
	return nil
}

func share(n, i, w int) int {
	s := n / w
	if i < n%w {
		s++
	}
	return s
}

func runID() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "eb" + hex.EncodeToString(b[:])
}

// plan splits the workload over workers.
func (r *run) plan(workload string) ([]Setup, error) {
	o := r.o
	conns := o.Conns
	mode := modeIdle
	clean := !(workload == "connect" && o.Persistent)
	qos := byte(o.QoS)
	switch workload {
	case "pairs", "capacity":
		mode, conns = modePairs, 2*o.Pairs
		if workload == "capacity" {
			conns = o.Capacity.MaxConns
		}
	case "offline":
		mode, conns, clean, qos = modeOffline, 2*o.Pairs, o.CleanSessions, 1
	case "fanout":
		mode, conns = modeFanout, o.Subs+1
	case "churn":
		mode = modeChurn
	}
	w := o.Workers
	if w == 0 {
		w = runtime.NumCPU()
	}
	perWorker := o.MaxPerWorker
	if o.TLS {
		perWorker = min(perWorker, tlsMaxPerWorker)
	}
	if need := (conns + perWorker - 1) / perWorker; w < need {
		w = need
	}
	if mode == modePairs || mode == modeOffline {
		w = min(w, o.Pairs)
	}
	w = max(1, min(w, conns))
	if (conns+w-1)/w > perWorker {
		return nil, fmt.Errorf("%d connections over %d workers exceed max-per-worker %d: %w", conns, w, perWorker, ErrBadOption)
	}
	src := o.Src
	if len(src) == 0 && strings.HasPrefix(o.Target, "127.") && conns > 20000 {
		src, _ = ParseSrc("127.0.0.2-127.0.0.33") // loopback: enough ephemeral ports for any run
	}
	prefix := runID()
	r.prefix = prefix
	setups := make([]Setup, w)
	for i := range setups {
		setups[i] = Setup{Worker: i, Target: o.Target, Src: src, Prefix: prefix, Mode: mode, Profile: o.Profile,
			QoS: qos, Size: o.Size, KeepaliveS: int(o.Keepalive / time.Second), ConnectTimeout: int64(o.ConnectTimeout),
			Clean: clean, Pairs: share(o.Pairs, i, w), Window: o.Window, Touch: workload == "connect",
			MaxPending: o.MaxPending, Username: o.Username, Password: o.Password,
			HoldNs: int64(o.Hold), DownNs: int64(o.Down), UpNs: int64(o.Up), Group: o.Group,
			TLS: o.TLS, CAFile: o.CAFile, TLSResume: o.TLSResume, WS: o.WS}
		if mode != modePairs && mode != modeOffline {
			setups[i].Pairs = 0
		}
	}
	return setups, nil
}

// connsFor splits a connection total the way plan split the pairs: pair
// connections stay with their worker, the rest spread evenly.
func (r *run) connsFor(total int) func(i int) int {
	w := len(r.latest)
	return func(i int) int {
		switch r.res.Workload {
		case "pairs", "offline", "capacity":
			pc := 2 * share(r.o.Pairs, i, w)
			return pc + share(max(0, total-2*r.o.Pairs), i, w)
		case "fanout":
			n := share(total-1, i, w)
			if i == 0 {
				n++
			}
			return n
		}
		return share(total, i, w)
	}
}

func (r *run) setConns(total int, ramp float64) {
	r.want = total
	f := r.connsFor(total)
	w := float64(len(r.latest))
	r.p.broadcast(func(i int) Command { return Command{Op: "conns", Conns: f(i), Ramp: ramp / w} })
}

func (r *run) setRate(rate float64, closed bool) {
	w := len(r.latest)
	r.p.broadcast(func(i int) Command {
		x := rate / float64(w)
		if r.o.Pairs > 0 && r.res.Workload != "fanout" {
			x = rate * float64(share(r.o.Pairs, i, w)) / float64(r.o.Pairs)
		}
		if r.res.Workload == "fanout" {
			x = 0
			if i == 0 {
				x = rate
			}
		}
		return Command{Op: "rate", Rate: x, Closed: closed}
	})
}

// sum adds up the latest ticks.
func (r *run) sum() Tick {
	var s Tick
	s.Errors = map[string]int64{}
	for _, t := range r.latest {
		s.Up += t.Up
		s.Pending += t.Pending
		s.Attempts += t.Attempts
		s.Connected += t.Connected
		s.Sent += t.Sent
		s.Acked += t.Acked
		s.Received += t.Received
		s.Dups += t.Dups
		s.Reordered += t.Reordered
		s.Touched += t.Touched
		s.Subscribed += t.Subscribed
		s.Missing += t.Missing
		s.Lost += t.Lost
		s.Unacked += t.Unacked
		for k, v := range t.Errors {
			s.Errors[k] += v
		}
	}
	return s
}

func errTotal(t Tick) int64 {
	var n int64
	for _, v := range t.Errors {
		n += v
	}
	return n
}

// collect takes worker ticks for up to d (0: whatever is queued), merging
// histograms; it returns an error when a worker died.
func (r *run) collect(d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case t := <-r.p.ticks:
			r.absorb(t)
			continue
		default:
		}
		if d == 0 {
			return nil
		}
		select {
		case t := <-r.p.ticks:
			r.absorb(t)
		case <-timer.C:
			if i, msg, dead := r.p.dead(); dead {
				if msg = strings.TrimSpace(msg); msg == "" {
					msg = "killed or crashed without a message"
				}
				return fmt.Errorf("worker %d exited during the run (%s): %w", i, msg, ErrWorker)
			}
			return nil
		case <-r.ctx.Done():
			return r.ctx.Err()
		}
	}
}

func (r *run) absorb(t Tick) {
	if t.FatalError != "" {
		r.res.Notes = append(r.res.Notes, fmt.Sprintf("worker %d: %s", t.Worker, t.FatalError))
	}
	addBuckets(t.Lat, r.lat, r.ivLat, r.stepLat)
	addBuckets(t.Conn, r.connLat, r.ivConn)
	if t.Worker >= 0 && t.Worker < len(r.latest) {
		r.latest[t.Worker] = t
	}
}

// pump collects worker ticks for d; once a second has passed since the
// last recorded second it records one and prints the live line.
func (r *run) pump(d time.Duration) error {
	if err := r.collect(d); err != nil {
		return err
	}
	if r.lastSec.IsZero() {
		r.lastSec = r.start
	}
	if time.Since(r.lastSec) < time.Second {
		return nil
	}
	r.lastSec = r.lastSec.Add(time.Second)
	if time.Since(r.lastSec) > time.Second {
		r.lastSec = time.Now() // fell behind (a stalled machine): do not burst
	}
	for {
		select {
		case x := <-r.smp.samples:
			r.addSample(x)
			continue
		default:
		}
		break
	}
	s := r.sum()
	sec := Second{T: time.Since(r.start).Seconds(), Up: s.Up, Pending: s.Pending,
		Sent: s.Sent - r.prev.Sent, Received: s.Received - r.prev.Received, Errors: errTotal(s),
		P50us: r.ivLat.ValueAtQuantile(50), P99us: r.ivLat.ValueAtQuantile(99), P999us: r.ivLat.ValueAtQuantile(99.9), Phase: r.phase,
		Connects: s.Connected - r.prev.Connected, ConnP50us: r.ivConn.ValueAtQuantile(50), ConnP99us: r.ivConn.ValueAtQuantile(99)}
	r.ivLat.Reset()
	r.ivConn.Reset()
	r.prev = s
	r.res.Seconds = append(r.res.Seconds, sec)
	r.res.PeakConns = max(r.res.PeakConns, s.Up)
	r.live(sec, s)
	return nil
}

// pumpStep is how often the parent looks at worker ticks while waiting.
const pumpStep = 100 * time.Millisecond

// waitFor pumps until cond holds or d passes; it reports whether cond held.
func (r *run) waitFor(d time.Duration, cond func(Tick) bool) (bool, error) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if err := r.pump(pumpStep); err != nil {
			return false, err
		}
		if cond(r.sum()) {
			return true, nil
		}
	}
	return false, nil
}

func (r *run) addSample(x ServerSample) {
	if r.res.Server == nil {
		r.res.Server = &ServerFigures{}
	}
	r.res.Server.Samples = append(r.res.Server.Samples, x)
	r.res.Server.PeakRSS = max(r.res.Server.PeakRSS, x.RSS)
	r.res.Server.Threads = x.Threads
}

func (s *ServerFigures) samples() []ServerSample {
	if s == nil {
		return nil
	}
	return s.Samples
}

func (r *run) lastSample() (ServerSample, bool) {
	if r.res.Server == nil || len(r.res.Server.Samples) == 0 {
		return ServerSample{}, false
	}
	return r.res.Server.Samples[len(r.res.Server.Samples)-1], true
}

func (r *run) live(sec Second, s Tick) {
	if r.o.Live == nil {
		return
	}
	line := fmt.Sprintf("%5.0fs %-8s conns %6d", sec.T, r.phase, sec.Up)
	if r.phase == "ramp" && r.want > 0 {
		const width = 20
		done := min(width, sec.Up*width/r.want)
		line += fmt.Sprintf(" [%s%s] %3d%%", strings.Repeat("#", done), strings.Repeat(".", width-done), sec.Up*100/r.want)
	}
	if r.messaging() {
		line += fmt.Sprintf(" sent/s %7d recv/s %7d p50 %s p99 %s err %d", sec.Sent, sec.Received,
			fmtUs(sec.P50us), fmtUs(sec.P99us), sec.Errors)
	} else { // connect and churn carry no timed messages: show the connects
		line += fmt.Sprintf(" connects/s %6d connect p50 %s p99 %s err %d", sec.Connects,
			fmtUs(sec.ConnP50us), fmtUs(sec.ConnP99us), sec.Errors)
	}
	if n := len(r.res.Server.samples()); n > 0 && r.o.ServerPID > 0 {
		x := r.res.Server.Samples[n-1]
		line += fmt.Sprintf(" | srv rss %s", fmtBytes(x.RSS))
		if n > 1 {
			p := r.res.Server.Samples[n-2]
			line += fmt.Sprintf(" cpu %.0f%%", (x.CPU-p.CPU)/(x.T-p.T)*100)
		}
	}
	if x, ok := r.lastSample(); ok && x.Admin != nil {
		if c, ok := x.Admin["connections"]; ok {
			line += fmt.Sprintf(" | admin conns %.0f", c)
		}
	}
	fmt.Fprintln(r.o.Live, line)
}

// messaging reports whether the workload sends timed messages (pairs,
// offline, fanout, capacity); connect and churn only connect.
func (r *run) messaging() bool { return messagingWorkload(r.res.Workload) }

func messagingWorkload(w string) bool { return w != "connect" && w != "churn" }

func fmtUs(us int64) string {
	switch {
	case us == 0:
		return "-"
	case us < 1000:
		return fmt.Sprintf("%dus", us)
	case us < 1000000:
		return fmt.Sprintf("%.1fms", float64(us)/1000)
	}
	return fmt.Sprintf("%.2fs", float64(us)/1e6)
}

func fmtBytes(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2fGiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%dB", b)
}

// rampTo asks for total connections and waits until they are up, have
// failed for good, or stall for stall.
func (r *run) rampTo(total int, ramp float64) error {
	r.phase = "ramp"
	r.setConns(total, ramp)
	expect := time.Duration(0)
	if ramp > 0 {
		expect = time.Duration(float64(total) / ramp * float64(time.Second))
	}
	ok, err := r.waitFor(expect+r.o.ConnectTimeout+10*time.Second, func(s Tick) bool {
		return s.Up >= total || (s.Pending == 0 && s.Attempts >= int64(total)) ||
			(r.res.Workload == "churn" && s.Attempts >= int64(total))
	})
	if err == nil && !ok {
		r.res.Notes = append(r.res.Notes, fmt.Sprintf("ramp to %d connections stopped at %d", total, r.sum().Up))
	}
	return err
}

// settle waits (at most 5 s) until n subscriptions were acknowledged.
func (r *run) settle(n int) error {
	r.phase = "settle"
	_, err := r.waitFor(5*time.Second, func(s Tick) bool { return s.Subscribed >= int64(n) })
	return err
}

// hold measures for d.
func (r *run) hold(phase string, d time.Duration) error {
	r.phase = phase
	_, err := r.waitFor(d, func(Tick) bool { return false })
	return err
}

type window struct {
	t0    time.Time
	tick  Tick
	cpu   float64
	hasSv bool
}

func (r *run) openWindow() window {
	w := window{t0: time.Now(), tick: r.sum()}
	if x, ok := r.smp.now(); ok {
		w.cpu, w.hasSv = x.CPU, true
	}
	r.stepLat.Reset()
	return w
}

func (r *run) closeWindow(w window) {
	d := time.Since(w.t0).Seconds()
	s := r.sum()
	r.res.Window += d
	r.res.WindowConnects += s.Connected - w.tick.Connected
	msgs := s.Received - w.tick.Received
	r.res.MsgsPerS = float64(msgs) / d
	if x, ok := r.smp.now(); ok && w.hasSv && r.res.Server != nil {
		cpu := x.CPU - w.cpu
		r.res.Server.CPUSeconds += cpu
		if msgs > 0 {
			r.res.Server.CPUPerMillion = cpu / float64(msgs) * 1e6
		}
		if cpu > 0 {
			r.res.Server.MsgsPerCoreSec = float64(msgs) / cpu
		}
	}
}

func (r *run) workload(name string) error {
	o := r.o
	switch name {
	case "connect":
		before, ok := r.smp.now()
		if err := r.rampTo(o.Conns, o.Ramp); err != nil {
			return err
		}
		// Every connection carries one message (to itself), so the server's
		// per-connection buffers are touched before RSS is read again.
		r.phase = "touch"
		r.p.broadcast(func(int) Command { return Command{Op: "touch"} })
		if _, err := r.waitFor(30*time.Second, func(s Tick) bool { return s.Touched >= int64(s.Up) }); err != nil {
			return err
		}
		if err := r.hold("hold", o.Hold); err != nil {
			return err
		}
		if after, ok2 := r.smp.now(); ok && ok2 {
			s := r.sum()
			r.res.Server.RSSBefore, r.res.Server.RSSAfter = before.RSS, after.RSS
			if s.Up > 0 {
				r.res.Server.BytesPerConn = float64(after.RSS-before.RSS) / float64(s.Up)
			}
		}
	case "pairs", "fanout":
		if name == "fanout" && o.Group != "" {
			members := r.memberIDs(o.Subs + 1)
			if err := groupMembers(o.Admin, o.Group, members, true); err != nil {
				return err
			}
			defer func() { _ = groupMembers(o.Admin, o.Group, members, false) }()
		}
		ramp := o.Ramp
		if err := r.rampTo(r.connsTotal(name), ramp); err != nil {
			return err
		}
		if err := r.settle(r.subscribers()); err != nil {
			return err
		}
		w := r.openWindow()
		r.setRate(o.Rate, o.Rate == 0)
		err := r.hold("traffic", o.Duration)
		r.closeWindow(w) // also when interrupted: the report covers what ran
		if err != nil {
			return err
		}
		r.setRate(0, false) // quiet before the group (if any) is dismantled
		if err := r.pump(300 * time.Millisecond); err != nil {
			return err
		}
		if name == "fanout" {
			// Deliveries still in flight when the rate stopped (seconds of
			// them on a loaded machine) count too: wait until every
			// subscriber has every message, or nothing arrived for
			// drainStall seconds, or --drain.
			const drainStall = 3
			end, still, last := time.Now().Add(o.Drain), 0, int64(-1)
			for time.Now().Before(end) && still < drainStall*10 {
				s := r.sum()
				if s.Received >= s.Sent*int64(o.Subs) {
					break
				}
				if s.Received == last {
					still++
				} else {
					still = 0
				}
				last = s.Received
				if err := r.pump(pumpStep); err != nil {
					return err
				}
			}
		}
	case "offline":
		if err := r.rampTo(2*o.Pairs, o.Ramp); err != nil {
			return err
		}
		if err := r.settle(r.subscribers()); err != nil {
			return err
		}
		w := r.openWindow()
		r.setRate(o.Rate, false)
		err := r.hold("traffic", o.Duration)
		r.closeWindow(w) // also when interrupted: the report covers what ran
		if err != nil {
			return err
		}
		r.phase = "drain"
		r.p.broadcast(func(int) Command { return Command{Op: "drain"} })
		// Wait until every accepted message arrived, or nothing arrived
		// for drainStall seconds with every receiver back, or --drain.
		const drainStall = 3
		end, still, last := time.Now().Add(o.Drain), 0, int64(-1)
		for time.Now().Before(end) && still < drainStall*10 {
			if err := r.pump(pumpStep); err != nil {
				return err
			}
			s := r.sum()
			if s.Missing == 0 && s.Up == 2*o.Pairs {
				break
			}
			if s.Up == 2*o.Pairs && s.Received+s.Dups == last {
				still++
			} else {
				still = 0
			}
			last = s.Received + s.Dups
		}
	case "churn":
		if err := r.rampTo(o.Conns, o.Ramp); err != nil {
			return err
		}
		w := r.openWindow()
		err := r.hold("churn", o.Duration)
		r.closeWindow(w) // also when interrupted: the report covers what ran
		if err != nil {
			return err
		}
	case "capacity":
		return r.capacity()
	}
	return nil
}

// memberIDs lists the client ids of a workload's first total connections.
func (r *run) memberIDs(total int) []string {
	f := r.connsFor(total)
	var ids []string
	for w := range r.latest {
		for j := 0; j < f(w); j++ {
			ids = append(ids, string(appendClientID(nil, r.prefix, w, j)))
		}
	}
	return ids
}

// subscribers is how many SUBSCRIBEs the workload's connections send.
func (r *run) subscribers() int {
	switch {
	case r.res.Workload == "fanout" && r.o.Group != "":
		return 0
	case r.res.Workload == "fanout":
		return r.o.Subs
	case r.o.Profile == "inbox":
		return 0
	}
	return r.o.Pairs
}

func (r *run) connsTotal(name string) int {
	if name == "fanout" {
		return r.o.Subs + 1
	}
	return 2 * r.o.Pairs
}

// finish fills the totals from the final ticks.
func (r *run) finish() {
	s := r.sum()
	res := r.res
	res.Elapsed = time.Since(r.start).Seconds()
	res.Attempts, res.Connected, res.Touched = s.Attempts, s.Connected, s.Touched
	res.Sent, res.Acked, res.Received, res.Dups, res.Reordered = s.Sent, s.Acked, s.Received, s.Dups, s.Reordered
	res.Lost, res.Unacked = s.Lost, s.Unacked
	res.Errors = s.Errors
	res.Latency = percentiles(r.lat)
	res.Connect = percentiles(r.connLat)
	for {
		select {
		case x := <-r.smp.samples:
			r.addSample(x)
			continue
		default:
		}
		break
	}
	for i, t := range r.latest {
		if !t.Final {
			res.Notes = append(res.Notes, fmt.Sprintf("worker %d sent no final report", i))
		}
	}
}
