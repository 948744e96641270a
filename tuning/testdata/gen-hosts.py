#!/usr/bin/env python3
"""Writes the fake hosts under testdata/hosts (run from tuning/testdata).

Each host is a minimal /proc and /sys tree: what tuning.ReadHost and the
plan read. Values are the kernel's defaults for a host of that size
(Linux 6.x). Re-run after changing it; the golden plans depend on it.
"""
import os, shutil

def w(root, rel, content, mode=0o644):
    p = os.path.join(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "w") as f:
        f.write(content)
    os.chmod(p, mode)

def link(root, rel, target):
    p = os.path.join(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    os.symlink(target, p)

SYSCTLS = {
    "fs/nr_open": "1048576",
    "net/core/somaxconn": "4096",
    "net/core/netdev_max_backlog": "1000",
    "net/core/rps_sock_flow_entries": "0",
    "net/ipv4/tcp_max_syn_backlog": "2048",
    "net/ipv4/tcp_rmem": "4096\t131072\t6291456",
    "net/ipv4/tcp_wmem": "4096\t16384\t4194304",
    "net/ipv4/ip_local_port_range": "32768\t60999",
    "net/ipv4/tcp_tw_reuse": "2",
    "net/ipv4/tcp_syncookies": "1",
    "net/ipv4/tcp_fin_timeout": "60",
    "net/ipv4/tcp_keepalive_time": "7200",
    "net/ipv4/tcp_keepalive_intvl": "75",
    "net/ipv4/tcp_keepalive_probes": "9",
}

def host(name, cpus, mem_kb, tcp_mem, nics, dropin=None):
    """file-max: the kernel's default, about RAM/10KiB (fs/file_table.c)."""
    root = os.path.join("hosts", name)
    shutil.rmtree(root, ignore_errors=True)
    w(root, "sys/devices/system/cpu/online", "0-%d\n" % (cpus - 1))
    w(root, "proc/meminfo", "MemTotal:       %d kB\nMemFree:        %d kB\n" % (mem_kb, mem_kb - 1000000))
    w(root, "proc/self/smaps", "55d4c8a00000-55d4c8a22000 r--p 00000000 fd:01 1 /usr/bin/edgectl\nSize:                136 kB\nKernelPageSize:        4 kB\nMMUPageSize:           4 kB\n")
    for k, v in SYSCTLS.items():
        w(root, "proc/sys/" + k, v + "\n")
    w(root, "proc/sys/fs/file-max", "%d\n" % (mem_kb // 10 - 3000))
    w(root, "proc/sys/net/ipv4/tcp_mem", "\t".join(map(str, tcp_mem)) + "\n")
    w(root, "proc/sys/net/core/rmem_default", "212992\n", 0o444)
    w(root, "sys/kernel/mm/transparent_hugepage/enabled", "[always] madvise never\n")
    w(root, "sys/class/net/lo/queues/rx-0/rps_cpus", "0\n")
    header = "           " + "".join("CPU%-8d" % c for c in range(cpus)) + "\n"
    lines = ["  0:" + "".join("%10d " % 0 for _ in range(cpus)) + " IO-APIC    2-edge      timer\n"]
    irq = 40
    for nic in nics:
        dev = nic["device"]
        # Files in every directory: git does not keep empty ones.
        w(root, "sys/devices/pci0000:00/%s/vendor" % dev, "0x8086\n")
        link(root, "sys/class/net/%s/device" % nic["name"], "../../../devices/pci0000:00/" + dev)
        for q in range(nic["queues"]):
            w(root, "sys/class/net/%s/queues/rx-%d/rps_cpus" % (nic["name"], q), "0" * max(1, cpus // 4) + "\n")
            w(root, "sys/class/net/%s/queues/rx-%d/rps_flow_cnt" % (nic["name"], q), "0\n")
            if nic["xps"]:
                w(root, "sys/class/net/%s/queues/tx-%d/xps_cpus" % (nic["name"], q), "0" * max(1, cpus // 4) + "\n")
            w(root, "sys/class/net/%s/queues/tx-%d/tx_maxrate" % (nic["name"], q), "0\n")
        for label in nic["irqs"]:
            lines.append("%3d:" % irq + "".join("%10d " % 7 for _ in range(cpus)) + " PCI-MSIX-%s  %d-edge      %s\n" % (dev, irq, label))
            w(root, "proc/irq/%d/smp_affinity_list" % irq, "0-%d\n" % (cpus - 1))
            irq += 1
    lines.append("NMI:" + "".join("%10d " % 0 for _ in range(cpus)) + "  Non-maskable interrupts\n")
    w(root, "proc/interrupts", header + "".join(lines))
    # systemd's runtime directory (sd_booted(3)); a file in it, as git does
    # not keep empty directories.
    w(root, "run/systemd/system/.keep", "")
    if dropin:
        w(root, "etc/systemd/system/edged.service.d/50-edgectl-tune.conf", dropin)

# The seed host: 24 CPUs, 100 GiB, two 8-queue NICs (ixgbe-style names).
host("24c-100g", 24, 100 * 1024 * 1024, (2457600, 3276800, 4915200), [
    {"name": "eth0", "device": "0000:3b:00.0", "queues": 8, "xps": True,
     "irqs": ["eth0"] + ["eth0-TxRx-%d" % q for q in range(8)]},
    {"name": "eth1", "device": "0000:3b:00.1", "queues": 8, "xps": True,
     "irqs": ["eth1"] + ["eth1-TxRx-%d" % q for q in range(8)]},
])
# A small virtio box, as the dev VMs: one single-queue NIC without XPS, and
# a drop-in left by an earlier run.
host("dev-2c", 2, 4 * 1024 * 1024, (47898, 63867, 95796), [
    {"name": "eth0", "device": "virtio2", "queues": 1, "xps": False,
     "irqs": ["virtio2-config", "virtio2-input.0", "virtio2-output.0"]},
], dropin="[Service]\nLimitNOFILE=65536\nEnvironment=GOGC=100\n")
