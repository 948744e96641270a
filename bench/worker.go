package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// workerEnv marks a process started by Run as a worker.
const workerEnv = "EDGEBENCH_WORKER"

// MaybeWorker turns this process into a load worker when Run started it as
// one (EDGEBENCH_WORKER=1): it then runs the engine and exits, never
// returning. In any other process it returns at once. Call it first in main
// and in TestMain of any test binary that calls Run.
func MaybeWorker() {
	if os.Getenv(workerEnv) != "1" {
		return
	}
	// The parent coordinates shutdown: a Ctrl-C (or timeout(1)) signals the
	// whole process group, and a worker that died of it could not send its
	// final report. A worker ends when its stdin closes, on the parent's
	// stop command, or by PR_SET_PDEATHSIG when the parent dies.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM)
	if err := workerMain(); err != nil {
		fmt.Fprintf(os.Stderr, "edgebench worker: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func workerMain() error {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 64<<10), 1<<20)
	if !in.Scan() {
		return fmt.Errorf("read setup: %v", in.Err())
	}
	var s Setup
	if err := json.Unmarshal(in.Bytes(), &s); err != nil {
		return fmt.Errorf("decode setup: %w", err)
	}
	cmds := make(chan Command, 64)
	go func() {
		defer close(cmds)
		for in.Scan() {
			var c Command
			if json.Unmarshal(in.Bytes(), &c) == nil {
				cmds <- c
			}
		}
	}()
	out := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(out)
	emit := func(t Tick) {
		_ = enc.Encode(t)
		_ = out.Flush()
	}
	return runEngine(s, cmds, emit)
}
