package main

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
)

func init() {
	register(command{name: "inbox", summary: "list the largest inboxes and purge one on a live server", run: runInbox})
}

func inboxHelp(ctx *env) {
	w := ctx.stdout
	fmt.Fprintf(w, "Usage: edgectl inbox list [--limit N] [--admin URL]\n")
	fmt.Fprintf(w, "       edgectl inbox purge USER [--admin URL]\n\nVerbs:\n")
	fmt.Fprintf(w, "  list    print the largest inboxes by bytes held, largest first (reads only)\n")
	fmt.Fprintf(w, "  purge   delete every message in USER's inbox; each sender of a direct\n")
	fmt.Fprintf(w, "          message gets a \"purged\" notice\n")
	fmt.Fprintf(w, "\nBytes held count buffer capacity and overheads, as the store cap does. An inbox\n")
	fmt.Fprintf(w, "marked never-connected expires by itself after --inbox-expiry. Run edgectl inbox\n")
	fmt.Fprintf(w, "VERB --help for its flags.\n")
}

func runInbox(ctx *env, args []string) error {
	if len(args) == 0 {
		inboxHelp(ctx)
		return usagef("missing verb")
	}
	verb := args[0]
	var a adminFlags
	var limit int
	switch verb {
	case "-h", "-help", "--help", "help":
		inboxHelp(ctx)
		return nil
	case "list", "purge":
	default:
		return usagef("unknown verb %q (have list, purge)", verb)
	}
	fs := ctx.flags("inbox purge", "USER [--admin URL]")
	want := 1
	if verb == "list" {
		fs = ctx.flags("inbox list", "[--limit N] [--admin URL]")
		fs.IntVar(&limit, "limit", 20, "print at most `N` inboxes (1-10000)")
		want = 0
	}
	a.add(fs)
	pos, err := parsePositional(ctx, fs, args[1:], want)
	if err != nil {
		return err
	}
	if verb == "purge" && len(pos) != 1 {
		return usagef("inbox purge wants USER")
	}
	if verb == "list" && (limit < 1 || limit > 10000) {
		return usagef("--limit %d outside 1-10000", limit)
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	if verb == "purge" {
		resp, err := c.do("DELETE", "/inboxes?user="+url.QueryEscape(pos[0]), nil, 0)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var r struct{ Purged, Bytes int }
		if err := decodeJSON(resp, &r); err != nil {
			return err
		}
		fmt.Fprintf(ctx.stdout, "purged %d messages (%s held) from %s\n", r.Purged, humanBytes(int64(r.Bytes)), pos[0])
		return nil
	}
	var r struct {
		Inboxes []struct {
			User           string
			Messages       int
			Bytes          int64
			Online         bool
			NeverConnected bool `json:"never_connected"`
		}
		Total int
		Bytes int64
	}
	if err := c.getJSON("/inboxes?limit="+strconv.Itoa(limit), &r); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(ctx.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "USER\tMESSAGES\tHELD\tSTATE\n")
	for _, in := range r.Inboxes {
		state := "offline"
		switch {
		case in.Online:
			state = "online"
		case in.NeverConnected:
			state = "never-connected"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", displayUser(in.User), in.Messages, humanBytes(in.Bytes), state)
	}
	tw.Flush()
	fmt.Fprintf(ctx.stdout, "%d inboxes hold %s; %d shown\n", r.Total, humanBytes(r.Bytes), len(r.Inboxes))
	return nil
}

// displayUser escapes control characters (as Go would quote them) and
// cuts a long client id (MQTT allows 65,535 bytes) to 64 bytes and "...".
func displayUser(u string) string {
	if len(u) > 64 {
		u = strings.ToValidUTF8(u[:64], "") + "..."
	}
	q := strconv.Quote(u)
	return q[1 : len(q)-1]
}

// humanBytes renders n in B, KiB, MiB or GiB with one decimal.
func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
