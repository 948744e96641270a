package obs

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/pkg/profile"
)

// ProfileModes are the modes StartProfile accepts, and the file each writes
// in its directory.
var ProfileModes = map[string]string{
	"cpu":   "cpu.pprof",
	"mem":   "mem.pprof",
	"mutex": "mutex.pprof",
	"block": "block.pprof",
	"trace": "trace.out",
}

// profMu serialises whole-run profiles: github.com/pkg/profile allows one at
// a time and calls log.Fatal on a second Start, so this checks first.
var (
	profMu      sync.Mutex
	profRunning bool
)

// StartProfile starts a whole-run profile (edged --profile MODE) writing
// into dir (created if missing) with github.com/pkg/profile; stop writes
// the file and must be called before the process exits. Mode is one of cpu,
// mem, mutex, block, trace. It returns ErrUnknownMode for any other mode,
// ErrProfiling while one runs, or the error creating or writing dir (checked
// here because the library would exit the process on it).
func StartProfile(mode, dir string) (stop func(), err error) {
	if _, ok := ProfileModes[mode]; !ok {
		modes := make([]string, 0, len(ProfileModes))
		for m := range ProfileModes {
			modes = append(modes, m)
		}
		slices.Sort(modes)
		return nil, fmt.Errorf("start profile %q (want one of %v): %w", mode, modes, ErrUnknownMode)
	}
	if dir == "" {
		dir = "."
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("start profile: %w", err)
	}
	probe, err := os.CreateTemp(dir, ".profile-probe-*")
	if err != nil {
		return nil, fmt.Errorf("start profile: directory not writable: %w", err)
	}
	probe.Close()
	os.Remove(probe.Name())
	profMu.Lock()
	defer profMu.Unlock()
	if profRunning {
		return nil, fmt.Errorf("start profile %q: %w", mode, ErrProfiling)
	}
	opts := []func(*profile.Profile){profile.ProfilePath(dir), profile.NoShutdownHook, profile.Quiet}
	switch mode {
	case "cpu":
		opts = append(opts, profile.CPUProfile)
	case "mem":
		opts = append(opts, profile.MemProfile)
	case "mutex":
		opts = append(opts, profile.MutexProfile)
	case "block":
		opts = append(opts, profile.BlockProfile)
	case "trace":
		opts = append(opts, profile.TraceProfile)
	}
	p := profile.Start(opts...)
	profRunning = true
	var once sync.Once
	return func() {
		once.Do(func() {
			p.Stop()
			profMu.Lock()
			profRunning = false
			profMu.Unlock()
		})
	}, nil
}

// ProfilePath returns the file StartProfile(mode, dir) writes.
func ProfilePath(mode, dir string) string { return filepath.Join(dir, ProfileModes[mode]) }
