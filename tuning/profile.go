package tuning

import (
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strings"

	"github.com/edgedhq/edged/sysctl"
)

// Errors returned by this package, wrapped with detail.
var (
	ErrUnknownProfile = errors.New("unknown profile")
	ErrConns          = errors.New("bad connection target")
	ErrHost           = errors.New("unreadable host description")
	ErrPlan           = errors.New("plan has errors")
)

// Per-connection costs behind the capacity estimate and the memory formulas.
const (
	// EdgedConnBytes is edged's user-space memory per idle connection: the
	// design budget (DESIGN.md "Budgets"). It must be updated from the
	// measured figure in BENCHMARKS.md once the netpoll/edge benchmarks
	// report RSS per connection.
	EdgedConnBytes = 512

	// TLSConnBytes is what a TLS session adds to an idle connection in
	// edged: measured RSS per idle session over TLS minus over TCP at
	// 10,000 (1,507 - 852 B, BENCHMARKS.md "TLS"), of which 136 B are the
	// record state (internal/edgetls.StateBytes) and the rest the heap the
	// handshakes leave fragmented. Handshakes in progress cost more (a
	// crypto/tls server conn, ~50-100 KB each) but are capped
	// (--tls-max-handshakes).
	TLSConnBytes = 655

	// KernelSocketBytes is the kernel's slab memory for one idle
	// established TCP socket held in epoll, summed from object sizes in
	// /proc/slabinfo on Linux 6.18 x86_64 (the 2-core dev VM, 2026-11-26):
	// TCP (struct tcp_sock) 2368 + sock_inode_cache 832 + filp 192 +
	// dentry 192, plus fs/eventpoll.c's struct epitem (128) and
	// eppoll_entry (64) = 3776 bytes. An idle socket holds no skb: buffer
	// memory is budgeted separately through tcp_mem. BenchmarkIdleSocketSlab
	// measures it from slabinfo deltas (3621-3785 B, BENCHMARKS.md).
	KernelSocketBytes = 2368 + 832 + 192 + 192 + 128 + 64

	// reservedFDs are descriptors edged holds besides connections:
	// listeners (one per loop), epoll and eventfds, logs, the admin server.
	reservedFDs = 4096

	// whatsAppPktPerConn is packets per second per connection at peak:
	// 571k packets/s over 2M connections on the 2012 host (DESIGN.md).
	whatsAppPktPerConn = 571000.0 / 2000000.0
)

// Class says which mechanism delivers a setting.
type Class string

const (
	ClassSysctl  Class = "sysctl"  // a /proc/sys key
	ClassSysfs   Class = "sysfs"   // a /sys file (RPS, RFS, XPS, THP)
	ClassIRQ     Class = "irq"     // /proc/irq/N/smp_affinity_list
	ClassSystemd Class = "systemd" // the edged.service drop-in file
	ClassRlimit  Class = "rlimit"  // delivered by the drop-in (LimitNOFILE)
	ClassGoEnv   Class = "goenv"   // delivered by the drop-in (Environment=)
)

// Setting is one tunable with its value, why, and how the value was derived.
// Key is a dotted sysctl name, an absolute host path for sysfs, irq and
// systemd settings, or a name (RLIMIT_NOFILE, GOMAXPROCS) for the settings
// the drop-in carries.
type Setting struct {
	Class   Class  `json:"class"`
	Key     string `json:"key"`
	Value   string `json:"value"`
	Reason  string `json:"reason"`
	Formula string `json:"formula"`
	// AtLeast: a larger current value is kept (file limits are floors).
	AtLeast bool `json:"at_least,omitempty"`
}

// Sizing is what a profile is computed from.
type Sizing struct {
	CPUs     int    `json:"cpus"`
	MemBytes uint64 `json:"mem_bytes"`
	Conns    int64  `json:"conns"`
}

// Profile is data: a named list of settings for one sizing on one host's
// NIC layout. Build a Plan from it to compare it with the host.
type Profile struct {
	Name     string    `json:"name"`
	Summary  string    `json:"summary"`
	Sizing   Sizing    `json:"sizing"`
	Settings []Setting `json:"settings"`
	Warnings []string  `json:"warnings,omitempty"`
}

// Setting returns the setting with key, if the profile has it.
func (p Profile) Setting(key string) (Setting, bool) {
	i := slices.IndexFunc(p.Settings, func(s Setting) bool { return s.Key == key })
	if i < 0 {
		return Setting{}, false
	}
	return p.Settings[i], true
}

const gib = 1 << 30

var profiles = []struct {
	name, summary string
	sizing        func(h Host, conns int64) (Sizing, error)
}{
	{"24c-100g", "the seed host: 24 CPUs, 100 GiB, two NICs, 2M mostly idle connections", func(h Host, conns int64) (Sizing, error) {
		return Sizing{CPUs: 24, MemBytes: 100 * gib, Conns: or(conns, 2_000_000)}, nil
	}},
	{"auto", "sized from this host's CPUs and RAM; --conns or the seed host's RAM per connection", func(h Host, conns int64) (Sizing, error) {
		if conns == 0 {
			conns = autoConns(h.MemBytes)
		}
		return Sizing{CPUs: h.CPUs, MemBytes: h.MemBytes, Conns: conns}, nil
	}},
	{"dev", "a small box: 2 CPUs, 4 GiB, 15k connections (under a 20k open-file cap)", func(h Host, conns int64) (Sizing, error) {
		return Sizing{CPUs: 2, MemBytes: 4 * gib, Conns: or(conns, 15_000)}, nil
	}},
}

// autoConns is the auto profile's connection target without --conns: the
// seed host's ratio, 2M connections in 100 GiB (about 52 KiB of RAM each,
// kernel socket, buffers and headroom included), for this host's RAM,
// clamped to [1,000, maxConns].
func autoConns(mem uint64) int64 {
	return min(max(int64(mem/gib*2_000_000/100+mem%gib*2_000_000/(100*gib)), 1_000), maxConns)
}

func or(v, def int64) int64 {
	if v != 0 {
		return v
	}
	return def
}

// Names lists the profiles, sorted.
func Names() []string {
	var out []string
	for _, p := range profiles {
		out = append(out, p.name)
	}
	return out
}

// maxConns bounds --conns: beyond this fs.nr_open's kernel maximum
// (2147483584, fs/file.c) cannot hold the descriptors.
const maxConns = 1 << 30

// Load computes the named profile for host h. conns overrides the profile's
// connection target (0 keeps the default; auto requires it). It returns
// ErrUnknownProfile or ErrConns.
func Load(name string, h Host, conns int64) (Profile, error) {
	i := slices.IndexFunc(profiles, func(p struct {
		name, summary string
		sizing        func(h Host, conns int64) (Sizing, error)
	}) bool {
		return p.name == name
	})
	if i < 0 {
		return Profile{}, fmt.Errorf("load profile %q: %w (have %s)", name, ErrUnknownProfile, strings.Join(Names(), ", "))
	}
	if conns < 0 || conns > maxConns {
		return Profile{}, fmt.Errorf("load profile %q: %w: %d connections, want 1..%d", name, ErrConns, conns, int64(maxConns))
	}
	sz, err := profiles[i].sizing(h, conns)
	if err != nil {
		return Profile{}, err
	}
	p := Profile{Name: name, Summary: profiles[i].summary, Sizing: sz}
	p.Settings = build(sz, h)
	if h.CPUs < sz.CPUs || h.MemBytes < sz.MemBytes*9/10 {
		p.Warnings = append(p.Warnings, fmt.Sprintf("profile %s is sized for %d CPUs and %s; this host has %d CPUs and %s",
			name, sz.CPUs, human(sz.MemBytes), h.CPUs, human(h.MemBytes)))
	}
	return p, nil
}

func human(b uint64) string {
	switch {
	case b >= gib:
		return fmt.Sprintf("%.1f GiB", float64(b)/gib)
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%d B", b)
}

func pow2ceil(v int64) int64 {
	if v <= 1 {
		return 1
	}
	return 1 << bits.Len64(uint64(v-1))
}

func clamp(v, lo, hi int64) int64 { return max(lo, min(v, hi)) }

func roundUp(v, m int64) int64 { return (v + m - 1) / m * m }

// DropInPath is the systemd drop-in that carries LimitNOFILE and the Go
// runtime environment for edged.service.
const DropInPath = "/etc/systemd/system/edged.service.d/50-edgectl-tune.conf"

// numbers derives every sized value once, so settings, the drop-in and the
// capacity estimate agree.
type numbers struct {
	nofile, nrOpen, fileMax     int64
	tcpMem                      [3]int64 // pages
	somaxconn, synBacklog       int64
	netdevBacklog               int64
	goMemLimitMiB, osReserveMiB int64
}

func size(sz Sizing, h Host) numbers {
	var n numbers
	c, page := sz.Conns, int64(h.PageSize)
	n.nofile = roundUp(c+c/4+reservedFDs, 65536)
	n.nrOpen = max(1<<20, n.nofile)
	n.fileMax = max(int64(sz.MemBytes>>10)/10, 2*n.nofile+65536)
	mem := int64(sz.MemBytes)
	n.tcpMem = [3]int64{
		min(c*4096, mem/8) / page,
		min(c*8192, mem/4) / page,
		mem * 3 / 8 / page,
	}
	n.somaxconn = clamp(pow2ceil(c/(10*int64(h.CPUs))), 4096, 65535)
	n.synBacklog = n.somaxconn
	n.netdevBacklog = clamp(pow2ceil(int64(float64(c)*whatsAppPktPerConn/float64(h.CPUs)/10)), 1000, 65536)
	n.osReserveMiB = min(2048, mem>>20/8)
	free := mem>>20 - n.tcpMem[2]*page>>20 - c*KernelSocketBytes>>20 - n.osReserveMiB
	n.goMemLimitMiB = max(256, free*9/10)
	return n
}

func build(sz Sizing, h Host) []Setting {
	n := size(sz, h)
	c := sz.Conns
	page := int64(h.PageSize)
	var out []Setting
	add := func(class Class, key string, value any, reason, formula string) {
		out = append(out, Setting{Class: class, Key: key, Value: fmt.Sprint(value), Reason: reason, Formula: formula})
	}
	sys := func(key string, value any, reason, formula string) { add(ClassSysctl, key, value, reason, formula) }

	sys("fs.nr_open", n.nrOpen, "per-process cap on RLIMIT_NOFILE; must admit edged's limit (a larger value is kept)",
		fmt.Sprintf("max(1048576, nofile) = max(1048576, %d)", n.nofile))
	sys("fs.file-max", n.fileMax, "system-wide open files: edged plus a second edged during a restart handover (a larger value is kept)",
		fmt.Sprintf("max(RAM/10KiB, 2*nofile+65536) = max(%d, %d); RAM/10KiB is the kernel's own default", int64(sz.MemBytes>>10)/10, 2*n.nofile+65536))
	out[0].AtLeast, out[1].AtLeast = true, true
	sys("net.core.somaxconn", n.somaxconn, "accept queue per listener: a reconnect storm brings every client back within ~10 s, spread over one listener per CPU",
		fmt.Sprintf("clamp(pow2ceil(conns/(10s*CPUs)), 4096, 65535) = clamp(pow2ceil(%d/(10*%d)), 4096, 65535)", c, h.CPUs))
	sys("net.ipv4.tcp_max_syn_backlog", n.synBacklog, "half-open connections during the same storm; syncookies take over beyond it",
		"= net.core.somaxconn")
	sys("net.core.netdev_max_backlog", n.netdevBacklog, "per-CPU input queue before the softirq drops: 100 ms of peak packets per CPU",
		fmt.Sprintf("clamp(pow2ceil(conns*%.4f pkt/s*0.1s/CPUs), 1000, 65536) = clamp(pow2ceil(%d*%.4f*0.1/%d), 1000, 65536); 571k pkt/s at 2M conns (DESIGN.md)",
			whatsAppPktPerConn, c, whatsAppPktPerConn, h.CPUs))
	sys("net.ipv4.tcp_mem", fmt.Sprintf("%d %d %d", n.tcpMem[0], n.tcpMem[1], n.tcpMem[2]),
		"TCP buffer pages: no pressure below one page per connection, pressure at two, hard cap at 3/8 of RAM",
		fmt.Sprintf("min(conns*4KiB, RAM/8)/page, min(conns*8KiB, RAM/4)/page, RAM*3/8/page; conns=%d RAM=%s page=%d", c, human(sz.MemBytes), page))
	bufs := fmt.Sprintf("%d %d %d", page, 2*page, 64*page)
	bufFormula := fmt.Sprintf("page, 2*page, 64*page; page=%d", page)
	sys("net.ipv4.tcp_rmem", bufs, "small default receive buffer for idle-heavy fleets (an MQTT PUBLISH is under 1 KiB); autotuning grows busy sockets", bufFormula)
	sys("net.ipv4.tcp_wmem", bufs, "small default send buffer; edged queues in user space only what the kernel does not take", bufFormula)
	sys("net.ipv4.ip_local_port_range", "1024 65535", "widest ephemeral range for outbound connections (edgebench, upstreams) from this host", "fixed")
	sys("net.ipv4.tcp_tw_reuse", 1, "reuse TIME-WAIT ports for outbound connections during reconnect churn", "fixed")
	sys("net.ipv4.tcp_syncookies", 1, "keep accepting when the SYN queue overflows in a reconnect storm", "fixed")
	sys("net.ipv4.tcp_fin_timeout", 15, "release FIN-WAIT-2 sockets of vanished mobile clients after 15 s, not 60", "fixed")
	sys("net.ipv4.tcp_keepalive_time", 300, "probe idle sockets before typical mobile NAT timeouts (5-30 min) drop them", "fixed")
	sys("net.ipv4.tcp_keepalive_intvl", 30, "seconds between keepalive probes", "fixed")
	sys("net.ipv4.tcp_keepalive_probes", 4, "a dead peer is found within 300+4*30 = 420 s", "fixed")

	rps := false
	for _, nic := range h.NICs {
		rps = rps || nic.RFS
	}
	const sockFlows = 32768
	if rps {
		sys("net.core.rps_sock_flow_entries", sockFlows, "RFS flow table: steer each flow's packets to the CPU whose loop reads it", "32768 (scaling.rst: moderately loaded server)")
	}
	out = append(out, nicSettings(h, sockFlows)...)

	if h.THP {
		add(ClassSysfs, "/sys/kernel/mm/transparent_hugepage/enabled", "madvise",
			"huge pages only where asked: 'always' inflates RSS of sparsely touched slabs and adds compaction stalls", "fixed")
	}

	add(ClassRlimit, "RLIMIT_NOFILE", n.nofile, "one descriptor per connection plus a quarter headroom and edged's own",
		fmt.Sprintf("roundup(conns*1.25 + %d, 65536) = roundup(%d*1.25 + %d, 65536)", reservedFDs, c, reservedFDs))
	add(ClassGoEnv, "GOMAXPROCS", h.CPUs, "one event loop per CPU of this host", "= CPUs of this host")
	add(ClassGoEnv, "GOGC", 200, "the slab is pointer-free, so the heap the GC scans is small; fewer cycles, bounded by GOMEMLIMIT", "fixed")
	add(ClassGoEnv, "GOMEMLIMIT", fmt.Sprintf("%dMiB", n.goMemLimitMiB), "soft heap limit: RAM left after TCP buffers, kernel sockets and the OS, less 10%",
		fmt.Sprintf("max(256, 0.9*(RAM - tcp_mem[max]*page - conns*%d B - reserve)) = 0.9*(%d - %d - %d - %d) MiB",
			KernelSocketBytes, sz.MemBytes>>20, n.tcpMem[2]*page>>20, c*KernelSocketBytes>>20, n.osReserveMiB))
	if !h.Systemd {
		// No drop-in to carry them: say where they go instead.
		for i := range out {
			if out[i].Class == ClassRlimit || out[i].Class == ClassGoEnv {
				out[i].Reason += "; this host runs no systemd, so set it where edged starts (ulimit -n, the environment)"
			}
		}
		return out
	}
	add(ClassSystemd, DropInPath, dropIn(out), "carries RLIMIT_NOFILE and the Go runtime settings to edged.service", "LimitNOFILE= and Environment= from the lines above")
	return out
}

// nicSettings spreads each NIC's queue interrupts over the CPUs and sets
// RPS, RFS and XPS per queue, for the files this host has.
func nicSettings(h Host, sockFlows int64) []Setting {
	var out []Setting
	all := make([]int, h.CPUs)
	for i := range all {
		all[i] = i
	}
	k := 0
	for _, nic := range h.NICs {
		for _, irq := range nic.IRQs {
			cpu := k % h.CPUs
			out = append(out, Setting{Class: ClassIRQ, Key: fmt.Sprintf("/proc/irq/%d/smp_affinity_list", irq.Num), Value: fmt.Sprint(cpu),
				Reason:  fmt.Sprintf("%s (%s): one queue interrupt per CPU, NICs on distinct CPUs", irq.Name, nic.Name),
				Formula: fmt.Sprintf("cpu = k mod CPUs = %d mod %d (k: queue interrupt index over all NICs)", k, h.CPUs)})
			k++
		}
		base := "/sys/class/net/" + nic.Name + "/queues/"
		nRx := int64(len(nic.RxQueues))
		for _, q := range nic.RxQueues {
			if nic.RPS {
				mask, reason, formula := "0", "hardware RSS queues cover every CPU: RPS off", fmt.Sprintf("rx queues (%d) >= CPUs (%d): 0", nRx, h.CPUs)
				if nRx < int64(h.CPUs) {
					mask, reason, formula = sysctl.MaskOf(all), "fewer rx queues than CPUs: spread protocol work with RPS", fmt.Sprintf("rx queues (%d) < CPUs (%d): all CPUs", nRx, h.CPUs)
				}
				out = append(out, Setting{Class: ClassSysfs, Key: fmt.Sprintf("%srx-%d/rps_cpus", base, q), Value: mask, Reason: reason, Formula: formula})
			}
			if nic.RFS {
				cnt := pow2ceil(sockFlows / max(nRx, 1))
				out = append(out, Setting{Class: ClassSysfs, Key: fmt.Sprintf("%srx-%d/rps_flow_cnt", base, q), Value: fmt.Sprint(cnt),
					Reason: "RFS flows per queue", Formula: fmt.Sprintf("pow2ceil(rps_sock_flow_entries/rx queues) = pow2ceil(%d/%d)", sockFlows, nRx)})
			}
		}
		nTx := len(nic.TxQueues)
		for _, q := range nic.TxQueues {
			if !nic.XPS {
				continue
			}
			var cpus []int
			for c := q; c < h.CPUs; c += nTx {
				cpus = append(cpus, c)
			}
			mask := "0"
			if len(cpus) > 0 {
				mask = sysctl.MaskOf(cpus)
			}
			out = append(out, Setting{Class: ClassSysfs, Key: fmt.Sprintf("%stx-%d/xps_cpus", base, q), Value: mask,
				Reason: "transmit on a queue owned by the sending CPU", Formula: fmt.Sprintf("CPUs c with c mod tx queues = %d (tx queues %d)", q, nTx)})
		}
	}
	return out
}

// dropIn renders the systemd drop-in from the rlimit and goenv settings.
func dropIn(settings []Setting) string {
	var b strings.Builder
	b.WriteString("# Written by edgectl tune; undo with edgectl tune rollback.\n[Service]\n")
	for _, s := range settings {
		switch s.Class {
		case ClassRlimit:
			fmt.Fprintf(&b, "LimitNOFILE=%s\n", s.Value)
		case ClassGoEnv:
			fmt.Fprintf(&b, "Environment=%s=%s\n", s.Key, s.Value)
		}
	}
	return b.String()
}

// parseDropIn returns LimitNOFILE and Environment variables from a drop-in.
func parseDropIn(text string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok {
			continue
		}
		switch k {
		case "LimitNOFILE":
			out["RLIMIT_NOFILE"] = v
		case "Environment":
			if ek, ev, ok := strings.Cut(v, "="); ok {
				out[ek] = ev
			}
		}
	}
	return out
}
