package steer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Pinned object names under Config.PinPath.
const (
	pinProg     = "prog"
	pinSockets  = "sockets"
	pinAccepts  = "accepts"
	pinLive     = "live"
	pinCPULoops = "cpuloops"
	pinMeta     = "meta"
)

// meta map layout (u32 values): what ReadStatus needs to render a group.
const (
	metaPolicy  = 0
	metaLoops   = 1
	metaPort    = 2
	metaPID     = 3
	metaLoopCPU = 8 // metaLoopCPU+i: loop i's CPU
	metaEntries = metaLoopCPU + MaxLoops
)

// kernel is a Steering's BPF state.
type kernel struct {
	listeners []int
	port      int // local port of the group, to recognise its fds at Close
	pinPath   string

	prog      *ebpf.Program
	sockets   *ebpf.Map
	acceptMap *ebpf.Map
	liveMap   *ebpf.Map
	cpuLoops  *ebpf.Map
	meta      *ebpf.Map

	mem      []byte     // mmapped value of liveMap
	live     *liveArray // points into mem
	attached bool
}

// classify maps a BPF syscall failure to ErrNotPermitted/ErrUnsupported
// where it means the fallback applies.
func classify(what string, err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("%s: %w: %w", what, ErrNotPermitted, err)
	case errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("%s: %w: %w", what, ErrUnsupported, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// checkListeners reports ErrBadConfig unless every fd is a listening TCP
// socket with SO_REUSEPORT and all share one local address.
func checkListeners(fds []int) error {
	var first unix.Sockaddr
	for i, fd := range fds {
		if err := checkListener(fd, true); err != nil {
			return fmt.Errorf("check listener %d (fd %d): %w", i, fd, err)
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			return fmt.Errorf("check listener %d (fd %d): %w", i, fd, os.NewSyscallError("getsockname", err))
		}
		if i == 0 {
			first = sa
		} else if sockaddrString(sa) != sockaddrString(first) {
			return fmt.Errorf("check listener %d (fd %d): %w: bound to %s, listener 0 to %s",
				i, fd, ErrBadConfig, sockaddrString(sa), sockaddrString(first))
		}
	}
	return nil
}

// checkListener reports ErrBadConfig unless fd is a listening TCP socket
// (with SO_REUSEPORT if reuse).
func checkListener(fd int, reuse bool) error {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fmt.Errorf("%w: not a socket: %w", ErrBadConfig, os.NewSyscallError("getsockopt", err))
	}
	proto, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	if err != nil {
		return os.NewSyscallError("getsockopt", err)
	}
	if typ != unix.SOCK_STREAM || proto != unix.IPPROTO_TCP {
		return fmt.Errorf("%w: not a TCP socket", ErrBadConfig)
	}
	if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v == 0 {
		return fmt.Errorf("%w: not listening", ErrBadConfig)
	}
	if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT); reuse && (err != nil || v == 0) {
		return fmt.Errorf("%w: SO_REUSEPORT is not set", ErrBadConfig)
	}
	return nil
}

func sockaddrString(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return fmt.Sprintf("%v:%d", a.Addr, a.Port)
	case *unix.SockaddrInet6:
		return fmt.Sprintf("[%v%%%d]:%d", a.Addr, a.ZoneId, a.Port)
	}
	return fmt.Sprintf("%T", sa)
}

func sockaddrPort(sa unix.Sockaddr) int {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return a.Port
	case *unix.SockaddrInet6:
		return a.Port
	}
	return -1
}

// loopCPUs returns cfg.LoopCPUs or the default loop i -> CPU i mod ncpu.
func loopCPUs(cfg Config) []int {
	if len(cfg.LoopCPUs) != 0 {
		return cfg.LoopCPUs
	}
	cpus := make([]int, len(cfg.Listeners))
	for i := range cpus {
		cpus[i] = i % runtime.NumCPU()
	}
	return cpus
}

// attachKernel creates the maps, fills the socket array, loads the program
// and attaches it to the group with SO_ATTACH_REUSEPORT_EBPF. On failure it
// releases everything it made.
func attachKernel(cfg Config, initial *liveArray) (k *kernel, err error) {
	n := len(cfg.Listeners)
	k = &kernel{listeners: append([]int(nil), cfg.Listeners...), port: -1}
	made := k // k itself is nil in a failing return
	defer func() {
		if err != nil {
			_ = made.close()
		}
	}()
	if sa, err := unix.Getsockname(cfg.Listeners[0]); err == nil {
		k.port = sockaddrPort(sa)
	}
	// Needed before Linux 5.11 only (memcg accounting); harmless after.
	_ = rlimit.RemoveMemlock()

	sockType := ebpf.ReusePortSockArray
	if cfg.SockMap {
		sockType = ebpf.SockMap
	}
	if k.sockets, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "edged_socks", Type: sockType,
		KeySize: 4, ValueSize: 8, MaxEntries: uint32(n),
	}); err != nil {
		return nil, classify("create socket array", err)
	}
	if k.acceptMap, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "edged_accepts", Type: ebpf.PerCPUArray,
		KeySize: 4, ValueSize: 8, MaxEntries: uint32(n + 1),
	}); err != nil {
		return nil, classify("create accept counters", err)
	}
	if k.liveMap, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "edged_live", Type: ebpf.Array,
		KeySize: 4, ValueSize: liveSize, MaxEntries: 1, Flags: unix.BPF_F_MMAPABLE,
	}); err != nil {
		return nil, classify("create live map", err)
	}
	if k.mem, err = unix.Mmap(k.liveMap.FD(), 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		return nil, classify("map live counts", os.NewSyscallError("mmap", err))
	}
	k.live = (*liveArray)(unsafe.Pointer(&k.mem[0]))
	*k.live = *initial

	cpus := loopCPUs(cfg)
	if k.meta, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "edged_meta", Type: ebpf.Array,
		KeySize: 4, ValueSize: 4, MaxEntries: metaEntries,
	}); err != nil {
		return nil, classify("create meta map", err)
	}
	meta := map[uint32]uint32{metaPolicy: uint32(cfg.Policy), metaLoops: uint32(n), metaPort: uint32(k.port), metaPID: uint32(os.Getpid())}
	for i, c := range cpus {
		meta[metaLoopCPU+uint32(i)] = uint32(c)
	}
	for key, v := range meta {
		if err := k.meta.Put(key, v); err != nil {
			return nil, classify("fill meta map", err)
		}
	}

	if cfg.Policy == PolicyCPU {
		if err := k.fillCPULoops(cpus); err != nil {
			return nil, err
		}
	}

	for i, fd := range cfg.Listeners {
		if err := k.sockets.Update(uint32(i), uint64(fd), ebpf.UpdateAny); err != nil {
			return nil, classify(fmt.Sprintf("put listener %d (fd %d) in socket array", i, fd), err)
		}
	}

	m := reuseportMaps{sockets: k.sockets.FD(), accepts: k.acceptMap.FD(), live: k.liveMap.FD(), cpuLoops: -1}
	if k.cpuLoops != nil {
		m.cpuLoops = k.cpuLoops.FD()
	}
	insns, err := reuseportProgram(cfg.Policy, n, m)
	if err != nil {
		return nil, err
	}
	if k.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "edged_" + cfg.Policy.String(), Type: ebpf.SkReuseport,
		AttachType: ebpf.AttachSkReuseportSelect, Instructions: insns, License: "Dual MIT/GPL",
	}); err != nil {
		return nil, classify("load reuseport program", err)
	}

	if cfg.PinPath != "" {
		if err := k.pin(cfg.PinPath); err != nil {
			return nil, err
		}
	}

	if err := unix.SetsockoptInt(cfg.Listeners[0], unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_EBPF, k.prog.FD()); err != nil {
		return nil, classify("attach reuseport program", os.NewSyscallError("setsockopt SO_ATTACH_REUSEPORT_EBPF", err))
	}
	k.attached = true
	return k, nil
}

func (k *kernel) fillCPULoops(cpus []int) error {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return classify("count possible CPUs", err)
	}
	type entry struct {
		Count uint32
		Loops [cpuLoopSlots]uint32
	}
	entries := make([]entry, ncpu)
	for loop, c := range cpus {
		if c >= ncpu {
			return fmt.Errorf("fill cpu map: %w: loop %d on CPU %d, host has %d", ErrBadConfig, loop, c, ncpu)
		}
		e := &entries[c]
		if e.Count == cpuLoopSlots {
			return fmt.Errorf("fill cpu map: %w: more than %d loops on CPU %d", ErrBadConfig, cpuLoopSlots, c)
		}
		e.Loops[e.Count] = uint32(loop)
		e.Count++
	}
	if k.cpuLoops, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "edged_cpuloops", Type: ebpf.Array,
		KeySize: 4, ValueSize: 4 * (1 + cpuLoopSlots), MaxEntries: uint32(ncpu),
	}); err != nil {
		return classify("create cpu map", err)
	}
	for c := range entries {
		if err := k.cpuLoops.Put(uint32(c), entries[c]); err != nil {
			return classify("fill cpu map", err)
		}
	}
	return nil
}

// pin pins the objects under dir, replacing stale pins of the same names.
func (k *kernel) pin(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("pin steering: %w", err)
	}
	k.pinPath = dir
	objs := []struct {
		name string
		obj  interface{ Pin(string) error }
	}{{pinProg, k.prog}, {pinSockets, k.sockets}, {pinAccepts, k.acceptMap}, {pinLive, k.liveMap}, {pinMeta, k.meta}}
	if k.cpuLoops != nil {
		objs = append(objs, struct {
			name string
			obj  interface{ Pin(string) error }
		}{pinCPULoops, k.cpuLoops})
	}
	for _, o := range objs {
		p := filepath.Join(dir, o.name)
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove stale pin: %w", err)
		}
		if err := o.obj.Pin(p); err != nil {
			return fmt.Errorf("pin %s: %w", p, err)
		}
	}
	return nil
}

// bindLifetime unmaps the live table once owner is unreachable: SetLive may
// still hold a pointer into it after Close, so Close cannot unmap it.
func (k *kernel) bindLifetime(owner *Steering) {
	mem := k.mem
	k.mem = nil
	runtime.AddCleanup(owner, func(b []byte) { _ = unix.Munmap(b) }, mem)
}

func (k *kernel) readAccepts(st []LoopStats) error {
	var per []uint64
	for i := range st {
		if err := k.acceptMap.Lookup(uint32(i), &per); err != nil {
			return fmt.Errorf("read accept counter %d: %w", i, err)
		}
		st[i].Accepts = sum(per)
	}
	return nil
}

func (k *kernel) misses() (uint64, error) {
	var per []uint64
	if err := k.acceptMap.Lookup(uint32(len(k.listeners)), &per); err != nil {
		return 0, fmt.Errorf("read miss counter: %w", err)
	}
	return sum(per), nil
}

func sum(v []uint64) uint64 {
	var t uint64
	for _, x := range v {
		t += x
	}
	return t
}

// close detaches the program from the group through the first listener
// that is still the group's (listening on the group's port), unpins, and
// closes the maps and the program.
func (k *kernel) close() error {
	var errs []error
	if k.attached {
		errs = append(errs, k.detach())
	}
	if k.pinPath != "" {
		for _, name := range []string{pinProg, pinSockets, pinAccepts, pinLive, pinCPULoops, pinMeta} {
			if err := os.Remove(filepath.Join(k.pinPath, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("unpin: %w", err))
			}
		}
		_ = os.Remove(k.pinPath) // only if empty
	}
	for _, c := range []interface{ Close() error }{k.prog, k.sockets, k.acceptMap, k.liveMap, k.cpuLoops, k.meta} {
		switch v := c.(type) {
		case *ebpf.Program:
			if v != nil {
				errs = append(errs, v.Close())
			}
		case *ebpf.Map:
			if v != nil {
				errs = append(errs, v.Close())
			}
		}
	}
	if k.mem != nil { // never handed to bindLifetime: Attach failed
		errs = append(errs, os.NewSyscallError("munmap", unix.Munmap(k.mem)))
		k.mem = nil
	}
	return errors.Join(errs...)
}

func (k *kernel) detach() error {
	for _, fd := range k.listeners {
		sa, err := unix.Getsockname(fd)
		if err != nil || sockaddrPort(sa) != k.port || checkListener(fd, true) != nil {
			continue // closed, or the fd now names another socket
		}
		// The option value is ignored by the kernel; see sock_setsockopt.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_REUSEPORT_BPF, 0); err != nil {
			if errors.Is(err, unix.ENOENT) {
				return nil // nothing attached any more
			}
			return fmt.Errorf("detach reuseport program: %w", os.NewSyscallError("setsockopt SO_DETACH_REUSEPORT_BPF", err))
		}
		return nil
	}
	return nil // every listener is gone, and the group with them
}
