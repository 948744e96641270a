package steer

import (
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
)

// ReadStatus reads every steering group and NIC lookup pinned below root
// (DefaultPinRoot when empty), from any process. A root that does not exist
// returns an error wrapping os.ErrNotExist.
func ReadStatus(root string) (Status, error) {
	if root == "" {
		root = DefaultPinRoot
	}
	st := Status{Root: root}
	ents, err := os.ReadDir(root)
	if err != nil {
		return st, fmt.Errorf("read steering status: %w (is edged running with a pin path?)", err)
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(root, e.Name())
		switch {
		case exists(filepath.Join(dir, pinAccepts)):
			g, err := readGroup(dir)
			if err != nil {
				return st, err
			}
			st.Groups = append(st.Groups, g)
		case exists(filepath.Join(dir, pinNICGroups)):
			l, err := readLookup(dir)
			if err != nil {
				return st, err
			}
			st.Lookups = append(st.Lookups, l)
		}
	}
	return st, nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// pinned opens the named pinned maps of dir, closing them all on error.
func pinned(dir string, names ...string) (maps []*ebpf.Map, err error) {
	defer func() {
		if err != nil {
			closeMaps(maps)
		}
	}()
	for _, n := range names {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, n), &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			return maps, fmt.Errorf("open pinned map: %w", err)
		}
		maps = append(maps, m)
	}
	return maps, nil
}

func closeMaps(maps []*ebpf.Map) {
	for _, m := range maps {
		m.Close()
	}
}

func programInfo(path string) (ProgramInfo, error) {
	p, err := ebpf.LoadPinnedProgram(path, &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return ProgramInfo{}, fmt.Errorf("open pinned program: %w", err)
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		return ProgramInfo{}, fmt.Errorf("read program info: %w", err)
	}
	id, _ := info.ID()
	return ProgramInfo{ID: uint32(id), Name: info.Name, Type: strings.ToLower(info.Type.String()), Tag: info.Tag}, nil
}

func readMeta(m *ebpf.Map, key uint32) (uint32, error) {
	var v uint32
	if err := m.Lookup(key, &v); err != nil {
		return 0, fmt.Errorf("read meta %d: %w", key, err)
	}
	return v, nil
}

func readGroup(dir string) (g GroupStatus, err error) {
	g.Name = filepath.Base(dir)
	if g.Program, err = programInfo(filepath.Join(dir, pinProg)); err != nil {
		return g, err
	}
	maps, err := pinned(dir, pinMeta, pinAccepts, pinLive, pinSockets)
	if err != nil {
		return g, err
	}
	defer closeMaps(maps)
	meta, accepts, liveMap, socks := maps[0], maps[1], maps[2], maps[3]
	g.SocketMap = strings.ToLower(socks.Type().String())
	var vals [4]uint32
	for i, key := range []uint32{metaPolicy, metaLoops, metaPort, metaPID} {
		if vals[i], err = readMeta(meta, key); err != nil {
			return g, err
		}
	}
	g.Policy, g.Port, g.PID = Policy(vals[0]), int(vals[2]), int(vals[3])
	n := int(vals[1])
	if n < 1 || n > MaxLoops {
		return g, fmt.Errorf("read group %s: %w: %d loops in meta", dir, ErrBadConfig, n)
	}
	var live liveArray
	if err := liveMap.Lookup(uint32(0), &live); err != nil {
		return g, fmt.Errorf("read live map: %w", err)
	}
	var per []uint64
	for i := range n {
		cpu, err := readMeta(meta, metaLoopCPU+uint32(i))
		if err != nil {
			return g, err
		}
		if err := accepts.Lookup(uint32(i), &per); err != nil {
			return g, fmt.Errorf("read accept counter %d: %w", i, err)
		}
		ls := LoopStatus{Loop: i, CPU: int(cpu), Accepts: sum(per), Live: live.Live[i]}
		if g.Policy == PolicyLeast {
			if d := live.Steered[i] - live.Snap[i]; int32(d) > 0 {
				ls.Pending = d
			}
		}
		g.Loops = append(g.Loops, ls)
	}
	if err := accepts.Lookup(uint32(n), &per); err != nil {
		return g, fmt.Errorf("read miss counter: %w", err)
	}
	g.Misses = sum(per)
	return g, nil
}

func readLookup(dir string) (l LookupStatus, err error) {
	l.Name = filepath.Base(dir)
	if l.Program, err = programInfo(filepath.Join(dir, pinProg)); err != nil {
		return l, err
	}
	maps, err := pinned(dir, pinMeta, pinNICGroups, pinNICStats)
	if err != nil {
		return l, err
	}
	defer closeMaps(maps)
	meta, groups, stats := maps[0], maps[1], maps[2]
	ng, err := readMeta(meta, metaLoops)
	if err != nil {
		return l, err
	}
	pid, err := readMeta(meta, metaPID)
	if err != nil {
		return l, err
	}
	l.PID = int(pid)
	if ng < 1 || ng > MaxGroups {
		return l, fmt.Errorf("read lookup %s: %w: %d groups in meta", dir, ErrBadConfig, ng)
	}
	var per []uint64
	for g := range ng {
		var gi groupInfo
		if err := groups.Lookup(g, &gi); err != nil {
			return l, fmt.Errorf("read group %d: %w", g, err)
		}
		if err := stats.Lookup(g, &per); err != nil {
			return l, fmt.Errorf("read group %d counter: %w", g, err)
		}
		name, _, _ := strings.Cut(string(gi.Name[:]), "\x00")
		l.Groups = append(l.Groups, GroupStats{Name: name, Ifindex: int(gi.Ifindex), Port: uint16(gi.Port), Assigned: sum(per)})
	}
	if err := stats.Lookup(ng, &per); err != nil {
		return l, fmt.Errorf("read drop counter: %w", err)
	}
	l.Dropped = sum(per)
	return l, nil
}

// OnBPFFS reports whether dir is on a mounted BPF filesystem, where pins can
// be made (mount -t bpf bpf /sys/fs/bpf).
func OnBPFFS(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && uint32(st.Type) == unix.BPF_FS_MAGIC
}

// PruneStale removes the pin directories under root (DefaultPinRoot when
// empty) whose attaching process has exited: a process that was killed
// cannot unpin, and its pins would otherwise be listed for ever. It returns
// the names removed.
func PruneStale(root string) ([]string, error) {
	if root == "" {
		root = DefaultPinRoot
	}
	st, err := ReadStatus(root)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var removed []string
	prune := func(name string, pid int) error {
		if pid <= 0 || unix.Kill(pid, 0) != unix.ESRCH {
			return nil // alive, or not ours to judge
		}
		if err := os.RemoveAll(filepath.Join(root, name)); err != nil {
			return fmt.Errorf("prune stale pins: %w", err)
		}
		removed = append(removed, name)
		return nil
	}
	for _, g := range st.Groups {
		if err := prune(g.Name, g.PID); err != nil {
			return removed, err
		}
	}
	for _, l := range st.Lookups {
		if err := prune(l.Name, l.PID); err != nil {
			return removed, err
		}
	}
	return removed, nil
}
