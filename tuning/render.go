package tuning

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// ErrFormat: an export format this package does not write.
var ErrFormat = errors.New("unknown export format")

// Formats lists the export formats.
var Formats = []string{"json", "sysctl.d", "systemd"}

var marks = [...]string{Same: "=", Change: "~", Carried: "+", Invalid: "!"}

// maxCell bounds a table cell so a long mask or list keeps the table
// readable; the JSON export has the full value.
const maxCell = 40

func cell(s string) string {
	s = strings.ReplaceAll(s, "\t", " ")
	if len(s) > maxCell {
		return s[:maxCell-3] + "..."
	}
	return s
}

// Render writes the plan as a table (mark, key, current, proposed, reason),
// then each line's formula, the capacity estimate, warnings and errors.
// With changesOnly it lists only lines that differ (the diff view).
func (p *Plan) Render(w io.Writer, changesOnly bool) error {
	pr := p.Profile
	fmt.Fprintf(w, "Profile %s: %s\n", pr.Name, pr.Summary)
	fmt.Fprintf(w, "Sized for %d CPUs, %s, %d connections; host %s has %d CPUs, %s, %d NIC(s)\n\n",
		pr.Sizing.CPUs, human(pr.Sizing.MemBytes), pr.Sizing.Conns, p.Host.Root, p.Host.CPUs, human(p.Host.MemBytes), len(p.Host.NICs))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\tKEY\tCURRENT\tPROPOSED\tREASON")
	var shown []Line
	for _, l := range p.Lines {
		if changesOnly && l.Status == Same {
			continue
		}
		if changesOnly && l.Status == Carried && l.Current == l.Value {
			continue
		}
		shown = append(shown, l)
		proposed := l.Value
		if l.Class == ClassSystemd {
			proposed = fmt.Sprintf("(%d lines)", strings.Count(l.Value, "\n"))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", marks[l.Status], l.Key, cell(l.Current), cell(proposed), l.Reason)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("render plan: %w", err)
	}
	fmt.Fprintln(w, "\n(= same, ~ change, + carried by the drop-in, ! cannot apply)")
	if !changesOnly {
		fmt.Fprintln(w, "\nFormulas:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, l := range shown {
			fmt.Fprintf(tw, "  %s\t%s\n", l.Key, l.Formula)
		}
		if err := tw.Flush(); err != nil {
			return fmt.Errorf("render plan: %w", err)
		}
		p.Capacity.render(w)
	}
	same, change, invalid := p.Counts()
	fmt.Fprintf(w, "\n%d to change, %d already set, %d cannot apply\n", change, same, invalid)
	for _, warn := range pr.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	for _, l := range p.Lines {
		if l.Err != nil {
			fmt.Fprintf(w, "error: %v\n", l.Err)
		}
	}
	return nil
}

func (c Capacity) render(w io.Writer) {
	per := c.KernelBytes + c.EdgedBytes
	fmt.Fprintf(w, "\nCapacity with this profile on this host:\n")
	if c.TLSShare > 0 {
		fmt.Fprintf(w, "  per connection: %d B kernel (slab: tcp_sock, socket inode, file, dentry, epitem) + %d B edged (design budget %d B + TLS %d B x %.0f%% of connections) = %d B\n",
			c.KernelBytes, c.EdgedBytes, c.EdgedBytes-c.TLSBytes, TLSConnBytes, 100*c.TLSShare, per)
	} else {
		fmt.Fprintf(w, "  per connection: %d B kernel (slab: tcp_sock, socket inode, file, dentry, epitem) + %d B edged (design budget) = %d B\n",
			c.KernelBytes, c.EdgedBytes, per)
	}
	fmt.Fprintf(w, "  by memory: (%s RAM - %s OS reserve - %s TCP buffers at tcp_mem pressure) / %d B = %d connections\n",
		human(c.MemBytes), human(uint64(c.ReserveBytes)), human(uint64(c.BufferBytes)), per, c.ByMemory)
	fmt.Fprintf(w, "  by files: min(RLIMIT_NOFILE %d, fs.nr_open %d, fs.file-max %d) - %d reserved = %d connections\n",
		c.NoFile, c.NrOpen, c.FileMax, reservedFDs, c.ByFiles)
	verdict := "fits"
	if c.Fits < c.Target {
		verdict = "DOES NOT FIT"
	}
	fmt.Fprintf(w, "  binds first: %s at %d connections; target %d %s\n", c.Binding, c.Fits, c.Target, verdict)
}

// Export writes the profile in format: "sysctl.d" (a file for
// /etc/sysctl.d), "systemd" (the edged.service drop-in) or "json" (every
// setting with its reason and formula, plus the capacity estimate).
// It returns ErrFormat for any other name.
func Export(w io.Writer, p Profile, h Host, format string) error {
	switch format {
	case "sysctl.d":
		fmt.Fprintf(w, "# /etc/sysctl.d/60-edged.conf: edgectl tune profile %s (%d connections)\n", p.Name, p.Sizing.Conns)
		fmt.Fprintf(w, "# %s\n", p.Summary)
		others := 0
		for _, s := range p.Settings {
			if s.Class != ClassSysctl {
				others++
				continue
			}
			fmt.Fprintf(w, "\n# %s\n# formula: %s\n%s = %s\n", s.Reason, s.Formula, s.Key, s.Value)
		}
		fmt.Fprintf(w, "\n# %d further settings (sysfs, IRQ affinity, systemd drop-in) are not sysctls:\n# see edgectl tune export --format json, or apply them with edgectl tune apply.\n", others)
	case "systemd":
		s, ok := p.Setting(DropInPath)
		if !ok {
			return fmt.Errorf("export profile: %w: this host runs no systemd (no /run/systemd/system), so there is no drop-in", ErrFormat)
		}
		fmt.Fprintf(w, "# %s (profile %s)\n%s", DropInPath, p.Name, s.Value)
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Profile
			Capacity Capacity `json:"capacity"`
		}{p, EstimateCapacity(p, h)})
	default:
		return fmt.Errorf("export profile: %w %q (have %s)", ErrFormat, format, strings.Join(Formats, ", "))
	}
	return nil
}
