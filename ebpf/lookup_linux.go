package steer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Pinned object names of a Lookup (with pinProg and pinMeta).
const (
	pinNICSocks  = "nicsocks"
	pinNICStats  = "nicstats"
	pinNICGroups = "nicgroups"
)

// groupInfo is a value of the nicgroups map (for ReadStatus).
type groupInfo struct {
	Ifindex uint32
	Port    uint32
	N       uint32
	_       uint32
	Name    [16]byte
}

// Lookup is an attached SK_LOOKUP program. It is safe for concurrent use.
type Lookup struct {
	mu      sync.Mutex // guards the fields below
	groups  []NICGroup
	pinPath string
	link    link.Link
	prog    *ebpf.Program
	socks   *ebpf.Map
	stats   *ebpf.Map
	info    *ebpf.Map
	meta    *ebpf.Map
	closed  bool
}

// AttachLookup attaches an SK_LOOKUP program to the namespace that sends
// each TCP connection arriving on a group's interface and port to that
// group's listeners (bpf_sk_assign; the group's reuseport program then
// picks the loop). Connections that match no group take the kernel's
// normal lookup. A connection that matches a group none of whose listeners
// is open any more is dropped (fail closed: it must never reach another
// NIC's group through the normal lookup).
//
// It returns ErrBadConfig for an invalid config, and ErrNotPermitted or
// ErrUnsupported where BPF is refused: there is no safe fallback that
// keeps NICs apart, so the caller should then bind each group to its NIC's
// address instead.
func AttachLookup(cfg LookupConfig) (l *Lookup, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	for i, g := range cfg.Groups {
		for _, fd := range g.Listeners {
			if err := checkListener(fd, false); err != nil {
				return nil, fmt.Errorf("check group %d (%s) listener fd %d: %w", i, g.Name, fd, err)
			}
		}
	}
	nsPath := cfg.NetnsPath
	if nsPath == "" {
		nsPath = "/proc/self/ns/net"
	}
	l = &Lookup{groups: cfg.Groups}
	made := l
	defer func() {
		if err != nil {
			_ = made.Close()
		}
	}()
	_ = rlimit.RemoveMemlock() // before Linux 5.11 only

	ng := len(cfg.Groups)
	if l.socks, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "edged_nicsocks", Type: ebpf.SockMap,
		KeySize: 4, ValueSize: 8, MaxEntries: uint32(ng * MaxLoops),
	}); err != nil {
		return nil, classify("create nic socket map", err)
	}
	if l.stats, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "edged_nicstats", Type: ebpf.PerCPUArray,
		KeySize: 4, ValueSize: 8, MaxEntries: uint32(ng + 1),
	}); err != nil {
		return nil, classify("create nic counters", err)
	}
	if l.info, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "edged_nicgroups", Type: ebpf.Array,
		KeySize: 4, ValueSize: 32, MaxEntries: uint32(ng),
	}); err != nil {
		return nil, classify("create nic group map", err)
	}
	if l.meta, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "edged_nicmeta", Type: ebpf.Array,
		KeySize: 4, ValueSize: 4, MaxEntries: metaEntries,
	}); err != nil {
		return nil, classify("create nic meta map", err)
	}
	if err := l.meta.Put(uint32(metaLoops), uint32(ng)); err != nil {
		return nil, classify("fill nic meta map", err)
	}
	if err := l.meta.Put(uint32(metaPID), uint32(os.Getpid())); err != nil {
		return nil, classify("fill nic meta map", err)
	}
	for g, grp := range cfg.Groups {
		gi := groupInfo{Ifindex: uint32(grp.Ifindex), Port: uint32(grp.Port), N: uint32(len(grp.Listeners))}
		copy(gi.Name[:15], grp.Name)
		if err := l.info.Put(uint32(g), gi); err != nil {
			return nil, classify("fill nic group map", err)
		}
		for j, fd := range grp.Listeners {
			if err := l.socks.Update(uint32(g*MaxLoops+j), uint64(fd), ebpf.UpdateAny); errors.Is(err, unix.EBUSY) {
				return nil, fmt.Errorf("put group %d (%s) listener fd %d in socket map: %w: it is in a REUSEPORT_SOCKARRAY; attach its group with Config.SockMap (%w)",
					g, grp.Name, fd, ErrBadConfig, err)
			} else if err != nil {
				return nil, classify(fmt.Sprintf("put group %d (%s) listener fd %d in socket map", g, grp.Name, fd), err)
			}
		}
	}
	fams := make([]familyMatch, ng)
	for g, grp := range cfg.Groups {
		if fams[g], err = listenerFamily(grp.Listeners[0]); err != nil {
			return nil, fmt.Errorf("check group %d (%s): %w", g, grp.Name, err)
		}
	}
	insns := lookupProgram(cfg.Groups, fams, l.socks.FD(), l.stats.FD())
	if l.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "edged_niclookup", Type: ebpf.SkLookup, AttachType: ebpf.AttachSkLookup,
		Instructions: insns, License: "Dual MIT/GPL",
	}); err != nil {
		return nil, classify("load sk_lookup program", err)
	}
	if cfg.PinPath != "" {
		if err := l.pin(cfg.PinPath); err != nil {
			return nil, err
		}
	}
	ns, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open netns: %w", &os.PathError{Op: "open", Path: nsPath, Err: err})
	}
	defer unix.Close(ns)
	if l.link, err = link.AttachNetNs(ns, l.prog); err != nil {
		return nil, classify("attach sk_lookup program", err)
	}
	return l, nil
}

// familyMatch is the address family a group's listeners accept: one of
// AF_INET, AF_INET6, or 0 for both (a dual-stack IPv6 listener).
type familyMatch int

// listenerFamily returns the connection families fd accepts, so that the
// program passes a connection its group cannot take (bpf_sk_assign would
// refuse it with EAFNOSUPPORT) to the normal lookup instead of dropping it.
func listenerFamily(fd int) (familyMatch, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return 0, os.NewSyscallError("getsockname", err)
	}
	if _, ok := sa.(*unix.SockaddrInet4); ok {
		return unix.AF_INET, nil
	}
	only, err := unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
	if err != nil {
		return 0, os.NewSyscallError("getsockopt IPV6_V6ONLY", err)
	}
	if only == 1 {
		return unix.AF_INET6, nil
	}
	return 0, nil
}

// lookupProgram matches (ingress_ifindex, local_port, family) against the
// groups in order and assigns the first open listener of the matching group.
func lookupProgram(groups []NICGroup, fams []familyMatch, socks, stats int) asm.Instructions {
	ng := len(groups)
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, lookupProtocolOff, asm.Word),
		asm.JNE.Imm(asm.R2, ipprotoTCP, "pass"),
		asm.LoadMem(asm.R7, asm.R6, lookupIfindexOff, asm.Word),
		asm.LoadMem(asm.R8, asm.R6, lookupPortOff, asm.Word),
	}
	for g, grp := range groups {
		next := fmt.Sprintf("group_%d", g+1)
		if g == ng-1 {
			next = "pass"
		}
		first := asm.JNE.Imm(asm.R7, int32(grp.Ifindex), next)
		if g > 0 {
			first = first.WithSymbol(fmt.Sprintf("group_%d", g))
		}
		insns = append(insns, first)
		if grp.Port != 0 {
			insns = append(insns, asm.JNE.Imm(asm.R8, int32(grp.Port), next))
		}
		if fams[g] != 0 {
			insns = append(insns,
				asm.LoadMem(asm.R2, asm.R6, lookupFamilyOff, asm.Word),
				asm.JNE.Imm(asm.R2, int32(fams[g]), next))
		}
		insns = append(insns, asm.StoreImm(asm.RFP, -8, int64(g), asm.Word))
		for j := range grp.Listeners {
			insns = append(insns,
				asm.StoreImm(asm.RFP, -4, int64(g*MaxLoops+j), asm.Word),
				asm.LoadMapPtr(asm.R1, socks),
				asm.Mov.Reg(asm.R2, asm.RFP),
				asm.Add.Imm(asm.R2, -4),
				asm.FnMapLookupElem.Call(),
				asm.JNE.Imm(asm.R0, 0, "assign"),
			)
		}
		insns = append(insns, asm.Ja.Label("drop"))
	}
	insns = append(insns,
		asm.Mov.Imm(asm.R0, skPass).WithSymbol("pass"),
		asm.Return(),

		// assign: r0 is a referenced socket; assign it, release it.
		asm.Mov.Reg(asm.R9, asm.R0).WithSymbol("assign"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Reg(asm.R2, asm.R9),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnSkAssign.Call(),
		asm.Mov.Reg(asm.R8, asm.R0),
		asm.Mov.Reg(asm.R1, asm.R9),
		asm.FnSkRelease.Call(),
		asm.JNE.Imm(asm.R8, 0, "drop"),
		asm.Ja.Label("count"),

		// drop: count in stats[ng] and refuse.
		asm.StoreImm(asm.RFP, -8, int64(ng), asm.Word).WithSymbol("drop"),
		asm.Mov.Imm(asm.R9, skDrop),
		asm.Ja.Label("count_drop"),

		asm.Mov.Imm(asm.R9, skPass).WithSymbol("count"),
		asm.LoadMapPtr(asm.R1, stats).WithSymbol("count_drop"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "ret"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Mov.Reg(asm.R0, asm.R9).WithSymbol("ret"),
		asm.Return(),
	)
	return insns
}

func (l *Lookup) pin(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("pin lookup: %w", err)
	}
	l.pinPath = dir
	for name, obj := range map[string]interface{ Pin(string) error }{
		pinProg: l.prog, pinNICSocks: l.socks, pinNICStats: l.stats, pinNICGroups: l.info, pinMeta: l.meta,
	} {
		p := filepath.Join(dir, name)
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove stale pin: %w", err)
		}
		if err := obj.Pin(p); err != nil {
			return fmt.Errorf("pin %s: %w", p, err)
		}
	}
	return nil
}

// Stats returns each group's assigned connections and the connections
// dropped because their group had no open listener (or assign failed). It
// returns ErrClosed after Close.
func (l *Lookup) Stats() (groups []GroupStats, dropped uint64, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, 0, fmt.Errorf("read lookup stats: %w", ErrClosed)
	}
	var per []uint64
	for g, grp := range l.groups {
		if err := l.stats.Lookup(uint32(g), &per); err != nil {
			return nil, 0, fmt.Errorf("read group %d counter: %w", g, err)
		}
		groups = append(groups, GroupStats{Name: grp.Name, Ifindex: grp.Ifindex, Port: grp.Port, Assigned: sum(per)})
	}
	if err := l.stats.Lookup(uint32(len(l.groups)), &per); err != nil {
		return nil, 0, fmt.Errorf("read drop counter: %w", err)
	}
	return groups, sum(per), nil
}

// Close detaches the program, unpins and frees the maps. Closing twice
// returns nil.
func (l *Lookup) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	var errs []error
	if l.link != nil {
		errs = append(errs, l.link.Close())
	}
	if l.pinPath != "" {
		for _, name := range []string{pinProg, pinNICSocks, pinNICStats, pinNICGroups, pinMeta} {
			if err := os.Remove(filepath.Join(l.pinPath, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("unpin: %w", err))
			}
		}
		_ = os.Remove(l.pinPath)
	}
	if l.prog != nil {
		errs = append(errs, l.prog.Close())
	}
	for _, m := range []*ebpf.Map{l.socks, l.stats, l.info, l.meta} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	return errors.Join(errs...)
}
