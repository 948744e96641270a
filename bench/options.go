package bench

import (
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Workloads Run accepts.
var Workloads = []string{"connect", "pairs", "fanout", "offline", "churn", "capacity"}

// Options configure one run. Zero values take the defaults of Defaults.
type Options struct {
	Target         string        `json:"target"`          // host:port of the MQTT server
	Src            []string      `json:"src,omitempty"`   // source IPv4 addresses, bound before connect
	Workers        int           `json:"workers"`         // worker processes (0: CPUs, more when connections need)
	MaxPerWorker   int           `json:"max_per_worker"`  // sockets per worker process
	Profile        string        `json:"profile"`         // generic | inbox
	QoS            int           `json:"qos"`             // 0 | 1
	Size           int           `json:"size"`            // payload bytes (>= 23)
	Keepalive      time.Duration `json:"keepalive"`       // MQTT keepalive
	ConnectTimeout time.Duration `json:"connect_timeout"` // TCP connect + CONNACK
	MaxPending     int           `json:"max_pending"`     // connects in progress per worker
	Username       string        `json:"username,omitempty"`
	Password       string        `json:"-"`
	ServerPID      int           `json:"server_pid,omitempty"`
	Admin          string        `json:"admin,omitempty"`
	// TLS dials the target over TLS (CAFile: the CAs to trust, PEM;
	// TLSResume: resume sessions from tickets, else every handshake is
	// full). Each connection then costs the load generator a crypto/tls
	// client and a relay (tls_linux.go): 3 descriptors, so a worker
	// holds at most 5,000 (MaxPerWorker is lowered to that).
	TLS       bool   `json:"tls,omitempty"`
	CAFile    string `json:"cafile,omitempty"`
	TLSResume bool   `json:"tls_resume,omitempty"`
	// WS, if set, is the path of a WebSocket listener: connections speak
	// MQTT over WebSocket, framed by the engine itself (ws_linux.go); with
	// TLS, wss:// through TLS's relay.
	WS string `json:"ws,omitempty"`

	Conns    int           `json:"conns,omitempty"`    // connect, churn: connections
	Ramp     float64       `json:"ramp,omitempty"`     // connects per second (0: unlimited)
	Hold     time.Duration `json:"hold,omitempty"`     // connect: hold; churn: time each connection stays up
	Pairs    int           `json:"pairs,omitempty"`    // pairs, offline, capacity: sender/receiver pairs
	Rate     float64       `json:"rate,omitempty"`     // aggregate messages per second (0: closed loop)
	Window   int           `json:"window,omitempty"`   // closed loop: messages in flight per pair
	Duration time.Duration `json:"duration,omitempty"` // measured traffic time
	Subs     int           `json:"subs,omitempty"`     // fanout: subscribers
	Group    string        `json:"group,omitempty"`    // fanout: edged group instead of a topic (needs Admin, profile inbox)
	Down     time.Duration `json:"down,omitempty"`     // offline: time a receiver stays away
	Up       time.Duration `json:"up,omitempty"`       // offline: time a receiver stays connected
	Drain    time.Duration `json:"drain,omitempty"`    // offline: longest wait for queued messages (fanout: for in-flight ones)
	// CleanSessions makes offline receivers use clean sessions: a generic
	// broker then drops what arrives while they are away, which shows what
	// a loss report looks like.
	CleanSessions bool `json:"clean_sessions,omitempty"`
	// Persistent makes the connect workload's connections persistent
	// sessions (clean session 0), as devices that must not miss messages
	// connect.
	Persistent bool `json:"persistent,omitempty"`

	Capacity CapacityOptions `json:"capacity"`

	Out  string    `json:"-"` // directory for report.json, report.txt and SVG plots
	Live io.Writer `json:"-"` // progress bar and live lines (nil: quiet)
}

// CapacityOptions drive the capacity search.
type CapacityOptions struct {
	ConnStep  int           `json:"conn_step"`  // idle connections added per step
	MaxConns  int           `json:"max_conns"`  // stop stepping connections here
	RateStep  float64       `json:"rate_step"`  // messages per second added per step
	MaxRate   float64       `json:"max_rate"`   // stop stepping the rate here
	ProbeRate float64       `json:"probe_rate"` // message rate while stepping connections
	StepTime  time.Duration `json:"step_time"`  // measured time per step
	SLOP99    time.Duration `json:"slo_p99"`    // p99 end-to-end latency bound
	SLOErrors float64       `json:"slo_errors"` // error fraction bound (0.001 = 0.1%)
	SLORSS    int64         `json:"slo_rss"`    // server RSS bound in bytes (0: none)
}

// tlsMaxPerWorker caps TLS and WebSocket connections per worker: each holds
// about 3 descriptors in the load generator (relay_linux.go), under the
// 20,000 limit.
const tlsMaxPerWorker = 5000

// Defaults returns the default options.
func Defaults() Options {
	return Options{
		Target: "127.0.0.1:1883", MaxPerWorker: 12000, Profile: "generic", QoS: 0, Size: 64,
		Keepalive: 60 * time.Second, ConnectTimeout: 10 * time.Second, MaxPending: 256,
		Conns: 1000, Ramp: 2000, Hold: 5 * time.Second, Pairs: 100, Window: 1, Duration: 10 * time.Second,
		Subs: 100, Down: 2 * time.Second, Up: 3 * time.Second, Drain: 20 * time.Second,
		Capacity: CapacityOptions{ConnStep: 2000, MaxConns: 10000, RateStep: 5000, MaxRate: 200000,
			ProbeRate: 1000, StepTime: 5 * time.Second, SLOP99: 50 * time.Millisecond, SLOErrors: 0.001},
	}
}

// Validate checks o. Errors wrap ErrBadOption.
func (o *Options) Validate(workload string) error {
	bad := func(f string, a ...any) error { return fmt.Errorf(f+": %w", append(a, ErrBadOption)...) }
	ok := false
	for _, w := range Workloads {
		ok = ok || w == workload
	}
	switch {
	case !ok:
		return bad("unknown workload %q (want one of %s)", workload, strings.Join(Workloads, ", "))
	case o.Profile != "generic" && o.Profile != "inbox":
		return bad("profile %q (want generic or inbox)", o.Profile)
	case o.QoS != 0 && o.QoS != 1:
		return bad("qos %d (want 0 or 1)", o.QoS)
	case o.Size < payloadHeader || o.Size > 256<<10:
		return bad("size %d (want %d..%d bytes)", o.Size, payloadHeader, 256<<10)
	case o.MaxPerWorker < 1 || o.MaxPerWorker > 15000:
		return bad("max-per-worker %d (want 1..15000: the process file limit is 20000)", o.MaxPerWorker)
	case !o.TLS && (o.CAFile != "" || o.TLSResume):
		return bad("--cafile and --tls-resume need --tls")
	case o.WS != "" && !strings.HasPrefix(o.WS, "/"):
		return bad("ws path %q (want /PATH, e.g. /mqtt)", o.WS)
	case o.Workers < 0 || o.Workers > 256:
		return bad("workers %d (want 0..256)", o.Workers)
	case o.Conns < 1 && (workload == "connect" || workload == "churn"):
		return bad("conns %d (want >= 1)", o.Conns)
	case o.Pairs < 1 && (workload == "pairs" || workload == "offline" || workload == "capacity"):
		return bad("pairs %d (want >= 1)", o.Pairs)
	case o.Subs < 1 && workload == "fanout":
		return bad("subs %d (want >= 1)", o.Subs)
	case o.Rate < 0 || o.Ramp < 0:
		return bad("rate and ramp must not be negative")
	case workload == "offline" && o.Rate <= 0:
		return bad("offline needs --rate > 0 (an open loop keeps sending while receivers are away)")
	case workload == "fanout" && o.Rate <= 0:
		return bad("fanout needs --rate > 0")
	case workload == "fanout" && o.Group != "" && (o.Profile != "inbox" || !strings.HasSuffix(o.Admin, "/stats")):
		return bad("fanout --group needs --profile inbox and --admin http://.../stats (members are added through the admin API)")
	case o.Group != "" && !validID(o.Group):
		return bad("group %q (want 1-64 of [0-9A-Za-z_.-])", o.Group)
	case workload == "churn" && o.Hold <= 0:
		return bad("churn needs --hold > 0")
	case o.Keepalive < time.Second || o.Keepalive > 65535*time.Second:
		return bad("keepalive %s (want 1s..65535s)", o.Keepalive)
	case o.Window < 1:
		return bad("window %d (want >= 1)", o.Window)
	case o.MaxPending < 1:
		return bad("max-pending %d (want >= 1)", o.MaxPending)
	}
	if _, err := netip.ParseAddrPort(o.Target); err != nil {
		return bad("target %q (want IPv4 host:port, e.g. 127.0.0.1:1883)", o.Target)
	}
	if workload == "capacity" {
		c := o.Capacity
		if c.ConnStep < 1 || c.StepTime <= 0 || c.RateStep <= 0 || c.SLOP99 <= 0 || c.MaxConns < 2*o.Pairs {
			return bad("capacity steps: conn-step, rate-step, step-time and slo-p99 must be > 0 and max-conns >= 2*pairs")
		}
	}
	return nil
}

// ParseSrc parses a source address list: "127.0.0.2-127.0.0.100" ranges and
// single addresses, comma separated. Errors wrap ErrBadOption.
func ParseSrc(s string) ([]string, error) {
	var out []string
	if s == "" {
		return nil, nil
	}
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := netip.ParseAddr(lo)
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("parse source %q (want IPv4 a.b.c.d or a range a.b.c.d-a.b.c.e): %w", part, ErrBadOption)
		}
		b := a
		if isRange {
			if b, err = netip.ParseAddr(hi); err != nil || !b.Is4() || b.Less(a) {
				return nil, fmt.Errorf("parse source range %q: %w", part, ErrBadOption)
			}
		}
		for x := a; ; x = x.Next() {
			out = append(out, x.String())
			if len(out) > 65536 {
				return nil, fmt.Errorf("parse source %q: more than 65536 addresses: %w", s, ErrBadOption)
			}
			if x == b {
				break
			}
		}
	}
	return out, nil
}

// ParseBytes parses "8GiB", "512MiB", "1000000" into bytes.
func ParseBytes(s string) (int64, error) {
	units := []struct {
		suf string
		m   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	m := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suf) {
			s, m = strings.TrimSuffix(s, u.suf), u.m
			break
		}
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("parse size %q (want e.g. 8GiB): %w", s, ErrBadOption)
	}
	return int64(f * float64(m)), nil
}

// validID reports whether s is a valid edged user or group id (PROTOCOL.md).
func validID(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}
