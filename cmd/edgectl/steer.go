package main

import (
	"fmt"

	steer "github.com/edgedhq/edged/ebpf"
)

func init() {
	register(command{name: "steer", summary: "show the eBPF connection steering: programs, policy, per-loop accepts and live connections", run: runSteer})
}

func steerHelp(ctx *env) {
	w := ctx.stdout
	fmt.Fprintf(w, "Usage: edgectl steer status [--pin DIR]\n\nNouns:\n")
	fmt.Fprintf(w, "  status  the pinned reuseport groups (program, policy, per-loop accepts, live,\n")
	fmt.Fprintf(w, "          pending) and NIC lookups (per-group assigned, dropped) (reads only)\n")
	fmt.Fprintf(w, "\nedged pins its steering under %s/<group> when started with a pin path.\n", steer.DefaultPinRoot)
	fmt.Fprintf(w, "Run edgectl steer status --help for its flags.\n")
}

func runSteer(ctx *env, args []string) error {
	if len(args) == 0 {
		steerHelp(ctx)
		return usagef("missing noun")
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		steerHelp(ctx)
		return nil
	case "status":
	default:
		return usagef("unknown noun %q (have status)", args[0])
	}
	fs := ctx.flags("steer status", "[--pin DIR]")
	pin := fs.String("pin", steer.DefaultPinRoot, "bpffs directory that holds the pinned steering groups")
	if err := ctx.parse(fs, args[1:]); err != nil {
		return err
	}
	if *pin == "" {
		return usagef("--pin must name a directory")
	}
	return steer.StatusReport(ctx.stdout, *pin)
}
