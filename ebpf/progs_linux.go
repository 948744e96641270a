package steer

import (
	"fmt"

	"github.com/cilium/ebpf/asm"
)

// Offsets into the program contexts, from include/uapi/linux/bpf.h (stable
// UAPI; checked against Linux 6.18).
const (
	reuseportHashOff = 32 // struct sk_reuseport_md: __u32 hash

	lookupFamilyOff   = 8  // struct bpf_sk_lookup: __u32 family
	lookupProtocolOff = 12 // __u32 protocol
	lookupPortOff     = 60 // __u32 local_port (host byte order)
	lookupIfindexOff  = 64 // __u32 ingress_ifindex

	skDrop = 0 // SK_DROP
	skPass = 1 // SK_PASS

	ipprotoTCP = 6
)

// cpuLoopSlots is how many loops one CPU's entry in the cpu map can list:
// struct { count u32; loops [15]u32 } is one 64-byte cache line.
const cpuLoopSlots = 15

// reuseportMaps are the maps the SK_REUSEPORT program uses.
type reuseportMaps struct {
	sockets  int // REUSEPORT_SOCKARRAY, key loop
	accepts  int // PERCPU_ARRAY u64, key loop; key n counts misses
	live     int // ARRAY, one value: [MaxLoops]u32 live connections
	cpuLoops int // ARRAY keyed by CPU: {count, loops[15]}; PolicyCPU only
}

// reuseportProgram returns the SK_REUSEPORT program for policy over n loops.
//
// Registers: r6 ctx, r7 flow hash, r8 chosen loop, r9 (least) the load
// table. The chosen loop's socket
// is selected with bpf_sk_select_reuseport. A missing entry (that loop's
// listener was closed, so the kernel removed it from the array) is counted
// in accepts[n] and the program returns SK_PASS without a selection, so the
// kernel falls back to its own hash pick among the listeners still open: a
// closing loop must never refuse connections the others could take.
func reuseportProgram(p Policy, n int, m reuseportMaps) (asm.Instructions, error) {
	if n < 1 || n > MaxLoops {
		return nil, fmt.Errorf("build program: %w: %d loops", ErrBadConfig, n)
	}
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R7, asm.R6, reuseportHashOff, asm.Word),
	}
	hashPick := asm.Instructions{
		asm.Mov.Reg32(asm.R8, asm.R7).WithSymbol("hash"),
		asm.Mod.Imm32(asm.R8, int32(n)),
	}
	switch p {
	case PolicyHash:
		insns = append(insns, hashPick...)
	case PolicyCPU:
		insns = append(insns,
			asm.FnGetSmpProcessorId.Call(),
			asm.StoreMem(asm.RFP, -4, asm.R0, asm.Word),
			asm.LoadMapPtr(asm.R1, m.cpuLoops),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "hash"),
			asm.LoadMem(asm.R1, asm.R0, 0, asm.Word), // count
			asm.JEq.Imm(asm.R1, 0, "hash"),
			asm.JGT.Imm(asm.R1, cpuLoopSlots, "hash"),
			asm.Mov.Reg32(asm.R2, asm.R7),
			asm.Mod.Reg32(asm.R2, asm.R1),
			asm.JGE.Imm(asm.R2, cpuLoopSlots, "hash"), // bound for the verifier
			asm.LSh.Imm(asm.R2, 2),
			asm.Add.Reg(asm.R0, asm.R2),
			asm.LoadMem(asm.R8, asm.R0, 4, asm.Word),
			asm.JGE.Imm(asm.R8, int32(n), "hash"), // stale entry: hash instead
			asm.Ja.Label("select"),
		)
		insns = append(insns, hashPick...)
	case PolicyLeast:
		// load(i) = Live[i] + (Steered[i] - Snap[i]) (see liveArray);
		// score(i) = load(i)<<8 | ((i + n - hash%n) % n): the lowest load
		// wins, ties go to the first loop at or after hash%n, so SYNs
		// that meet equal loads still spread by flow. r5 is the best
		// score, r9 keeps the map value for the Steered update.
		insns = append(insns,
			asm.Mov.Imm(asm.R9, 0),
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.LoadMapPtr(asm.R1, m.live),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "hash"),
			asm.Mov.Reg32(asm.R4, asm.R7),
			asm.Mod.Imm32(asm.R4, int32(n)), // start
			asm.LoadImm(asm.R5, -1, asm.DWord),
			asm.Mov.Imm(asm.R8, 0),
		)
		for i := range n {
			next := fmt.Sprintf("least_%d", i+1)
			if i == n-1 {
				next = "least_done"
			}
			first := asm.LoadMem(asm.R1, asm.R0, int16(liveOff+4*i), asm.Word)
			if i > 0 {
				first = first.WithSymbol(fmt.Sprintf("least_%d", i))
			}
			pos := fmt.Sprintf("least_pos_%d", i)
			insns = append(insns,
				first,
				asm.LoadMem(asm.R2, asm.R0, int16(steeredOff+4*i), asm.Word),
				asm.LoadMem(asm.R3, asm.R0, int16(snapOff+4*i), asm.Word),
				asm.Sub.Reg32(asm.R2, asm.R3),
				asm.JSGE.Imm32(asm.R2, 0, pos), // a racing SetLive: count 0
				asm.Mov.Imm32(asm.R2, 0),
				asm.Add.Reg(asm.R1, asm.R2).WithSymbol(pos),
				asm.LSh.Imm(asm.R1, 8),
				asm.Mov.Imm32(asm.R3, int32(i+n)),
				asm.Sub.Reg32(asm.R3, asm.R4),
				asm.Mod.Imm32(asm.R3, int32(n)),
				asm.Or.Reg(asm.R1, asm.R3),
				asm.JGE.Reg(asm.R1, asm.R5, next),
				asm.Mov.Reg(asm.R5, asm.R1),
				asm.Mov.Imm(asm.R8, int32(i)),
			)
		}
		insns = append(insns,
			asm.Mov.Reg(asm.R9, asm.R0).WithSymbol("least_done"),
			asm.Ja.Label("select"),
		)
		insns = append(insns, hashPick...)
	default:
		return nil, fmt.Errorf("build program: %w: policy %v has no program", ErrBadConfig, p)
	}
	insns = append(insns,
		// select: key = r8; bpf_sk_select_reuseport(ctx, sockets, &key, 0)
		asm.StoreMem(asm.RFP, -4, asm.R8, asm.Word).WithSymbol("select"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, m.sockets),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -4),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnSkSelectReuseport.Call(),
		asm.JNE.Imm(asm.R0, 0, "miss"),
	)
	if p == PolicyLeast {
		// Steered[key]++ (shared by all CPUs, so atomic), unless the
		// scan never ran (r9 == 0: the hash path).
		insns = append(insns,
			asm.JEq.Imm(asm.R9, 0, "count"),
			asm.Mov.Reg(asm.R2, asm.R8),
			asm.And.Imm(asm.R2, MaxLoops-1),
			asm.LSh.Imm(asm.R2, 2),
			asm.Add.Reg(asm.R9, asm.R2),
			asm.Mov.Imm(asm.R1, 1),
			asm.AddAtomic.Mem(asm.R9, asm.R1, asm.Word, steeredOff),
		)
	}
	insns = append(insns,
		asm.Ja.Label("count"),
		asm.StoreImm(asm.RFP, -4, int64(n), asm.Word).WithSymbol("miss"), // miss slot
		// count: accepts[key]++ (per-CPU, so a plain add is exact)
		asm.LoadMapPtr(asm.R1, m.accepts).WithSymbol("count"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, skPass).WithSymbol("pass"),
		asm.Return(),
	)
	return insns, nil
}
