package main

import (
	"fmt"
	"time"
)

func init() {
	register(command{name: "upgrade", summary: "replace a live edged's binary without dropping a connection", run: runUpgrade})
}

// upgradeState is GET /upgrade's answer.
type upgradeState struct {
	PID       int    `json:"pid"`
	Attempts  int    `json:"attempts"`
	Running   bool   `json:"running"`
	LastError string `json:"last_error"`
}

// runUpgrade asks edged to start the binary at its path (POST /upgrade, as
// kill -USR2 does) and waits until a new pid serves the admin address, or
// the old one reports why it kept serving.
func runUpgrade(ctx *env, args []string) error {
	var a adminFlags
	var timeout time.Duration
	fs := ctx.flags("upgrade", "[--admin URL] [--wait D]")
	fs.DurationVar(&timeout, "wait", 90*time.Second, "how long to wait for the new process (`duration`)")
	a.add(fs)
	if _, err := parsePositional(ctx, fs, args, 0); err != nil {
		return err
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	var before upgradeState
	if err := c.getJSON("/upgrade", &before); err != nil {
		return err
	}
	resp, err := c.do("POST", "/upgrade", nil, 0)
	if err != nil {
		return err
	}
	resp.Body.Close()
	fmt.Fprintf(ctx.stdout, "upgrading edged pid %d...\n", before.PID)
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		var st upgradeState
		if err := c.getJSON("/upgrade", &st); err != nil {
			continue // the admin listener moves between the processes
		}
		switch {
		case st.PID != before.PID:
			fmt.Fprintf(ctx.stdout, "upgraded: pid %d -> %d, no connection dropped\n", before.PID, st.PID)
			return nil
		case st.Attempts > before.Attempts && !st.Running:
			return fmt.Errorf("upgrade failed, pid %d still serving: %s", st.PID, st.LastError)
		}
	}
	return fmt.Errorf("upgrade: no new process after %v (see edged's log)", timeout)
}
