package main

import (
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/edgedhq/edged/internal/obs"
)

func init() {
	register(command{name: "knob", summary: "read and change a live server's runtime knobs (profiling rates, GC, log level, queue caps)", run: runKnob})
}

func knobHelp(ctx *env) {
	w := ctx.stdout
	fmt.Fprintf(w, "Usage: edgectl knob get [NAME] [--admin URL]\n")
	fmt.Fprintf(w, "       edgectl knob set NAME VALUE [--admin URL]\n\nVerbs:\n")
	fmt.Fprintf(w, "  get  print every knob with its value and meaning, or one knob's value (reads only)\n")
	fmt.Fprintf(w, "  set  change a knob; the server logs the old and the new value\n")
	fmt.Fprintf(w, "\nKnobs every server has: mutex_profile_fraction, block_profile_rate, gc_percent,\n")
	fmt.Fprintf(w, "memory_limit, log_level and alarm_<queue kind>; edged adds its own (edgectl knob get).\n")
	fmt.Fprintf(w, "Run edgectl knob VERB --help for its flags.\n")
}

func runKnob(ctx *env, args []string) error {
	if len(args) == 0 {
		knobHelp(ctx)
		return usagef("missing verb")
	}
	verb := args[0]
	var want int
	switch verb {
	case "-h", "-help", "--help", "help":
		knobHelp(ctx)
		return nil
	case "get":
		want = 1
	case "set":
		want = 2
	default:
		return usagef("unknown verb %q (have get, set)", verb)
	}
	var a adminFlags
	synopsis := "[NAME] [--admin URL]"
	if verb == "set" {
		synopsis = "NAME VALUE [--admin URL]"
	}
	fs := ctx.flags("knob "+verb, synopsis)
	a.add(fs)
	pos, err := parsePositional(ctx, fs, args[1:], want)
	if err != nil {
		return err
	}
	if verb == "set" && len(pos) != 2 {
		return usagef("knob set wants NAME VALUE")
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	switch {
	case verb == "set":
		resp, err := c.do("PUT", "/knobs/"+pos[0], strings.NewReader(pos[1]), 0)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var ch obs.KnobChange
		if err := decodeJSON(resp, &ch); err != nil {
			return err
		}
		fmt.Fprintf(ctx.stdout, "%s: %s -> %s\n", ch.Name, ch.Old, ch.New)
	case len(pos) == 1:
		var k obs.KnobValue
		if err := c.getJSON("/knobs/"+pos[0], &k); err != nil {
			return err
		}
		fmt.Fprintln(ctx.stdout, k.Value)
	default:
		var ks []obs.KnobValue
		if err := c.getJSON("/knobs", &ks); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(ctx.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "KNOB\tVALUE\tMEANING\n")
		for _, k := range ks {
			help := k.Help
			if k.ReadOnly {
				help += " (read-only)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", k.Name, k.Value, help)
		}
		tw.Flush()
	}
	return nil
}

// parsePositional takes up to max leading positional arguments (after the
// first, one that starts with "-" but names no flag is a value, so "knob set
// gc_percent -1" works), then parses the flags after them; positionals after the flags
// are accepted too while fewer than max were given.
func parsePositional(ctx *env, fs *flag.FlagSet, args []string, max int) ([]string, error) {
	var pos []string
	for len(args) > 0 && len(pos) < max && (len(pos) > 0 && !isFlag(fs, args[0]) || !strings.HasPrefix(args[0], "-")) {
		pos = append(pos, args[0])
		args = args[1:]
	}
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" {
			fs.SetOutput(ctx.stdout)
		}
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil, err
		}
		return nil, usageError{err: err, reported: true}
	}
	rest := fs.Args()
	if len(pos)+len(rest) > max {
		return nil, usagef("unexpected argument %q", rest[max-len(pos)])
	}
	return append(pos, rest...), nil
}

// isFlag reports whether arg is one of fs's flags (or a help flag).
func isFlag(fs *flag.FlagSet, arg string) bool {
	name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	return fs.Lookup(name) != nil || name == "h" || name == "help"
}
