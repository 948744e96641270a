// Package steer steers new TCP connections across edged's event loops with an
// SK_REUSEPORT program, and across NICs with an SK_LOOKUP program.
//
// It lives in the directory ebpf/ (import path github.com/edgedhq/edged/ebpf)
// but is named steer, so that it does not shadow cilium/ebpf, which its own
// files import as ebpf; importers name it explicitly:
//
//	import steer "github.com/edgedhq/edged/ebpf"
//
// Attach loads a program (written with cilium/ebpf's asm package, so no C
// compiler is needed) that picks, for every SYN, one listener of the loops'
// SO_REUSEPORT group by policy: "hash" (the flow hash), "cpu" (the loop pinned
// to the CPU that handled the SYN) or "least" (the loop with the fewest live
// connections, from a map the loops keep current with SetLive). "off" leaves
// the kernel's own reuseport hash. When BPF is not permitted (no CAP_BPF) or
// the OS is not Linux, Attach still succeeds in fallback mode, logs one line
// saying so, and the kernel's own hash applies.
//
// AttachLookup sends connections arriving on one NIC to one listener group
// (say, the public NIC to the client loops and the private NIC to the
// back-end group); each group is then steered across its loops by its own
// Attach.
//
// Missing entries: when a loop's listener is closed the kernel removes it
// from the socket map; a SYN the policy sends to that loop is counted as a
// miss and the reuseport program returns SK_PASS without a selection, so the
// kernel picks among the listeners still open (a closing loop never refuses
// connections the others can take). The lookup program instead drops a
// connection whose NIC group has no open listener left (fail closed: it
// must never reach another NIC's group through the normal lookup); traffic
// that matches no group, or a family the group's listeners cannot take,
// goes to the normal lookup.
//
// A group that is both steered across loops and a NIC group needs
// Config.SockMap: the kernel keeps a socket in a REUSEPORT_SOCKARRAY or in
// a SOCKMAP, never both, and SK_LOOKUP can only read a SOCKMAP.
//
// Lifecycle: call Attach after the listeners are listening and before the
// loops accept; call Close before closing the listeners. A Steering and a
// Lookup are safe for concurrent use. With a PinPath, the maps and programs
// are pinned on bpffs so that `edgectl steer status` (ReadStatus) can read
// them from another process; Close removes the pins.
package steer
