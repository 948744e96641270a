package steer

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/edgedhq/edged/internal/unsupported"
)

// MaxLoops is the most listeners (loops) one steering group may have: the
// least-loaded scan is unrolled in the program, and 64 loops cover the
// target 24-CPU host with room to spare.
const MaxLoops = 64

// Errors returned by this package; the functions' docs name which.
var (
	// ErrUnknownPolicy: ParsePolicy was given a name other than
	// off, cpu, hash or least.
	ErrUnknownPolicy = errors.New("unknown steering policy")
	// ErrBadConfig: a Config or LookupConfig is invalid.
	ErrBadConfig = errors.New("invalid steering config")
	// ErrNotPermitted: the kernel refused BPF (no CAP_BPF/CAP_NET_ADMIN).
	ErrNotPermitted = errors.New("bpf not permitted")
	// ErrUnsupported: BPF steering is not available on this OS or kernel;
	// it wraps errors.ErrUnsupported.
	ErrUnsupported = unsupported.New("bpf steering not supported")
	// ErrClosed: the Steering or Lookup was closed.
	ErrClosed = errors.New("steering closed")
)

// Policy says how the program picks a loop for a new connection.
type Policy uint8

// Policies. The zero value is PolicyOff.
const (
	// PolicyOff attaches nothing: the kernel's own reuseport hash.
	PolicyOff Policy = iota
	// PolicyCPU picks the loop pinned to the CPU that handled the SYN
	// (locality; pair it with the tuning profile's IRQ/RPS plan). A CPU
	// with several loops spreads over them by flow hash; a CPU with none
	// falls back to the flow hash over all loops.
	PolicyCPU
	// PolicyHash picks by the flow hash: an even spread.
	PolicyHash
	// PolicyLeast picks the loop with the fewest live connections as the
	// loops report them with SetLive; ties are broken by the flow hash.
	PolicyLeast
)

var policyNames = [...]string{PolicyOff: "off", PolicyCPU: "cpu", PolicyHash: "hash", PolicyLeast: "least"}

// String returns the policy's name as ParsePolicy accepts it.
func (p Policy) String() string {
	if int(p) < len(policyNames) {
		return policyNames[p]
	}
	return fmt.Sprintf("policy(%d)", uint8(p))
}

// ParsePolicy parses off, cpu, hash or least (case-insensitive, surrounding
// spaces ignored). Any other name returns ErrUnknownPolicy.
func ParsePolicy(s string) (Policy, error) {
	name := strings.ToLower(strings.TrimSpace(s))
	for p, n := range policyNames {
		if n == name {
			return Policy(p), nil
		}
	}
	return PolicyOff, fmt.Errorf("parse policy %q: %w (want %s)", s, ErrUnknownPolicy, strings.Join(policyNames[:], "|"))
}

// Mode says what actually steers connections.
type Mode uint8

// Modes.
const (
	// ModeOff: the policy is off; the kernel's reuseport hash steers.
	ModeOff Mode = iota
	// ModeBPF: the program is attached and steers by the policy.
	ModeBPF
	// ModeFallback: a policy was asked for but BPF was not permitted or
	// not supported; the kernel's reuseport hash steers.
	ModeFallback
)

// String names the mode.
func (m Mode) String() string {
	switch m {
	case ModeOff:
		return "off"
	case ModeBPF:
		return "bpf"
	case ModeFallback:
		return "fallback"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// Config describes one SO_REUSEPORT listener group and how to steer it.
type Config struct {
	// Policy picks the loop for each new connection.
	Policy Policy
	// Listeners holds the group's listening TCP socket fds; index = loop.
	// All must be listening, have SO_REUSEPORT and share one address.
	Listeners []int
	// LoopCPUs[i] is the CPU loop i is pinned to (PolicyCPU and status
	// only). Empty means loop i runs on CPU i modulo the CPU count.
	LoopCPUs []int
	// PinPath, if set, is a directory on bpffs (e.g.
	// /sys/fs/bpf/edged/client) where the maps and program are pinned for
	// ReadStatus. Stale pins there are replaced; Close removes them.
	PinPath string
	// SockMap holds the listeners in a SOCKMAP instead of the default
	// REUSEPORT_SOCKARRAY. A group that is also a NICGroup of AttachLookup
	// needs it: the kernel keeps a socket in at most one of the two kinds
	// (the other answers EBUSY), and SK_LOOKUP can only use a SOCKMAP.
	SockMap bool
	// Logger receives the one line that says BPF steering fell back to the
	// kernel's hash. Nil means slog.Default().
	Logger *slog.Logger
	// ForceFallback behaves as if BPF were not permitted: a kill switch
	// for operators and the way tests exercise the fallback path.
	ForceFallback bool
}

// LoopStats is one loop's view in Stats.
type LoopStats struct {
	// Loop is the loop index (the listener's index in Config.Listeners).
	Loop int
	// Accepts counts the SYNs the program steered to this loop (summed
	// over the per-CPU counters); always 0 unless Mode is ModeBPF.
	Accepts uint64
	// Live is the live-connection count last set with SetLive.
	Live uint32
}

// liveArray is the load table PolicyLeast reads: in ModeBPF it is the
// mmapped value of the program's "live" map, otherwise ordinary memory.
//
// A loop's load is Live[i] + (Steered[i] - Snap[i]): Live is what the loop
// last reported; Steered counts the SYNs the program has sent to loop i
// (atomic add in the program); Snap is Steered as SetLive saw it. The
// difference is the connections steered to the loop since it last reported
// (still in its accept queue), so a loop that lags behind, or stalls, stops
// attracting connections instead of looking idle.
type liveArray struct {
	Live    [MaxLoops]uint32
	Steered [MaxLoops]uint32
	Snap    [MaxLoops]uint32
}

// Byte offsets of liveArray's fields, for the program.
const (
	liveOff    = 0
	steeredOff = 4 * MaxLoops
	snapOff    = 8 * MaxLoops
	liveSize   = 12 * MaxLoops
)

// Steering is one attached listener group. All methods are safe for
// concurrent use; SetLive is wait-free and makes no system call.
type Steering struct {
	policy Policy
	mode   Mode
	n      int
	reason error // why ModeFallback, nil otherwise

	live atomic.Pointer[liveArray]

	mu     sync.Mutex // guards k and closed
	k      *kernel    // the OS-specific state; nil unless ModeBPF
	closed bool
}

// Attach steers cfg.Listeners by cfg.Policy. It returns ErrBadConfig for an
// invalid config (also in fallback mode). When BPF is not permitted or not
// supported it logs one line and returns a Steering in ModeFallback with a
// nil error; any other failure to load or attach returns an error and leaves
// the group as it was.
func Attach(cfg Config) (*Steering, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := checkListeners(cfg.Listeners); err != nil {
		return nil, err
	}
	s := &Steering{policy: cfg.Policy, n: len(cfg.Listeners)}
	s.live.Store(new(liveArray))
	switch {
	case cfg.Policy == PolicyOff:
		s.mode = ModeOff
		return s, nil
	case cfg.ForceFallback:
		s.fallback(cfg, fmt.Errorf("%w (forced by config)", ErrNotPermitted))
		return s, nil
	}
	k, err := attachKernel(cfg, s.live.Load())
	if errors.Is(err, ErrNotPermitted) || errors.Is(err, ErrUnsupported) {
		s.fallback(cfg, err)
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	k.bindLifetime(s)
	s.k = k
	s.mode = ModeBPF
	s.live.Store(k.live)
	return s, nil
}

func (s *Steering) fallback(cfg Config, why error) {
	s.mode = ModeFallback
	s.reason = why
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log.Warn("ebpf steering fallback: the kernel's own reuseport hash steers connections",
		"policy", cfg.Policy.String(), "loops", len(cfg.Listeners), "reason", why.Error())
}

func (c *Config) validate() error {
	n := len(c.Listeners)
	if n == 0 || n > MaxLoops {
		return fmt.Errorf("check config: %w: %d listeners, want 1..%d", ErrBadConfig, n, MaxLoops)
	}
	if int(c.Policy) >= len(policyNames) {
		return fmt.Errorf("check config: %w: %v", ErrBadConfig, c.Policy)
	}
	if len(c.LoopCPUs) != 0 && len(c.LoopCPUs) != n {
		return fmt.Errorf("check config: %w: %d loop CPUs for %d listeners", ErrBadConfig, len(c.LoopCPUs), n)
	}
	for i, cpu := range c.LoopCPUs {
		if cpu < 0 {
			return fmt.Errorf("check config: %w: loop %d on negative CPU %d", ErrBadConfig, i, cpu)
		}
	}
	seen := make(map[int]bool, n)
	for i, fd := range c.Listeners {
		if fd < 0 || seen[fd] {
			return fmt.Errorf("check config: %w: listener %d has bad or repeated fd %d", ErrBadConfig, i, fd)
		}
		seen[fd] = true
	}
	return nil
}

// Mode says what steers connections now.
func (s *Steering) Mode() Mode { return s.mode }

// Policy returns the configured policy (also in fallback mode).
func (s *Steering) Policy() Policy { return s.policy }

// FallbackReason returns why the Steering is in ModeFallback, else nil.
func (s *Steering) FallbackReason() error { return s.reason }

// SetLive records that loop has n live connections; PolicyLeast reads it for
// the next SYN. Call it after each accept batch (once accept returned
// EAGAIN) and after closing connections: connections steered to the loop
// but not yet accepted are counted by the program until the next SetLive.
// It is two atomic loads and two stores into memory the program reads (no
// system call), callable from any goroutine, also after Close (then it is
// ignored). A loop outside [0, len(Listeners)) is a caller bug and panics.
func (s *Steering) SetLive(loop int, n uint32) {
	if uint(loop) >= uint(s.n) {
		panic(fmt.Sprintf("ebpf: SetLive loop %d outside the group's %d loops", loop, s.n))
	}
	a := s.live.Load()
	atomic.StoreUint32(&a.Snap[loop], atomic.LoadUint32(&a.Steered[loop]))
	atomic.StoreUint32(&a.Live[loop], n)
}

// Stats returns each loop's steered-SYN count and live connections. It
// returns ErrClosed after Close.
func (s *Steering) Stats() ([]LoopStats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("read stats: %w", ErrClosed)
	}
	st := make([]LoopStats, s.n)
	live := s.live.Load()
	for i := range st {
		st[i] = LoopStats{Loop: i, Live: atomic.LoadUint32(&live.Live[i])}
	}
	if s.k != nil {
		if err := s.k.readAccepts(st); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// Misses returns how many SYNs found no socket-array entry for their loop
// (the loop's listener was closed) and went to the kernel's own pick.
func (s *Steering) Misses() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, fmt.Errorf("read misses: %w", ErrClosed)
	}
	if s.k == nil {
		return 0, nil
	}
	return s.k.misses()
}

// Close detaches the program from the group (the kernel's hash steers
// again), unpins and frees the maps. Call it before closing the listeners.
// Closing twice returns nil.
func (s *Steering) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.k == nil {
		return nil
	}
	// Later SetLive calls land in ordinary memory; the mapping itself is
	// released by a cleanup once no SetLive can still hold it.
	detached := *s.live.Load()
	s.live.Store(&detached)
	err := s.k.close()
	s.k = nil
	return err
}
