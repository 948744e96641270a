package obs

import (
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Knob is a named runtime setting that /knobs reads and changes. Get
// returns the current value as text; Set parses and applies a new one and
// returns an error wrapping ErrBadValue for a value it refuses. A nil Set
// makes the knob read-only.
type Knob struct {
	Name string
	Help string
	Get  func() string
	Set  func(string) error
}

// KnobValue is a knob as /knobs reports it.
type KnobValue struct {
	Name     string `json:"name"`
	Value    string `json:"value"`
	Help     string `json:"help"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

// KnobChange is the answer to a PUT: the value before and after.
type KnobChange struct {
	Name string `json:"name"`
	Old  string `json:"old"`
	New  string `json:"new"`
}

// knobTable holds the knobs in name order; mu serialises changes so that
// each logged (old, new) pair is exact.
type knobTable struct {
	mu    sync.Mutex
	knobs []Knob
	log   *slog.Logger
}

func newKnobTable(log *slog.Logger, knobs []Knob) (*knobTable, error) {
	t := &knobTable{log: log}
	for _, k := range knobs {
		if k.Name == "" || k.Get == nil {
			return nil, fmt.Errorf("add knob %q: a knob needs a name and a Get func: %w", k.Name, ErrBadValue)
		}
		if slices.ContainsFunc(t.knobs, func(o Knob) bool { return o.Name == k.Name }) {
			return nil, fmt.Errorf("add knob %q: name used twice: %w", k.Name, ErrBadValue)
		}
		t.knobs = append(t.knobs, k)
	}
	slices.SortFunc(t.knobs, func(a, b Knob) int { return strings.Compare(a.Name, b.Name) })
	return t, nil
}

func (t *knobTable) find(name string) (Knob, error) {
	i := slices.IndexFunc(t.knobs, func(k Knob) bool { return k.Name == name })
	if i < 0 {
		return Knob{}, fmt.Errorf("find knob %q: %w", name, ErrUnknownKnob)
	}
	return t.knobs[i], nil
}

func (t *knobTable) list() []KnobValue {
	out := make([]KnobValue, len(t.knobs))
	for i, k := range t.knobs {
		out[i] = KnobValue{Name: k.Name, Value: k.Get(), Help: k.Help, ReadOnly: k.Set == nil}
	}
	return out
}

// set applies value to the named knob and logs the change; who names the
// caller in the log line.
func (t *knobTable) set(name, value, who string) (KnobChange, error) {
	k, err := t.find(name)
	if err != nil {
		return KnobChange{}, err
	}
	if k.Set == nil {
		return KnobChange{}, fmt.Errorf("set knob %q: %w", name, ErrReadOnly)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := k.Get()
	if err := k.Set(strings.TrimSpace(value)); err != nil {
		return KnobChange{}, fmt.Errorf("set knob %q to %q: %w", name, value, err)
	}
	c := KnobChange{Name: name, Old: old, New: k.Get()}
	t.log.Info("knob changed", "knob", name, "old", c.Old, "new", c.New, "by", who)
	return c, nil
}

// blockRate remembers the block profile rate: the runtime has no getter.
var blockRate atomic.Int64

// RuntimeKnobs returns the knobs every Go process has: mutex profile
// fraction, block profile rate, GC percent, memory limit and, if level is
// not nil, the log level. New adds them itself.
func RuntimeKnobs(level *slog.LevelVar) []Knob {
	ks := []Knob{
		{
			Name: "mutex_profile_fraction",
			Help: "report 1/N of mutex contention events in /debug/pprof/mutex (0 off)",
			Get:  func() string { return strconv.Itoa(runtime.SetMutexProfileFraction(-1)) },
			Set: func(v string) error {
				n, err := parseInt(v, 0, math.MaxInt32)
				if err != nil {
					return err
				}
				runtime.SetMutexProfileFraction(int(n))
				return nil
			},
		},
		{
			Name: "block_profile_rate",
			Help: "sample one blocking event per N nanoseconds blocked in /debug/pprof/block (0 off, 1 all)",
			Get:  func() string { return strconv.FormatInt(blockRate.Load(), 10) },
			Set: func(v string) error {
				n, err := parseInt(v, 0, math.MaxInt32)
				if err != nil {
					return err
				}
				runtime.SetBlockProfileRate(int(n))
				blockRate.Store(n)
				return nil
			},
		},
		{
			Name: "gc_percent",
			Help: "GOGC: heap growth percent that triggers a GC (off or -1 disables)",
			Get: func() string {
				p := int64(readRuntimeFloat(rmGOGC))
				if p < 0 {
					return "off"
				}
				return strconv.FormatInt(p, 10)
			},
			Set: func(v string) error {
				if v == "off" {
					v = "-1"
				}
				n, err := parseInt(v, -1, math.MaxInt32)
				if err != nil {
					return err
				}
				debug.SetGCPercent(int(n))
				return nil
			},
		},
		{
			Name: "memory_limit",
			Help: "GOMEMLIMIT: soft memory limit, bytes or with KiB/MiB/GiB/TiB suffix (off for none)",
			Get: func() string {
				n := debug.SetMemoryLimit(-1)
				if n == math.MaxInt64 {
					return "off"
				}
				return strconv.FormatInt(n, 10)
			},
			Set: func(v string) error {
				n, err := parseBytes(v)
				if err != nil {
					return err
				}
				debug.SetMemoryLimit(n)
				return nil
			},
		},
	}
	if level != nil {
		ks = append(ks, Knob{
			Name: "log_level",
			Help: "log level: debug, info, warn or error",
			Get:  func() string { return strings.ToLower(level.Level().String()) },
			Set: func(v string) error {
				var l slog.Level
				if err := l.UnmarshalText([]byte(v)); err != nil {
					return fmt.Errorf("parse level %q (want debug, info, warn or error): %w", v, ErrBadValue)
				}
				level.Set(l)
				return nil
			},
		})
	}
	return ks
}

// IntKnob is a helper for servers: a knob over an atomic integer with a
// range, e.g. the per-connection queue cap. apply, if not nil, is called
// with the new value after it is stored.
func IntKnob(name, help string, v *atomic.Int64, lo, hi int64, apply func(int64)) Knob {
	return Knob{
		Name: name, Help: help,
		Get: func() string { return strconv.FormatInt(v.Load(), 10) },
		Set: func(s string) error {
			n, err := parseInt(s, lo, hi)
			if err != nil {
				return err
			}
			v.Store(n)
			if apply != nil {
				apply(n)
			}
			return nil
		},
	}
}

// BoolKnob is a knob over an atomic bool (true/false, on/off, 1/0), e.g.
// the accept pause.
func BoolKnob(name, help string, v *atomic.Bool, apply func(bool)) Knob {
	return Knob{
		Name: name, Help: help,
		Get: func() string { return strconv.FormatBool(v.Load()) },
		Set: func(s string) error {
			var b bool
			switch strings.ToLower(s) {
			case "true", "on", "1", "yes":
				b = true
			case "false", "off", "0", "no":
			default:
				return fmt.Errorf("parse %q as a bool (true/false, on/off, 1/0): %w", s, ErrBadValue)
			}
			v.Store(b)
			if apply != nil {
				apply(b)
			}
			return nil
		},
	}
}

func parseInt(s string, lo, hi int64) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %q as an integer: %w", s, ErrBadValue)
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("value %d outside [%d, %d]: %w", n, lo, hi, ErrBadValue)
	}
	return n, nil
}

// parseBytes parses "off", a byte count, or a count with a binary suffix.
func parseBytes(s string) (int64, error) {
	if s == "off" || s == "max" {
		return math.MaxInt64, nil
	}
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(s, u.suf) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suf)), u.m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("parse %q as bytes (e.g. 4GiB, 512MiB, 1048576, off): %w", s, ErrBadValue)
	}
	return n * mult, nil
}
