package main

import (
	"context"
	"os"
	"os/signal"
	"time"
)

func init() {
	register(command{name: "top", summary: "watch a live server: activity figures, loops, longest queues and alarms, every second", run: runTop})
}

// Terminal control: cursor home, then clear the screen.
const clearScreen = "\x1b[H\x1b[2J"

func runTop(ctx *env, args []string) error {
	var a adminFlags
	fs := ctx.flags("top", "[--admin URL] [--interval D] [--count N] [--once]")
	a.add(fs)
	interval := fs.Duration("interval", time.Second, "refresh every `DURATION`")
	count := fs.Int("count", 0, "stop after `N` frames (0: until interrupted)")
	once := fs.Bool("once", false, "print one frame and exit (same as --count 1)")
	if err := ctx.parse(fs, args); err != nil {
		return err
	}
	if *interval <= 0 {
		return usagef("--interval must be positive")
	}
	if *count < 0 {
		return usagef("--count must be >= 0")
	}
	if *once {
		*count = 1
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	tty := isTerminal(ctx.stdout)
	sig, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	t := time.NewTicker(*interval)
	defer t.Stop()
	for frame := 1; ; frame++ {
		s, err := c.snapshot()
		if err != nil {
			return err
		}
		if tty {
			ctx.stdout.Write([]byte(clearScreen))
		} else if frame > 1 {
			ctx.stdout.Write([]byte("\n"))
		}
		renderStats(ctx.stdout, s, c.base, true)
		if *count > 0 && frame >= *count {
			return nil
		}
		select {
		case <-sig.Done():
			return nil
		case <-t.C:
		}
	}
}

// isTerminal reports whether w is a character device (a terminal): top
// redraws in place there and prints frames one after another elsewhere.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
