package tuning

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/edgedhq/edged/sysctl"
)

// Status is how a plan line compares with the host.
type Status int

const (
	Same    Status = iota // the host already holds the value
	Change                // apply will write it
	Carried               // delivered inside another line's file (the drop-in)
	Invalid               // cannot be applied here: see Line.Err
)

// Line is one setting next to the host's current value.
type Line struct {
	Setting
	Current string // display form; "(absent)" for a file that does not exist
	Status  Status
	Err     error
	change  *sysctl.Change
}

// Plan is a profile diffed against a host: data in, no side effects.
type Plan struct {
	Profile  Profile
	Host     Host
	Lines    []Line
	Capacity Capacity
}

// NewPlan reads the current value of every setting under h.Root. A setting
// the host cannot take (unknown key, read-only, permission denied, bad
// value) becomes an Invalid line; Err reports them all.
func NewPlan(p Profile, h Host) *Plan {
	pl := &Plan{Profile: p, Host: h, Capacity: EstimateCapacity(p, h)}
	sys := sysctl.New(filepath.Join(h.Root, "proc", "sys"))
	files := sysctl.New(h.Root)
	var dropInNow map[string]string
	for _, s := range p.Settings {
		l := Line{Setting: s}
		var c sysctl.Change
		var err error
		switch s.Class {
		case ClassSysctl:
			c, err = sys.Change(s.Key, s.Value)
		case ClassSysfs, ClassIRQ, ClassSystemd:
			c, err = files.Change(strings.TrimPrefix(s.Key, "/"), s.Value)
		case ClassRlimit, ClassGoEnv:
			l.Status = Carried
			if dropInNow == nil {
				dropInNow = currentDropIn(files)
			}
			l.Current = dropInNow[s.Key]
			if l.Current == "" {
				l.Current = "(unset)"
			}
			pl.Lines = append(pl.Lines, l)
			continue
		}
		if err != nil {
			l.Status, l.Err, l.Current = Invalid, err, currentOrErr(sys, files, s)
			pl.Lines = append(pl.Lines, l)
			continue
		}
		if s.AtLeast && atLeast(c.From, c.To) {
			c.To = c.From
		}
		l.change = &c
		l.Current = display(c.Spec, c.From, c.Existed)
		if c.NeedsWrite() {
			l.Status = Change
		}
		pl.Lines = append(pl.Lines, l)
	}
	return pl
}

// atLeast reports whether single-integer value cur is >= want.
func atLeast(cur, want sysctl.Value) bool {
	a, err1 := strconv.ParseInt(string(cur), 10, 64)
	b, err2 := strconv.ParseInt(string(want), 10, 64)
	return err1 == nil && err2 == nil && a >= b
}

func currentDropIn(files *sysctl.FS) map[string]string {
	v, err := files.Read(strings.TrimPrefix(DropInPath, "/"))
	if err != nil {
		return map[string]string{}
	}
	return parseDropIn(string(v))
}

func currentOrErr(sys, files *sysctl.FS, s Setting) string {
	var v sysctl.Value
	var err error
	if s.Class == ClassSysctl {
		v, err = sys.Read(s.Key)
	} else {
		v, err = files.Read(strings.TrimPrefix(s.Key, "/"))
	}
	switch {
	case errors.Is(err, sysctl.ErrUnknownKey):
		return "(absent)"
	case err != nil:
		return "(unreadable)"
	}
	return string(v)
}

func display(s sysctl.Spec, v sysctl.Value, existed bool) string {
	switch {
	case !existed:
		return "(absent)"
	case s.Type == sysctl.Text && s.Create:
		return fmt.Sprintf("(%d lines)", strings.Count(string(v), "\n"))
	}
	return string(v)
}

// Err joins the errors of all Invalid lines (each wraps a sysctl sentinel)
// under ErrPlan, or returns nil.
func (p *Plan) Err() error {
	var errs []error
	for _, l := range p.Lines {
		if l.Err != nil {
			errs = append(errs, l.Err)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrPlan, errors.Join(errs...))
}

// Filter keeps only the lines whose key starts with one of prefixes (all
// lines when prefixes is empty). The drop-in's carried lines follow it.
func (p *Plan) Filter(prefixes []string) *Plan {
	if len(prefixes) == 0 {
		return p
	}
	match := func(key string) bool {
		for _, pre := range prefixes {
			if strings.HasPrefix(key, pre) {
				return true
			}
		}
		return false
	}
	out := *p
	out.Lines = nil
	for _, l := range p.Lines {
		key := l.Key
		if l.Status == Carried {
			key = DropInPath
		}
		if match(key) {
			out.Lines = append(out.Lines, l)
		}
	}
	return &out
}

// Changes returns the writes the plan needs, in order.
func (p *Plan) Changes() []sysctl.Change {
	var out []sysctl.Change
	for _, l := range p.Lines {
		if l.change != nil && l.Status == Change {
			out = append(out, *l.change)
		}
	}
	return out
}

// Counts returns how many lines are Same, Change and Invalid.
func (p *Plan) Counts() (same, change, invalid int) {
	for _, l := range p.Lines {
		switch l.Status {
		case Same:
			same++
		case Change:
			change++
		case Invalid:
			invalid++
		}
	}
	return
}

// Apply writes the plan's changes with a backup in the state file at
// statePath (see sysctl.Apply: all checks first, rollback on a failure
// part-way). A plan with Invalid lines changes nothing and returns ErrPlan.
func Apply(p *Plan, statePath string) (int, error) {
	if err := p.Err(); err != nil {
		return 0, err
	}
	return sysctl.Apply(p.Changes(), statePath)
}

// Verify reads every file setting of the plan back from the host and
// reports those that do not hold the profile's value, wrapping
// sysctl.ErrMismatch (or ErrPlan when lines were invalid).
func Verify(p *Plan) ([]sysctl.Mismatch, error) {
	if err := p.Err(); err != nil {
		return nil, err
	}
	var all []sysctl.Change
	for _, l := range p.Lines {
		if l.change != nil {
			c := *l.change
			c.Key = l.Key // report the plan's name ("/sys/...")
			all = append(all, c)
		}
	}
	return sysctl.Verify(all)
}

// Rollback restores what Apply recorded in the state file.
func Rollback(statePath string) (int, error) { return sysctl.Rollback(statePath) }

// Capacity estimates how many connections the profile admits on a host.
type Capacity struct {
	Target        int64   `json:"target"`
	KernelBytes   int64   `json:"kernel_bytes_per_conn"`
	EdgedBytes    int64   `json:"edged_bytes_per_conn"`
	TLSShare      float64 `json:"tls_share,omitempty"`          // fraction of connections over TLS
	TLSBytes      int64   `json:"tls_bytes_per_conn,omitempty"` // TLSConnBytes times TLSShare, in EdgedBytes
	MemBytes      uint64  `json:"mem_bytes"`
	BufferBytes   int64   `json:"tcp_buffer_bytes"`
	ReserveBytes  int64   `json:"os_reserve_bytes"`
	ByMemory      int64   `json:"by_memory"`
	NoFile        int64   `json:"rlimit_nofile"`
	NrOpen        int64   `json:"nr_open"`
	FileMax       int64   `json:"file_max"`
	ByFiles       int64   `json:"by_files"`
	FileLimitName string  `json:"file_limit"`
	Binding       string  `json:"binding"`
	Fits          int64   `json:"fits"`
}

// EstimateCapacity computes connections that fit with profile p on host h:
// by memory, (RAM - OS reserve - TCP buffers at tcp_mem pressure) divided by
// KernelSocketBytes + EdgedConnBytes; by files, the smallest of
// RLIMIT_NOFILE, fs.nr_open and fs.file-max less reservedFDs. The smaller
// binds first.
func EstimateCapacity(p Profile, h Host) Capacity { return EstimateCapacityTLS(p, h, 0) }

// EstimateCapacityTLS is EstimateCapacity with a share (0..1) of the
// connections over TLS, each costing TLSConnBytes more in edged.
func EstimateCapacityTLS(p Profile, h Host, tlsShare float64) Capacity {
	c := Capacity{Target: p.Sizing.Conns, KernelBytes: KernelSocketBytes, EdgedBytes: EdgedConnBytes, MemBytes: h.MemBytes}
	num := func(key string) int64 {
		s, _ := p.Setting(key)
		f := strings.Fields(s.Value)
		if len(f) == 0 {
			return 0
		}
		v, _ := strconv.ParseInt(f[len(f)/2], 10, 64) // tcp_mem: the middle (pressure) field
		return v
	}
	if tlsShare > 0 {
		c.TLSShare, c.TLSBytes = tlsShare, int64(tlsShare*TLSConnBytes+0.5)
		c.EdgedBytes += c.TLSBytes
	}
	mem := int64(h.MemBytes)
	c.ReserveBytes = min(2*gib, mem/8)
	c.BufferBytes = min(num("net.ipv4.tcp_mem")*int64(h.PageSize), mem/4)
	c.ByMemory = max(0, (mem-c.ReserveBytes-c.BufferBytes)/(c.KernelBytes+c.EdgedBytes))
	c.NoFile, c.NrOpen, c.FileMax = num("RLIMIT_NOFILE"), num("fs.nr_open"), num("fs.file-max")
	c.ByFiles, c.FileLimitName = c.NoFile, "RLIMIT_NOFILE"
	if c.NrOpen < c.ByFiles {
		c.ByFiles, c.FileLimitName = c.NrOpen, "fs.nr_open"
	}
	if c.FileMax < c.ByFiles {
		c.ByFiles, c.FileLimitName = c.FileMax, "fs.file-max"
	}
	c.ByFiles = max(0, c.ByFiles-reservedFDs)
	c.Binding, c.Fits = "memory", c.ByMemory
	if c.ByFiles < c.ByMemory {
		c.Binding, c.Fits = "files ("+c.FileLimitName+")", c.ByFiles
	}
	return c
}
