package main

import (
	"encoding/json"
	"fmt"
	"net/url"
)

func init() {
	register(command{name: "group", summary: "list groups and add or remove members on a live server", run: runGroup})
}

func groupHelp(ctx *env) {
	w := ctx.stdout
	fmt.Fprintf(w, "Usage: edgectl group list [GROUP] [--admin URL]\n")
	fmt.Fprintf(w, "       edgectl group add GROUP USER... [--admin URL]\n")
	fmt.Fprintf(w, "       edgectl group remove GROUP USER... [--admin URL]\n\nVerbs:\n")
	fmt.Fprintf(w, "  list    print the groups, or one group's members (reads only)\n")
	fmt.Fprintf(w, "  add     make each USER a member of GROUP (creates the group)\n")
	fmt.Fprintf(w, "  remove  take each USER out of GROUP (an empty group disappears)\n")
	fmt.Fprintf(w, "\nWith several users, each is done in turn; the first failure stops the rest,\n")
	fmt.Fprintf(w, "and what was done before it is printed.\n")
	fmt.Fprintf(w, "\nA member's g/GROUP/<mid> reaches every other member's inbox. Membership lives in\n")
	fmt.Fprintf(w, "the server's memory. Run edgectl group VERB --help for its flags.\n")
}

func runGroup(ctx *env, args []string) error {
	if len(args) == 0 {
		groupHelp(ctx)
		return usagef("missing verb")
	}
	verb := args[0]
	want := maxGroupArgs
	synopsis := "GROUP USER... [--admin URL]"
	switch verb {
	case "-h", "-help", "--help", "help":
		groupHelp(ctx)
		return nil
	case "list":
		want, synopsis = 1, "[GROUP] [--admin URL]"
	case "add", "remove":
	default:
		return usagef("unknown verb %q (have list, add, remove)", verb)
	}
	var a adminFlags
	fs := ctx.flags("group "+verb, synopsis)
	a.add(fs)
	pos, err := parsePositional(ctx, fs, args[1:], want)
	if err != nil {
		return err
	}
	if verb != "list" && len(pos) < 2 {
		return usagef("group %s wants GROUP USER...", verb)
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	switch verb {
	case "list":
		if len(pos) == 0 {
			var r struct{ Groups []string }
			if err := c.getJSON("/groups", &r); err != nil {
				return err
			}
			for _, g := range r.Groups {
				fmt.Fprintln(ctx.stdout, g)
			}
			return nil
		}
		var r struct{ Members []string }
		if err := c.getJSON("/groups/"+url.PathEscape(pos[0]), &r); err != nil {
			return err
		}
		for _, m := range r.Members {
			fmt.Fprintln(ctx.stdout, m)
		}
		return nil
	case "add":
		for _, user := range pos[1:] {
			resp, err := c.do("PUT", "/groups/"+url.PathEscape(pos[0])+"/members/"+url.PathEscape(user), nil, 0)
			if err != nil {
				return err
			}
			var r struct{ Added bool }
			json.NewDecoder(resp.Body).Decode(&r)
			resp.Body.Close()
			if r.Added {
				fmt.Fprintf(ctx.stdout, "added %s to %s\n", user, pos[0])
			} else {
				fmt.Fprintf(ctx.stdout, "%s already in %s\n", user, pos[0])
			}
		}
		return nil
	default:
		for _, user := range pos[1:] {
			resp, err := c.do("DELETE", "/groups/"+url.PathEscape(pos[0])+"/members/"+url.PathEscape(user), nil, 0)
			if err != nil {
				return err
			}
			resp.Body.Close()
			fmt.Fprintf(ctx.stdout, "removed %s from %s\n", user, pos[0])
		}
		return nil
	}
}

// maxGroupArgs bounds GROUP USER... on one command line.
const maxGroupArgs = 10_000
