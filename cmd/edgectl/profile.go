package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/edgedhq/edged/internal/obs"
)

func init() {
	register(command{name: "profile", summary: "take a cpu, heap, mutex, block, goroutine or trace profile from a live server", run: runProfile})
}

// profileKinds maps a kind to its /debug/pprof path, whether it takes
// --seconds, and its knob (a rate that must be on for samples to exist).
type profileKind struct {
	name, path, knob string
	seconds          int // default --seconds; -1: not accepted
	help             string
}

var profileKinds = []profileKind{
	{"cpu", "profile", "", 30, "CPU samples over --seconds (default 30)"},
	{"heap", "heap", "", 0, "live heap (with --seconds N: allocations during N s)"},
	{"mutex", "mutex", "mutex_profile_fraction", 0, "mutex contention (with --seconds N: during N s)"},
	{"block", "block", "block_profile_rate", 0, "blocking on channels and locks (with --seconds N: during N s)"},
	{"goroutine", "goroutine", "", -1, "every goroutine's stack"},
	{"trace", "trace", "", 5, "execution trace over --seconds (default 5); view with go tool trace"},
}

func profileHelp(ctx *env) {
	w := ctx.stdout
	fmt.Fprintf(w, "Usage: edgectl profile KIND [--seconds N] [-o FILE] [--admin URL]\n\nKinds:\n")
	for _, k := range profileKinds {
		fmt.Fprintf(w, "  %-9s  %s\n", k.name, k.help)
	}
	fmt.Fprintf(w, "\nThe profile is written to FILE (default KIND.pprof, trace.out for trace; - for stdout)\n")
	fmt.Fprintf(w, "for go tool pprof. mutex and block need their knob on first, e.g.\n")
	fmt.Fprintf(w, "edgectl knob set mutex_profile_fraction 5. Run edgectl profile KIND --help for its flags.\n")
}

func runProfile(ctx *env, args []string) error {
	if len(args) == 0 {
		profileHelp(ctx)
		return usagef("missing kind")
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		profileHelp(ctx)
		return nil
	}
	i := slices.IndexFunc(profileKinds, func(k profileKind) bool { return k.name == args[0] })
	if i < 0 {
		return usagef("unknown kind %q (have cpu, heap, mutex, block, goroutine, trace)", args[0])
	}
	k := profileKinds[i]
	var a adminFlags
	fs := ctx.flags("profile "+k.name, "[--seconds N] [-o FILE] [--admin URL]")
	a.add(fs)
	seconds := fs.Int("seconds", max(k.seconds, 0), "profile `N` seconds (0: "+zeroSeconds(k.name)+")")
	defOut := k.name + ".pprof"
	if k.name == "trace" {
		defOut = "trace.out"
	}
	out := fs.String("o", defOut, "write the profile to `FILE` (- for stdout)")
	if err := ctx.parse(fs, args[1:]); err != nil {
		return err
	}
	switch {
	case *seconds < 0:
		return usagef("--seconds must be >= 0")
	case k.seconds < 0 && *seconds != 0:
		return usagef("%s takes no --seconds: it is a snapshot", k.name)
	case (k.name == "cpu" || k.name == "trace") && *seconds == 0:
		return usagef("%s needs --seconds > 0", k.name)
	case *out == "":
		return usagef("-o must name a file")
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	if k.knob != "" {
		var kv obs.KnobValue
		if err := c.getJSON("/knobs/"+k.knob, &kv); err == nil && kv.Value == "0" {
			fmt.Fprintf(ctx.stderr, "edgectl profile: note: %s is 0 on the server, so the %s profile will be empty; "+
				"edgectl knob set %s N turns it on\n", k.knob, k.name, k.knob)
		}
	}
	path := "/debug/pprof/" + k.path
	if *seconds > 0 {
		path += fmt.Sprintf("?seconds=%d", *seconds)
	}
	resp, err := c.do("GET", path, nil, a.timeout+time.Duration(*seconds)*time.Second)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var w io.Writer = ctx.stdout
	if *out != "-" {
		f, err := os.Create(*out)
		if err != nil {
			return fmt.Errorf("create profile file: %w", err)
		}
		defer f.Close()
		w = f
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return fmt.Errorf("read %s profile: %w", k.name, err)
	}
	if f, ok := w.(*os.File); ok && f != ctx.stdout {
		if err := f.Close(); err != nil {
			return fmt.Errorf("write profile file: %w", err)
		}
		fmt.Fprintf(ctx.stderr, "edgectl profile: wrote %d bytes of %s profile to %s\n", n, k.name, *out)
	}
	return nil
}

func zeroSeconds(kind string) string {
	if strings.Contains("heap mutex block", kind) {
		return "the totals since start"
	}
	if kind == "goroutine" {
		return "a snapshot"
	}
	return "not allowed"
}
