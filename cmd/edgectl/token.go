package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/edgedhq/edged/edge"
)

func init() {
	register(command{name: "token", summary: "issue and verify client login tokens (stateless HMAC, PROTOCOL.md)", run: runToken})
}

func tokenHelp(ctx *env) {
	w := ctx.stdout
	fmt.Fprintf(w, "Usage: edgectl token issue --user USER --secret-file FILE [--ttl DURATION]\n")
	fmt.Fprintf(w, "       edgectl token verify --user USER --secret-file FILE TOKEN\n\nVerbs:\n")
	fmt.Fprintf(w, "  issue   print a token: v1.<expiry>.<base64url(HMAC-SHA256(secret, \"<user>|<expiry>\"))>\n")
	fmt.Fprintf(w, "  verify  check a token for a user and print its expiry (exit 1 if invalid or expired)\n")
	fmt.Fprintf(w, "\nClients log in with username = client id = USER and password = the token.\n")
	fmt.Fprintf(w, "The secret file is the one edged reads with --secret-file. Run edgectl token VERB --help for its flags.\n")
}

func runToken(ctx *env, args []string) error {
	if len(args) == 0 {
		tokenHelp(ctx)
		return usagef("missing verb")
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		tokenHelp(ctx)
		return nil
	case "issue":
		return tokenIssue(ctx, args[1:])
	case "verify":
		return tokenVerify(ctx, args[1:])
	}
	return usagef("unknown verb %q (have issue, verify)", args[0])
}

type tokenFlags struct {
	user, secretFile string
}

func (f *tokenFlags) add(fs interface {
	StringVar(*string, string, string, string)
}) {
	fs.StringVar(&f.user, "user", "", "`USER` id (1-64 of [0-9A-Za-z_.-])")
	fs.StringVar(&f.secretFile, "secret-file", "", "`FILE` holding the HMAC secret (as given to edged)")
}

// secret checks the flags and reads the secret the way edged does.
func (f *tokenFlags) secret() ([]byte, error) {
	if f.user == "" {
		return nil, usagef("--user is required")
	}
	if !edge.ValidID(f.user) {
		return nil, usagef("--user %q: want 1-64 characters of [0-9A-Za-z_.-]", f.user)
	}
	if f.secretFile == "" {
		return nil, usagef("--secret-file is required")
	}
	b, err := os.ReadFile(f.secretFile)
	if err != nil {
		return nil, fmt.Errorf("read secret: %w", err)
	}
	s := []byte(strings.TrimSpace(string(b)))
	if len(s) < 16 {
		return nil, fmt.Errorf("read secret %s: shorter than 16 bytes", f.secretFile)
	}
	return s, nil
}

func tokenIssue(ctx *env, args []string) error {
	var f tokenFlags
	fs := ctx.flags("token issue", "--user USER --secret-file FILE [--ttl DURATION]")
	f.add(fs)
	ttl := fs.Duration("ttl", 24*time.Hour, "validity from now (`DURATION`)")
	if err := ctx.parse(fs, args); err != nil {
		return err
	}
	if *ttl <= 0 {
		return usagef("--ttl must be positive")
	}
	secret, err := f.secret()
	if err != nil {
		return err
	}
	tok, err := edge.IssueToken(secret, f.user, time.Now().Add(*ttl))
	if err != nil {
		return fmt.Errorf("issue token: %w", err)
	}
	fmt.Fprintln(ctx.stdout, tok)
	return nil
}

func tokenVerify(ctx *env, args []string) error {
	var f tokenFlags
	fs := ctx.flags("token verify", "--user USER --secret-file FILE TOKEN")
	f.add(fs)
	pos, err := parsePositional(ctx, fs, args, 1)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("token verify wants TOKEN")
	}
	secret, err := f.secret()
	if err != nil {
		return err
	}
	if err := edge.VerifyToken(secret, f.user, pos[0], time.Now()); err != nil {
		return fmt.Errorf("verify token for %s: %w", f.user, err)
	}
	var exp int64
	fmt.Sscanf(strings.SplitN(pos[0], ".", 3)[1], "%d", &exp)
	fmt.Fprintf(ctx.stdout, "valid for %s until %s\n", f.user, time.Unix(exp, 0).UTC().Format(time.RFC3339))
	return nil
}
