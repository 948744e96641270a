package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	steer "github.com/edgedhq/edged/ebpf"
	"github.com/edgedhq/edged/edge"
	"github.com/edgedhq/edged/internal/obs"
)

// opsOptions are the flags for what ops attach to a running server: socket
// steering, the activity reporter and whole-run profiles.
type opsOptions struct {
	steering, steerPin, profile, profileDir string
	level                                   *slog.LevelVar
	listeners                               []listener // --listen, one per listener group
}

func addOpsFlags(fs *flag.FlagSet, o *opsOptions) {
	fs.StringVar(&o.steering, "steering", "least", "eBPF SO_REUSEPORT steering `policy` across loops: off, cpu, hash or least (falls back to the kernel's hash without CAP_BPF)")
	fs.StringVar(&o.steerPin, "steer-pin", "auto", "bpffs `dir` where steering state is pinned for 'edgectl steer status'; auto: "+steer.DefaultPinRoot+"/client-PORT, off: none")
	fs.StringVar(&o.profile, "profile", "", "write a whole-run profile of `kind` cpu, mem, mutex, block or trace on exit")
	fs.StringVar(&o.profileDir, "profile-dir", ".", "`dir` for --profile output")
}

// errOpsUsage marks an ops flag with a bad value.
var errOpsUsage = errors.New("bad flag")

// ops holds what is attached to the server and must be released in order.
type ops struct {
	o        *opsOptions
	log      *slog.Logger
	policy   steer.Policy
	rep      *obs.Reporter
	steers   atomic.Pointer[[]*steer.Steering] // one per listener group
	lookup   *steer.Lookup
	stopProf func()
	accepts  atomic.Bool
	queueCap atomic.Int64
	inflight atomic.Int64
}

// newOps checks the ops flags, starts a --profile and hooks the reporter and
// steering into cfg; attach completes them once the server exists.
func newOps(o *opsOptions, cfg *edge.Config) (_ *ops, err error) {
	p := &ops{o: o, log: cfg.Logger}
	if p.policy, err = steer.ParsePolicy(o.steering); err != nil {
		return nil, fmt.Errorf("parse --steering: %w: %w", err, errOpsUsage)
	}
	if o.profile != "" {
		stop, err := obs.StartProfile(o.profile, o.profileDir)
		if errors.Is(err, obs.ErrUnknownMode) {
			return nil, fmt.Errorf("parse --profile: %w: %w", err, errOpsUsage)
		}
		if err != nil {
			return nil, err
		}
		p.stopProf = stop
	}
	cfg.LiveHook = func(loop, live int) {
		if sts := p.steers.Load(); sts != nil {
			for _, st := range *sts { // the loops are shared: each group steers by their total load
				st.SetLive(loop, uint32(live))
			}
		}
	}
	if cfg.AdminAddr != "" {
		cfg.AdminRoutes = func(mux *http.ServeMux) error { return p.rep.Mount(mux) }
	}
	return p, nil
}

// attach runs after edge.New (the listeners exist) and before Start: it
// creates the reporter and attaches socket steering.
func (p *ops) attach(s *edge.Server) error {
	p.queueCap.Store(int64(s.MaxQueued()))
	p.inflight.Store(int64(s.Inflight()))
	rep, err := obs.New(obs.Options{
		LoopStats:    s.LoopStats,
		FillCounters: s.FillCounters,
		FillGauges:   s.FillGauges,
		Info:         func() any { return s.Stats() },
		Queues: func() []obs.QueueInfo {
			var q []obs.QueueInfo
			for _, b := range s.Backlogs() {
				q = append(q, obs.QueueInfo{Kind: obs.KindConnBacklog,
					Name: fmt.Sprintf("L%d/%d", b.Loop, uint32(b.Handle)), Len: int64(b.Queued)})
			}
			for _, in := range s.LongInboxes() {
				q = append(q, obs.QueueInfo{Kind: obs.KindInbox, Name: in.User, Len: int64(in.Len)})
			}
			return q
		},
		Knobs: []obs.Knob{
			obs.BoolKnob("accept_pause", "stop accepting new connections (established ones keep working)", &p.accepts, s.PauseAccepts),
			obs.IntKnob("queue_cap", "bytes of unread output after which a client that does not read is closed", &p.queueCap, 1<<10, 1<<30,
				func(n int64) { s.SetMaxQueued(int(n)) }),
			obs.IntKnob("inflight", "unacknowledged deliveries per connection", &p.inflight, 1, 1024,
				func(n int64) { s.SetInflight(int(n)) }),
		},
		Logger:   p.log,
		LogLevel: p.o.level,
	})
	if err != nil {
		return fmt.Errorf("start reporter: %w", err)
	}
	p.rep = rep
	rep.Start()
	return p.attachSteering(s)
}

// attachSteering attaches the reuseport program to each listener group and,
// when a --listen names an interface, the SK_LOOKUP program that sends each
// NIC's connections to its group.
func (p *ops) attachSteering(s *edge.Server) error {
	ln := s.Listeners()
	nic := false
	for _, l := range p.o.listeners {
		nic = nic || l.iface != ""
	}
	var root string // where status pins go; "" for none
	switch p.o.steerPin {
	case "off":
	case "auto":
		if steer.OnBPFFS(filepath.Dir(steer.DefaultPinRoot)) {
			root = steer.DefaultPinRoot
		} else {
			p.log.Info("socket steering: no bpffs mounted, so no status pins", "want", filepath.Dir(steer.DefaultPinRoot))
		}
	default:
		root = p.o.steerPin
	}
	pinDir := func(name string) string {
		if root == "" {
			return ""
		}
		return filepath.Join(root, name)
	}
	if root != "" {
		// Pins of an edged that was killed stay behind: drop them.
		removed, err := steer.PruneStale(root)
		if err != nil {
			p.log.Warn("socket steering: prune stale pins", "root", root, "err", err)
		} else if len(removed) > 0 {
			p.log.Info("socket steering: removed pins of exited processes", "root", root, "pins", strings.Join(removed, " "))
		}
	}
	var steers []*steer.Steering
	defer func() { p.steers.Store(&steers) }()
	switch {
	case p.policy == steer.PolicyOff:
		p.log.Info("socket steering off: the kernel's SO_REUSEPORT hash picks the loop")
	case !ln.ReusePort:
		p.log.Warn("socket steering needs one listener per loop; SO_REUSEPORT is unavailable, so loop 0 hands connections round-robin")
	default:
		for g, l := range p.o.listeners {
			_, port, _ := net.SplitHostPort(ln.Groups[g].Addr.String())
			name := l.name
			if name == "" {
				name = "client"
			}
			pin := pinDir(name + "-" + port)
			cfg := steer.Config{Policy: p.policy, Listeners: ln.Groups[g].FDs, PinPath: pin, SockMap: l.iface != "", Logger: p.log}
			st, err := steer.Attach(cfg)
			// Sockets handed over by an upgrade were in the old
			// process's socket array until it detached; the kernel
			// frees that array a moment later (EBUSY until then).
			for end := time.Now().Add(3 * time.Second); err != nil && errors.Is(err, unix.EBUSY) && time.Now().Before(end); {
				time.Sleep(20 * time.Millisecond)
				st, err = steer.Attach(cfg)
			}
			if err != nil {
				for _, st := range steers {
					st.Close()
				}
				steers = nil
				return fmt.Errorf("attach socket steering to %s: %w", l, err)
			}
			steers = append(steers, st)
			p.log.Info("socket steering", "listen", l.String(), "policy", p.o.steering, "mode", st.Mode().String(),
				"loops", strconv.Itoa(ln.Loops), "pin", pin)
		}
	}
	if !nic {
		return nil
	}
	var groups []steer.NICGroup
	for g, l := range p.o.listeners {
		if l.iface == "" {
			continue
		}
		ifi, err := net.InterfaceByName(l.iface)
		if err != nil {
			return fmt.Errorf("steer %s: %w", l, err)
		}
		_, port, _ := net.SplitHostPort(l.addr)
		pn, _ := strconv.Atoi(port)
		name := l.name
		if name == "" {
			name = l.iface
		}
		groups = append(groups, steer.NICGroup{Name: name, Ifindex: ifi.Index, Port: uint16(pn), Listeners: ln.Groups[g].FDs})
	}
	lk, err := steer.AttachLookup(steer.LookupConfig{Groups: groups, PinPath: pinDir("nics")})
	if err != nil {
		return fmt.Errorf("attach NIC steering (SK_LOOKUP; without BPF bind each listener to its NIC's own address instead): %w", err)
	}
	p.lookup = lk
	p.log.Info("NIC steering", "groups", len(groups), "pin", pinDir("nics"))
	return nil
}

// detach releases steering before the server closes its listeners.
func (p *ops) detach() {
	if p.lookup != nil {
		p.lookup.Close()
		p.lookup = nil
	}
	if sts := p.steers.Swap(nil); sts != nil {
		for _, st := range *sts {
			st.Close()
		}
	}
}

// close stops the reporter and writes the --profile.
func (p *ops) close() {
	p.detach()
	if p.rep != nil {
		p.rep.Close()
	}
	if p.stopProf != nil {
		p.stopProf()
	}
}
