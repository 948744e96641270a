package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/edgedhq/edged/sysctl"
	"github.com/edgedhq/edged/tuning"
)

func init() {
	register(command{name: "tune", summary: "plan, apply, verify and roll back host tuning profiles", run: runTune})
}

var tuneVerbs = []struct{ name, summary string }{
	{"plan", "show every setting: key, current, proposed, reason, formula, capacity (reads only)"},
	{"diff", "show only the settings that differ from the host (reads only)"},
	{"apply", "write the differing settings, with a backup in the state file"},
	{"verify", "read the settings back; exit 1 if any differs from the profile"},
	{"rollback", "restore the values saved in the state file by apply"},
	{"export", "print the profile as sysctl.d, systemd drop-in or json"},
}

func tuneHelp(ctx *env) {
	w := ctx.stdout
	fmt.Fprintf(w, "Usage: edgectl tune VERB --profile NAME [--conns N] [--root DIR] [--only KEYS] [--state FILE] [--dry-run]\n")
	fmt.Fprintf(w, "       edgectl tune export --profile NAME --format sysctl.d|systemd|json\n\nVerbs:\n")
	for _, v := range tuneVerbs {
		fmt.Fprintf(w, "  %-9s %s\n", v.name, v.summary)
	}
	fmt.Fprintf(w, "\nProfiles: %s (auto without --conns: 2M connections per 100 GiB of RAM, the seed host's ratio).\n", strings.Join(tuning.Names(), ", "))
	fmt.Fprintf(w, "Run edgectl tune VERB --help for its flags.\n")
}

// tuneOpts are the flags every tune verb shares.
type tuneOpts struct {
	profile, root, state, only, format string
	conns                              int64
	tlsShare                           float64
	dryRun                             bool
}

func runTune(ctx *env, args []string) error {
	if len(args) == 0 {
		tuneHelp(ctx)
		return usagef("missing verb")
	}
	verb := args[0]
	if verb == "-h" || verb == "-help" || verb == "--help" || verb == "help" {
		tuneHelp(ctx)
		return nil
	}
	if !slices.ContainsFunc(tuneVerbs, func(v struct{ name, summary string }) bool { return v.name == verb }) {
		return usagef("unknown verb %q (have plan, diff, apply, verify, rollback, export)", verb)
	}
	var o tuneOpts
	fs := ctx.flags("tune "+verb, "[flags]")
	if verb != "rollback" {
		fs.StringVar(&o.profile, "profile", "", "profile `NAME`: "+strings.Join(tuning.Names(), ", ")+" (required)")
		fs.Int64Var(&o.conns, "conns", 0, "connection target `N` (overrides the profile's; auto without it: 2M per 100 GiB of RAM)")
		fs.Float64Var(&o.tlsShare, "tls-share", 0, "`fraction` (0 to 1) of the connections over TLS, for the capacity estimate (each costs edged more memory)")
	} else {
		// Accepted so "tune VERB --profile NAME" works for every verb; the
		// state file alone decides what is restored.
		fs.StringVar(&o.profile, "profile", "", "profile `NAME` (ignored: the state file says what to restore)")
		fs.Int64Var(&o.conns, "conns", 0, "connection target `N` (ignored)")
	}
	fs.StringVar(&o.root, "root", "/", "host root `DIR` holding proc/, sys/ and etc/ (a fake tree in tests)")
	if verb == "export" {
		fs.StringVar(&o.format, "format", "sysctl.d", "output `FORMAT`: "+strings.Join(tuning.Formats, ", "))
	} else if verb != "rollback" {
		fs.StringVar(&o.only, "only", "", "comma-separated key `PREFIXES` to keep (e.g. net.ipv4.tcp_keepalive_,/sys/)")
	}
	if verb == "apply" || verb == "rollback" {
		fs.StringVar(&o.state, "state", "", "state (backup) `FILE` (default ROOT/var/lib/edgectl/tune-state.json)")
		fs.BoolVar(&o.dryRun, "dry-run", false, "check and show what would change, write nothing")
	} else if verb != "export" {
		fs.BoolVar(&o.dryRun, "dry-run", false, "accepted for symmetry: "+verb+" never writes")
	}
	if err := ctx.parse(fs, args[1:]); err != nil {
		return err
	}
	if o.state == "" {
		o.state = filepath.Join(o.root, "var", "lib", "edgectl", "tune-state.json")
	}
	if verb == "rollback" {
		return tuneRollback(ctx, o)
	}
	if o.profile == "" {
		return usagef("--profile is required (%s)", strings.Join(tuning.Names(), ", "))
	}
	if verb == "export" && !slices.Contains(tuning.Formats, o.format) {
		return usagef("unknown --format %q (have %s)", o.format, strings.Join(tuning.Formats, ", "))
	}
	h, err := tuning.ReadHost(o.root)
	if err != nil {
		return err
	}
	p, err := tuning.Load(o.profile, h, o.conns)
	if errors.Is(err, tuning.ErrUnknownProfile) || errors.Is(err, tuning.ErrConns) {
		return usageError{err: err}
	}
	if err != nil {
		return err
	}
	if verb == "export" {
		return tuning.Export(ctx.stdout, p, h, o.format)
	}
	var only []string
	if o.only != "" {
		only = strings.Split(o.only, ",")
	}
	if o.tlsShare < 0 || o.tlsShare > 1 {
		return usagef("--tls-share %v: want a fraction from 0 to 1", o.tlsShare)
	}
	plan := tuning.NewPlan(p, h).Filter(only)
	if o.tlsShare > 0 {
		plan.Capacity = tuning.EstimateCapacityTLS(p, h, o.tlsShare)
	}
	switch verb {
	case "plan":
		return plan.Render(ctx.stdout, false)
	case "diff":
		return plan.Render(ctx.stdout, true)
	case "apply":
		return tuneApply(ctx, plan, o)
	case "verify":
		return tuneVerify(ctx, plan)
	}
	panic("tune: verb list and switch disagree: " + verb)
}

func tuneApply(ctx *env, plan *tuning.Plan, o tuneOpts) error {
	if err := plan.Render(ctx.stdout, true); err != nil {
		return err
	}
	if err := plan.Err(); err != nil {
		return fmt.Errorf("apply: nothing changed: %w", err)
	}
	if o.dryRun {
		if err := sysctl.Check(plan.Changes()); err != nil {
			return fmt.Errorf("apply --dry-run: %w", err)
		}
		fmt.Fprintf(ctx.stdout, "dry run: %d change(s) checked, none written\n", len(plan.Changes()))
		return nil
	}
	n, err := tuning.Apply(plan, o.state)
	if err != nil {
		return err
	}
	if n == 0 {
		fmt.Fprintln(ctx.stdout, "nothing to change")
		return nil
	}
	fmt.Fprintf(ctx.stdout, "applied %d change(s); old values saved in %s (undo: edgectl tune rollback --state %s)\n", n, o.state, o.state)
	// Read back what the kernel kept: it may clamp or round a value.
	return tuneVerify(ctx, plan)
}

func tuneVerify(ctx *env, plan *tuning.Plan) error {
	bad, err := tuning.Verify(plan)
	short := func(v sysctl.Value) string {
		if n := strings.Count(string(v), "\n"); n > 0 {
			return fmt.Sprintf("(%d lines)", n)
		}
		if v == "" {
			return "(absent)"
		}
		return string(v)
	}
	for _, m := range bad {
		if m.Err != nil {
			fmt.Fprintf(ctx.stdout, "differs: %s: want %s: %v\n", m.Key, short(m.Want), m.Err)
			continue
		}
		fmt.Fprintf(ctx.stdout, "differs: %s: want %s, have %s\n", m.Key, short(m.Want), short(m.Got))
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(ctx.stdout, "verified: %d setting(s) hold profile %s\n", len(plan.Lines), plan.Profile.Name)
	return nil
}

func tuneRollback(ctx *env, o tuneOpts) error {
	st, ok, err := sysctl.ReadState(o.state)
	if !ok {
		return err
	}
	for _, e := range st.Entries {
		old := string(e.Value)
		if !e.Existed {
			old = "(remove file)"
		} else if strings.Contains(old, "\n") {
			old = fmt.Sprintf("(%d lines)", strings.Count(old, "\n"))
		}
		fmt.Fprintf(ctx.stdout, "restore %s = %s\n", e.Key, old)
	}
	if o.dryRun {
		fmt.Fprintf(ctx.stdout, "dry run: %d key(s) would be restored from %s\n", len(st.Entries), o.state)
		return nil
	}
	n, err := tuning.Rollback(o.state)
	if err != nil {
		return err
	}
	fmt.Fprintf(ctx.stdout, "rolled back %d key(s); removed %s\n", n, o.state)
	return nil
}
