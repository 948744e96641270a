// Command edgectl is the operator's tool for edged hosts and servers.
//
// Adding a verb group (token, group, steer, top, stats, knob, profile):
//  1. Create one file named after it (token.go) and, in its init(), call
//     register(command{name: "token", summary: "one lower-case line", run: runToken}).
//  2. runToken(ctx *env, args []string) error gets the words after the verb.
//     Make flags with fs := ctx.flags("token SUBVERB", synopsis) and parse with
//     ctx.parse(fs, args); write results to ctx.stdout, diagnostics to ctx.stderr.
//  3. Return usagef(...) for bad input (exit 2), any other error for a failed
//     operation (exit 1), nil for success; "--help" exits 0 by itself.
//  4. Nouns read, verbs change state ("token list", "token revoke").
//  5. Add a golden test of "edgectl token --help" (see tune_test.go) and run
//     go test ./cmd/edgectl -update to refresh testdata/help.golden.
package main

import (
	"errors"
	"flag"
	"fmt"
	"github.com/edgedhq/edged/internal/buildinfo"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
)

// Exit statuses.
const (
	exitOK     = 0
	exitFailed = 1 // the operation failed
	exitUsage  = 2 // unknown verb or flag, bad value
)

// version is set at link time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

// env is what a command may touch: its output streams.
type env struct {
	stdout, stderr io.Writer
}

// command is one verb group in the table.
type command struct {
	name, summary string
	run           func(ctx *env, args []string) error
}

var commands []command

// register adds a verb group; call it from the group file's init().
func register(c command) {
	if slices.ContainsFunc(commands, func(o command) bool { return o.name == c.name }) {
		panic("edgectl: command registered twice: " + c.name)
	}
	commands = append(commands, c)
	slices.SortFunc(commands, func(a, b command) int { return strings.Compare(a.name, b.name) })
}

// usageError marks bad input (exit 2). reported means the flag package
// already printed the message and usage.
type usageError struct {
	err      error
	reported bool
}

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// usagef returns a usage error (exit status 2).
func usagef(format string, args ...any) error {
	return usageError{err: fmt.Errorf(format, args...)}
}

// flags returns a FlagSet for "edgectl NAME" that reports to stderr and
// prints usage (a one-line synopsis plus the flag list) on -h and errors.
func (ctx *env) flags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("edgectl "+name, flag.ContinueOnError)
	fs.SetOutput(ctx.stderr)
	fs.Usage = func() {
		if fs.Output() != ctx.stdout {
			// A bad flag: the flag package has printed what is wrong; a
			// pointer to the help beats a screenful of flags.
			fmt.Fprintf(fs.Output(), "Run 'edgectl %s --help' for usage.\n", name)
			return
		}
		fmt.Fprintf(fs.Output(), "Usage: edgectl %s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args and turns a parse error into a usage error; it returns
// flag.ErrHelp for -h/--help (usage then goes to stdout), which exits 0.
// Positional arguments left over are a usage error.
func (ctx *env) parse(fs *flag.FlagSet, args []string) error {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			fs.SetOutput(ctx.stdout)
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err: err, reported: true}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	ctx := &env{stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		printHelp(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		printHelp(stdout)
		return exitOK
	case "-version", "--version", "version":
		fmt.Fprintf(stdout, "edgectl %s\n", buildinfo.String(version))
		return exitOK
	}
	i := slices.IndexFunc(commands, func(c command) bool { return c.name == args[0] })
	if i < 0 {
		fmt.Fprintf(stderr, "edgectl: unknown command %q; run edgectl --help\n", args[0])
		return exitUsage
	}
	c := commands[i]
	err := c.run(ctx, args[1:])
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		if !ue.reported {
			fmt.Fprintf(stderr, "edgectl %s: %v (see edgectl %s --help)\n", c.name, err, c.name)
		}
		return exitUsage
	}
	fmt.Fprintf(stderr, "edgectl %s: %v\n", c.name, err)
	return exitFailed
}

func printHelp(w io.Writer) {
	fmt.Fprintf(w, "edgectl: operate edged hosts and servers.\n\n")
	fmt.Fprintf(w, "Usage: edgectl COMMAND [ARGS]  (edgectl COMMAND --help for more)\n\nCommands:\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range commands {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.summary)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nAlso: edgectl --version\nExit status: 0 ok, 1 operation failed, 2 usage error.\n")
}
