package steer

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// DefaultPinRoot is where edged pins its steering objects by convention:
// one directory per listener group or lookup below it.
const DefaultPinRoot = "/sys/fs/bpf/edged"

// Status is what ReadStatus finds under a pin root.
type Status struct {
	Root    string
	Groups  []GroupStatus
	Lookups []LookupStatus
}

// ProgramInfo names a loaded program.
type ProgramInfo struct {
	ID   uint32
	Name string
	Type string
	Tag  string
}

// GroupStatus is one pinned reuseport steering (one Attach).
type GroupStatus struct {
	Name      string // the pin directory's base name
	Program   ProgramInfo
	Policy    Policy
	SocketMap string // the map kind holding the listeners
	Port      int
	PID       int // the process that attached it
	Loops     []LoopStatus
	Misses    uint64
}

// LoopStatus is one loop of a GroupStatus.
type LoopStatus struct {
	Loop    int
	CPU     int
	Accepts uint64 // SYNs steered to the loop
	Live    uint32 // as the loop last reported
	Pending uint32 // steered since the loop last reported (least only)
}

// LookupStatus is one pinned NIC lookup (one AttachLookup).
type LookupStatus struct {
	Name    string
	Program ProgramInfo
	PID     int
	Groups  []GroupStats
	Dropped uint64
}

// Render writes st as the text `edgectl steer status` prints.
func Render(w io.Writer, st Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "pin root %s: %d listener groups, %d NIC lookups\n", st.Root, len(st.Groups), len(st.Lookups))
	for _, g := range st.Groups {
		fmt.Fprintf(tw, "\ngroup %s: policy %s, port %d, pid %d, %s\n", g.Name, g.Policy, g.Port, g.PID, g.SocketMap)
		fmt.Fprintf(tw, "program %s\n", g.Program)
		fmt.Fprintln(tw, "LOOP\tCPU\tACCEPTS\tLIVE\tPENDING")
		var acc uint64
		var live uint64
		for _, l := range g.Loops {
			fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\n", l.Loop, l.CPU, l.Accepts, l.Live, l.Pending)
			acc += l.Accepts
			live += uint64(l.Live)
		}
		fmt.Fprintf(tw, "total\t\t%d\t%d\t\n", acc, live)
		fmt.Fprintf(tw, "missed (listener gone, kernel picked): %d\n", g.Misses)
	}
	for _, l := range st.Lookups {
		fmt.Fprintf(tw, "\nlookup %s: pid %d\n", l.Name, l.PID)
		fmt.Fprintf(tw, "program %s\n", l.Program)
		fmt.Fprintln(tw, "GROUP\tIFINDEX\tPORT\tASSIGNED")
		for _, g := range l.Groups {
			port := fmt.Sprint(g.Port)
			if g.Port == 0 {
				port = "any"
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%d\n", g.Name, g.Ifindex, port, g.Assigned)
		}
		fmt.Fprintf(tw, "dropped (group without listener): %d\n", l.Dropped)
	}
	return tw.Flush()
}

// String formats the program as "NAME (TYPE, id ID, tag TAG)".
func (p ProgramInfo) String() string {
	return fmt.Sprintf("%s (%s, id %d, tag %s)", p.Name, p.Type, p.ID, p.Tag)
}

// StatusReport reads the pins under root (DefaultPinRoot when empty) and
// renders them to w: the body of `edgectl steer status`.
func StatusReport(w io.Writer, root string) error {
	st, err := ReadStatus(root)
	if err != nil {
		return err
	}
	return Render(w, st)
}
