package tuning

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/edgedhq/edged/sysctl"
)

// Host is what a plan needs to know about the machine: its size and its
// NICs' queues and interrupts, read from files under Root ("/" for the live
// host, a fake tree under testdata in tests).
type Host struct {
	Root     string
	CPUs     int    // online CPUs (/sys/devices/system/cpu/online)
	MemBytes uint64 // MemTotal (/proc/meminfo)
	PageSize int    // KernelPageSize (/proc/self/smaps), else 4096
	NICs     []NIC  // physical NICs (those with a device link), by name
	THP      bool   // /sys/kernel/mm/transparent_hugepage/enabled exists
	// Systemd: /run/systemd/system is a directory, the test sd_booted(3)
	// makes; without it no drop-in is proposed.
	Systemd bool
}

// NIC is one physical network interface.
type NIC struct {
	Name     string
	Device   string // base name of /sys/class/net/NAME/device's target (virtio2, 0000:3b:00.0)
	RxQueues []int  // N of queues/rx-N, sorted
	TxQueues []int  // N of queues/tx-N, sorted
	RPS      bool   // rx-0/rps_cpus is readable (CONFIG_RPS)
	RFS      bool   // rx-0/rps_flow_cnt is readable
	XPS      bool   // tx-0/xps_cpus is readable (CONFIG_XPS and a multi-queue device)
	IRQs     []IRQ  // the queue interrupts, in /proc/interrupts order
}

// IRQ is one interrupt line from /proc/interrupts.
type IRQ struct {
	Num  int
	Name string // the action name, such as "eth0-TxRx-3" or "virtio2-input.0"
}

func (h Host) path(rel string) string { return filepath.Join(h.Root, filepath.FromSlash(rel)) }

// ReadHost reads the host description under root ("" means "/").
// It fails when the CPU count or memory size cannot be read; NICs, THP and
// the page size are optional (a host without them gets no such settings).
func ReadHost(root string) (Host, error) {
	if root == "" {
		root = "/"
	}
	h := Host{Root: root, PageSize: 4096}
	b, err := os.ReadFile(h.path("sys/devices/system/cpu/online"))
	if err != nil {
		return Host{}, fmt.Errorf("read host cpus: %w", err)
	}
	cpus, err := sysctl.ParseCPUList(string(b))
	if err != nil || len(cpus) == 0 {
		return Host{}, fmt.Errorf("read host cpus: %w: %q", ErrHost, strings.TrimSpace(string(b)))
	}
	h.CPUs = len(cpus)
	if h.MemBytes, err = memTotal(h.path("proc/meminfo")); err != nil {
		return Host{}, err
	}
	if ps, err := kernelPageSize(h.path("proc/self/smaps")); err == nil {
		h.PageSize = ps
	}
	_, err = os.Stat(h.path("sys/kernel/mm/transparent_hugepage/enabled"))
	h.THP = err == nil
	st, err := os.Stat(h.path("run/systemd/system"))
	h.Systemd = err == nil && st.IsDir()
	if h.NICs, err = readNICs(h); err != nil {
		return Host{}, err
	}
	return h, nil
}

func memTotal(p string) (uint64, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, fmt.Errorf("read host memory: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 3 && fields[0] == "MemTotal:" && fields[2] == "kB" {
			kb, err := strconv.ParseUint(fields[1], 10, 64)
			if err != nil {
				break
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("read host memory: %w: no MemTotal line in %s", ErrHost, p)
}

func kernelPageSize(p string) (int, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 3 && fields[0] == "KernelPageSize:" && fields[2] == "kB" {
			kb, err := strconv.Atoi(fields[1])
			if err != nil || kb <= 0 {
				break
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("read page size: %w", ErrHost)
}

var queueDir = regexp.MustCompile(`^(rx|tx)-([0-9]+)$`)

func readNICs(h Host) ([]NIC, error) {
	ents, err := os.ReadDir(h.path("sys/class/net"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read host nics: %w", err)
	}
	irqs, err := readInterrupts(h)
	if err != nil {
		return nil, err
	}
	var nics []NIC
	for _, e := range ents {
		base := h.path("sys/class/net/" + e.Name())
		dev, err := os.Stat(filepath.Join(base, "device"))
		if err != nil || !dev.IsDir() {
			continue // virtual: lo, veth, bridges, ifb
		}
		n := NIC{Name: e.Name()}
		if target, err := filepath.EvalSymlinks(filepath.Join(base, "device")); err == nil {
			n.Device = filepath.Base(target)
		}
		qs, err := os.ReadDir(filepath.Join(base, "queues"))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("read queues of %s: %w", n.Name, err)
		}
		for _, q := range qs {
			m := queueDir.FindStringSubmatch(q.Name())
			if m == nil {
				continue
			}
			num, _ := strconv.Atoi(m[2])
			if m[1] == "rx" {
				n.RxQueues = append(n.RxQueues, num)
			} else {
				n.TxQueues = append(n.TxQueues, num)
			}
		}
		slices.Sort(n.RxQueues)
		slices.Sort(n.TxQueues)
		// Read, not stat: sysfs lists xps_cpus on a single-queue device but
		// reading it fails with ENOENT (net/core/net-sysfs.c xps_cpus_show).
		readable := func(rel string) bool { _, err := os.ReadFile(filepath.Join(base, "queues", rel)); return err == nil }
		n.RPS, n.RFS, n.XPS = readable("rx-0/rps_cpus"), readable("rx-0/rps_flow_cnt"), readable("tx-0/xps_cpus")
		for _, irq := range irqs {
			if nicIRQ(n, irq.Name) {
				if _, err := os.Stat(h.path(fmt.Sprintf("proc/irq/%d/smp_affinity_list", irq.Num))); err == nil {
					n.IRQs = append(n.IRQs, irq)
				}
			}
		}
		nics = append(nics, n)
	}
	return nics, nil
}

// nicIRQ reports whether an interrupt's action name belongs to one of the
// NIC's queues. Drivers name them after the interface ("eth0-TxRx-3",
// "i40e-eth0-TxRx-3", "ens1f0-rx-0") or, for virtio, after the virtio device
// ("virtio2-input.0"); the per-device config/async/event vectors and the
// vector named just "eth0" (link state) carry no packets and keep their
// default affinity.
func nicIRQ(n NIC, name string) bool {
	for _, skip := range []string{"config", "async", "event"} {
		if strings.Contains(name, skip) {
			return false
		}
	}
	if name == n.Name {
		return false // ixgbe/i40e link and misc vector: no queue
	}
	tokens := strings.FieldsFunc(name, func(r rune) bool { return r == '-' || r == '@' || r == ':' })
	if slices.Contains(tokens, n.Name) {
		return true
	}
	return strings.HasPrefix(n.Device, "virtio") && strings.HasPrefix(name, n.Device+"-")
}

// readInterrupts parses /proc/interrupts: "N: count... chip hwirq-type name".
func readInterrupts(h Host) ([]IRQ, error) {
	b, err := os.ReadFile(h.path("proc/interrupts"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read interrupts: %w", err)
	}
	var out []IRQ
	for _, line := range strings.Split(string(b), "\n") {
		num, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		n, err := strconv.Atoi(num)
		if !ok || err != nil {
			continue // header, NMI, LOC and other named rows
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		out = append(out, IRQ{Num: n, Name: f[len(f)-1]})
	}
	return out, nil
}
