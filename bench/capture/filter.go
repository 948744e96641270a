package capture

import (
	"fmt"

	"golang.org/x/net/bpf"
)

// Frame layout the filter reads (Ethernet, the link type of both ARPHRD_ETHER
// and ARPHRD_LOOPBACK packet sockets).
const (
	ethTypeOff     = 12 // EtherType
	ethHdrLen      = 14
	ip4ProtoOff    = ethHdrLen + 9  // IPv4 protocol
	ip4FragOff     = ethHdrLen + 6  // IPv4 flags + fragment offset
	ip6NextOff     = ethHdrLen + 6  // IPv6 next header (no extension headers)
	ip6PortsOff    = ethHdrLen + 40 // TCP ports after the fixed IPv6 header
	packetOutgoing = 4              // PACKET_OUTGOING, linux/if_packet.h
)

// op is one filter instruction with symbolic jump targets.
type op struct {
	ins           bpf.Instruction
	label         string // this instruction's label
	jtrue, jfalse string // JumpIf targets ("" = next instruction)
}

// filterProgram returns the classic BPF program that keeps IPv4 and IPv6 TCP
// segments from or to port (IPv4 fragments after the first and IPv6 with
// extension headers are dropped) and, when dropOutgoing is set, drops packets
// of type PACKET_OUTGOING: on loopback every packet is seen once leaving and
// once arriving (packet(7)).
func filterProgram(port int, dropOutgoing bool) ([]bpf.RawInstruction, error) {
	p := uint32(port)
	var prog []op
	if dropOutgoing {
		prog = append(prog,
			op{ins: bpf.LoadExtension{Num: bpf.ExtType}},
			op{ins: bpf.JumpIf{Cond: bpf.JumpEqual, Val: packetOutgoing}, jtrue: "drop"},
		)
	}
	prog = append(prog,
		op{ins: bpf.LoadAbsolute{Off: ethTypeOff, Size: 2}},
		op{ins: bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x0800}, jfalse: "v6"},
		op{ins: bpf.LoadAbsolute{Off: ip4ProtoOff, Size: 1}},
		op{ins: bpf.JumpIf{Cond: bpf.JumpEqual, Val: 6}, jfalse: "drop"},
		op{ins: bpf.LoadAbsolute{Off: ip4FragOff, Size: 2}},
		op{ins: bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x1fff}, jtrue: "drop"},
		op{ins: bpf.LoadMemShift{Off: ethHdrLen}},
		op{ins: bpf.LoadIndirect{Off: ethHdrLen, Size: 2}},
		op{ins: bpf.JumpIf{Cond: bpf.JumpEqual, Val: p}, jtrue: "accept"},
		op{ins: bpf.LoadIndirect{Off: ethHdrLen + 2, Size: 2}},
		op{ins: bpf.JumpIf{Cond: bpf.JumpEqual, Val: p}, jtrue: "accept", jfalse: "drop"},
		op{label: "v6", ins: bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x86dd}, jfalse: "drop"},
		op{ins: bpf.LoadAbsolute{Off: ip6NextOff, Size: 1}},
		op{ins: bpf.JumpIf{Cond: bpf.JumpEqual, Val: 6}, jfalse: "drop"},
		op{ins: bpf.LoadAbsolute{Off: ip6PortsOff, Size: 2}},
		op{ins: bpf.JumpIf{Cond: bpf.JumpEqual, Val: p}, jtrue: "accept"},
		op{ins: bpf.LoadAbsolute{Off: ip6PortsOff + 2, Size: 2}},
		op{ins: bpf.JumpIf{Cond: bpf.JumpEqual, Val: p}, jtrue: "accept", jfalse: "drop"},
		op{label: "accept", ins: bpf.RetConstant{Val: Snaplen}},
		op{label: "drop", ins: bpf.RetConstant{Val: 0}},
	)
	at := map[string]int{}
	for i, o := range prog {
		if o.label != "" {
			at[o.label] = i
		}
	}
	skip := func(i int, label string) uint8 {
		if label == "" {
			return 0
		}
		t, ok := at[label]
		if !ok || t <= i {
			panic("capture: filter jumps to unknown or earlier label " + label)
		}
		return uint8(t - i - 1)
	}
	ins := make([]bpf.Instruction, len(prog))
	for i, o := range prog {
		if j, ok := o.ins.(bpf.JumpIf); ok {
			j.SkipTrue, j.SkipFalse = skip(i, o.jtrue), skip(i, o.jfalse)
			o.ins = j
		}
		ins[i] = o.ins
	}
	raw, err := bpf.Assemble(ins)
	if err != nil {
		return nil, fmt.Errorf("assemble filter: %w", err)
	}
	return raw, nil
}
