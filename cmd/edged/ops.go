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
	"sync/atomic"

	"github.com/edgedhq/edged/ebpf"
	"github.com/edgedhq/edged/edge"
	"github.com/edgedhq/edged/internal/obs"
)

// opsOptions are the flags for what ops attach to a running server: socket
// steering, the activity reporter and whole-run profiles.
type opsOptions struct {
	steering, steerPin, profile, profileDir string
	level                                   *slog.LevelVar
}

func addOpsFlags(fs *flag.FlagSet, o *opsOptions) {
	fs.StringVar(&o.steering, "steering", "least", "eBPF SO_REUSEPORT steering `policy` across loops: off, cpu, hash or least (falls back to the kernel's hash without CAP_BPF)")
	fs.StringVar(&o.steerPin, "steer-pin", "auto", "bpffs `dir` where steering state is pinned for 'edgectl steer status'; auto: "+ebpf.DefaultPinRoot+"/client-PORT, off: none")
	fs.StringVar(&o.profile, "profile", "", "write a whole-run profile of `kind` cpu, mem, mutex, block or trace on exit")
	fs.StringVar(&o.profileDir, "profile-dir", ".", "`dir` for --profile output")
}

// errOpsUsage marks an ops flag with a bad value.
var errOpsUsage = errors.New("bad flag")

// ops holds what is attached to the server and must be released in order.
type ops struct {
	o        *opsOptions
	log      *slog.Logger
	policy   ebpf.Policy
	rep      *obs.Reporter
	steer    atomic.Pointer[ebpf.Steering]
	stopProf func()
	accepts  atomic.Bool
	queueCap atomic.Int64
	inflight atomic.Int64
}

// newOps checks the ops flags, starts a --profile and hooks the reporter and
// steering into cfg; attach completes them once the server exists.
func newOps(o *opsOptions, cfg *edge.Config) (_ *ops, err error) {
	p := &ops{o: o, log: cfg.Logger}
	if p.policy, err = ebpf.ParsePolicy(o.steering); err != nil {
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
		if st := p.steer.Load(); st != nil {
			st.SetLive(loop, uint32(live))
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
	eng := s.Engine()
	p.queueCap.Store(int64(eng.MaxQueued()))
	p.inflight.Store(int64(s.Inflight()))
	rep, err := obs.New(obs.Options{
		LoopStats: s.LoopStats,
		Counters: func() map[string]int64 {
			st := s.Stats()
			m := map[string]int64{
				"messages_in": int64(st.Published), "inbox_stored": int64(st.Stored),
				"inbox_full": int64(st.InboxFull), "deliveries_dropped": int64(st.Dropped),
			}
			for reason, n := range st.Closes {
				m["closes_"+reason] = int64(n)
			}
			return m
		},
		Gauges: func() map[string]int64 {
			return map[string]int64{"connections": s.Connections(), "clients": s.Clients()}
		},
		Info: func() any { return s.Stats() },
		Queues: func() []obs.QueueInfo {
			var q []obs.QueueInfo
			for _, b := range eng.Backlogs() {
				q = append(q, obs.QueueInfo{Kind: obs.KindConnBacklog,
					Name: fmt.Sprintf("L%d/%d", b.Loop, uint32(b.Handle)), Len: int64(b.Queued)})
			}
			return q
		},
		Knobs: []obs.Knob{
			obs.BoolKnob("accept_pause", "stop accepting new connections (established ones keep working)", &p.accepts, eng.PauseAccepts),
			obs.IntKnob("queue_cap", "bytes of unread output after which a client that does not read is closed", &p.queueCap, 1<<10, 1<<30,
				func(n int64) { eng.SetMaxQueued(int(n)) }),
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
	if p.policy == ebpf.PolicyOff {
		p.log.Info("socket steering off: the kernel's SO_REUSEPORT hash picks the loop")
		return nil
	}
	if !eng.ReusePort() {
		p.log.Warn("socket steering needs one listener per loop; SO_REUSEPORT is unavailable, so loop 0 hands connections round-robin")
		return nil
	}
	pin := p.o.steerPin
	switch pin {
	case "off":
		pin = ""
	case "auto":
		// Pins are for 'edgectl steer status' only: without a mounted
		// bpffs, steer unpinned rather than not at all.
		_, port, _ := net.SplitHostPort(s.Addr().String())
		pin = filepath.Join(ebpf.DefaultPinRoot, "client-"+port)
		if !ebpf.OnBPFFS(filepath.Dir(ebpf.DefaultPinRoot)) {
			p.log.Info("socket steering: no bpffs mounted, so no status pins", "want", filepath.Dir(ebpf.DefaultPinRoot))
			pin = ""
		}
	}
	st, err := ebpf.Attach(ebpf.Config{Policy: p.policy, Listeners: eng.ListenerFDs(), PinPath: pin, Logger: p.log})
	if err != nil {
		return fmt.Errorf("attach socket steering: %w", err)
	}
	p.steer.Store(st)
	p.log.Info("socket steering", "policy", p.o.steering, "mode", st.Mode().String(), "loops", strconv.Itoa(eng.NumLoops()), "pin", pin)
	return nil
}

// detach releases steering before the server closes its listeners.
func (p *ops) detach() {
	if st := p.steer.Swap(nil); st != nil {
		st.Close()
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
