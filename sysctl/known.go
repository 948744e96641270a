package sysctl

import (
	"math"
	"path"
	"strings"
)

const intMax = math.MaxInt32

// known holds the specs of the sysctl keys this project sets, by dotted name.
// Bounds follow the kernel's own proc handlers (extra1/extra2 in the named
// file) or, where the kernel accepts nonsense, the documented useful range
// (Documentation/networking/ip-sysctl.rst, Documentation/admin-guide/sysctl/).
var known = map[string]Spec{
	"fs.file-max": {Min: 1024, Max: math.MaxInt64, Source: "fs/file_table.c (proc_doulongvec_minmax)"},
	// sysctl_nr_open_min = BITS_PER_LONG, sysctl_nr_open_max =
	// min(INT_MAX, ~0/sizeof(void*)) & -BITS_PER_LONG (fs/file.c).
	"fs.nr_open":                     {Min: 64, Max: 2147483584, Source: "fs/file.c sysctl_nr_open_min/max"},
	"net.core.somaxconn":             {Min: 0, Max: intMax, Source: "net/core/sysctl_net_core.c (extra1 = SYSCTL_ZERO)"},
	"net.core.netdev_max_backlog":    {Min: 1, Max: intMax, Source: "net/core/sysctl_net_core.c"},
	"net.core.rps_sock_flow_entries": {Min: 0, Max: 1 << 29, Source: "net/core/sysctl_net_core.c rps_sock_flow_sysctl (rounds up to a power of two)"},
	"net.ipv4.tcp_max_syn_backlog":   {Min: 128, Max: intMax, Source: "ip-sysctl.rst (kernel floor 128)"},
	"net.ipv4.tcp_mem":               {Fields: 3, Min: 1, Max: math.MaxInt64, Ordered: true, Source: "ip-sysctl.rst tcp_mem (pages: min pressure max)"},
	"net.ipv4.tcp_rmem":              {Fields: 3, Min: 1, Max: intMax, Ordered: true, Source: "net/ipv4/sysctl_net_ipv4.c (extra1 = SYSCTL_ONE)"},
	"net.ipv4.tcp_wmem":              {Fields: 3, Min: 1, Max: intMax, Ordered: true, Source: "net/ipv4/sysctl_net_ipv4.c (extra1 = SYSCTL_ONE)"},
	"net.ipv4.ip_local_port_range":   {Fields: 2, Min: 1, Max: 65535, Ordered: true, Source: "net/ipv4/sysctl_net_ipv4.c ipv4_local_port_range"},
	"net.ipv4.tcp_tw_reuse":          {Min: 0, Max: 2, Source: "net/ipv4/sysctl_net_ipv4.c (extra2 = SYSCTL_TWO)"},
	"net.ipv4.tcp_syncookies":        {Min: 0, Max: 2, Source: "ip-sysctl.rst tcp_syncookies"},
	// The kernel accepts any tcp_fin_timeout (checked on Linux 6.18), but a
	// FIN-WAIT-2 longer than the default 60 s only holds memory.
	"net.ipv4.tcp_fin_timeout": {Min: 1, Max: 600, Source: "ip-sysctl.rst tcp_fin_timeout"},
	// MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL, MAX_TCP_KEEPCNT (include/net/tcp.h)
	// bound the per-socket options; the sysctls take the same range.
	"net.ipv4.tcp_keepalive_time":   {Min: 1, Max: 32767, Source: "include/net/tcp.h MAX_TCP_KEEPIDLE"},
	"net.ipv4.tcp_keepalive_intvl":  {Min: 1, Max: 32767, Source: "include/net/tcp.h MAX_TCP_KEEPINTVL"},
	"net.ipv4.tcp_keepalive_probes": {Min: 1, Max: 127, Source: "include/net/tcp.h MAX_TCP_KEEPCNT"},
}

// knownPaths holds specs for slash-form keys by path.Match pattern, relative
// to the FS root (/sys, /proc or /etc as the caller chose) or to the host
// root with that first component.
var knownPaths = []struct {
	pattern string
	spec    Spec
}{
	{"class/net/*/queues/rx-*/rps_cpus", Spec{Type: CPUMask, Source: "Documentation/networking/scaling.rst RPS"}},
	{"class/net/*/queues/rx-*/rps_flow_cnt", Spec{Min: 0, Max: 1 << 29, Source: "Documentation/networking/scaling.rst RFS"}},
	{"class/net/*/queues/tx-*/xps_cpus", Spec{Type: CPUMask, Source: "Documentation/networking/scaling.rst XPS"}},
	{"kernel/mm/transparent_hugepage/enabled", Spec{Type: Choice, Choices: []string{"always", "madvise", "never"}, Source: "Documentation/admin-guide/mm/transhuge.rst"}},
	{"kernel/mm/transparent_hugepage/defrag", Spec{Type: Choice, Choices: []string{"always", "defer", "defer+madvise", "madvise", "never"}, Source: "Documentation/admin-guide/mm/transhuge.rst"}},
	{"irq/*/smp_affinity_list", Spec{Type: CPUList, Max: maxMaskCPUs - 1, Source: "Documentation/core-api/irq/irq-affinity.rst"}},
	{"systemd/system/*.d/*.conf", Spec{Type: Text, Create: true, Source: "systemd.unit(5) drop-in"}},
}

// Lookup returns the spec this package knows for key (dotted or slash form).
func Lookup(key string) (Spec, bool) {
	if s, ok := known[key]; ok {
		return s, true
	}
	if !strings.Contains(key, "/") {
		return Spec{}, false
	}
	if s, ok := known[strings.ReplaceAll(key, "/", ".")]; ok {
		return s, true
	}
	// A key may also be relative to the host root ("sys/class/net/...",
	// "proc/irq/...", "etc/systemd/...").
	rel := key
	if first, rest, ok := strings.Cut(key, "/"); ok && (first == "sys" || first == "proc" || first == "etc") {
		rel = rest
	}
	for _, k := range knownPaths {
		for _, cand := range []string{key, rel} {
			if ok, _ := path.Match(k.pattern, cand); ok {
				return k.spec, true
			}
		}
	}
	return Spec{}, false
}

// infer builds a spec for a key this package does not know from its current
// text: as many integer fields as it has now, unbounded; anything else is
// kept as Text.
func infer(current string) Spec {
	f := strings.Fields(current)
	if len(f) == 0 {
		return Spec{Type: Text}
	}
	for _, x := range f {
		if strings.TrimLeft(x, "-0123456789") != "" {
			return Spec{Type: Text}
		}
	}
	return Spec{Fields: len(f)}
}
