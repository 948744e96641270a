package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgedhq/edged/edge"
)

func writeSecret(t *testing.T) (path string, secret []byte) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "secret")
	secret = []byte("s3cr3t-s3cr3t-s3cr3t-0123456789")
	if err := os.WriteFile(path, append(secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, secret
}

func TestTokenHelpGolden(t *testing.T) {
	for _, tt := range []struct {
		golden string
		args   []string
	}{
		{"token-help.golden", []string{"token", "--help"}},
		{"token-issue-help.golden", []string{"token", "issue", "--help"}},
		{"token-verify-help.golden", []string{"token", "verify", "--help"}},
		{"group-help.golden", []string{"group", "--help"}},
		{"group-add-help.golden", []string{"group", "add", "--help"}},
	} {
		t.Run(tt.golden, func(t *testing.T) {
			out, errOut, code := edgectl(tt.args...)
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			golden(t, tt.golden, []byte(out))
		})
	}
}

func TestTokenExitCodes(t *testing.T) {
	sf, _ := writeSecret(t)
	short := filepath.Join(t.TempDir(), "short")
	os.WriteFile(short, []byte("tiny"), 0o600)
	for _, tt := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no verb", []string{"token"}, exitUsage, "missing verb"},
		{"unknown verb", []string{"token", "revoke"}, exitUsage, `unknown verb "revoke"`},
		{"no user", []string{"token", "issue", "--secret-file", sf}, exitUsage, "--user is required"},
		{"bad user", []string{"token", "issue", "--user", "a b", "--secret-file", sf}, exitUsage, "want 1-64 characters"},
		{"no secret", []string{"token", "issue", "--user", "alice"}, exitUsage, "--secret-file is required"},
		{"bad ttl", []string{"token", "issue", "--user", "alice", "--secret-file", sf, "--ttl", "-1h"}, exitUsage, "--ttl must be positive"},
		{"missing secret file", []string{"token", "issue", "--user", "alice", "--secret-file", sf + ".none"}, exitFailed, "read secret"},
		{"short secret", []string{"token", "issue", "--user", "alice", "--secret-file", short}, exitFailed, "shorter than 16 bytes"},
		{"verify without token", []string{"token", "verify", "--user", "alice", "--secret-file", sf}, exitUsage, "wants TOKEN"},
		{"verify garbage", []string{"token", "verify", "--user", "alice", "--secret-file", sf, "v1.1.x"}, exitFailed, "bad token"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut, code := edgectl(tt.args...)
			if code != tt.code || !strings.Contains(errOut, tt.stderr) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", code, errOut, tt.code, tt.stderr)
			}
		})
	}
}

// TestTokenLogin issues a token with edgectl and logs in to a real server
// with paho.
func TestTokenLogin(t *testing.T) {
	sf, secret := writeSecret(t)
	tok, errOut, code := edgectl("token", "issue", "--user", "14155550123", "--ttl", "1h", "--secret-file", sf)
	if code != exitOK {
		t.Fatalf("issue: exit %d: %s", code, errOut)
	}
	tok = strings.TrimSpace(tok)
	if out, errOut, code := edgectl("token", "verify", "--user", "14155550123", "--secret-file", sf, tok); code != exitOK || !strings.HasPrefix(out, "valid for 14155550123 until ") {
		t.Fatalf("verify: exit %d %q %q", code, out, errOut)
	}
	if _, _, code := edgectl("token", "verify", "--user", "14155550124", "--secret-file", sf, tok); code != exitFailed {
		t.Fatalf("verify for another user: exit %d, want 1", code)
	}
	s, err := edge.New(edge.Config{Addr: "127.0.0.1:0", Loops: 1, Auth: edge.AuthToken, Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	login := func(user, pass string) error {
		o := paho.NewClientOptions().AddBroker("tcp://" + s.Addr().String()).SetClientID(user).
			SetUsername(user).SetPassword(pass).SetAutoReconnect(false).SetProtocolVersion(4).
			SetConnectTimeout(10 * time.Second)
		c := paho.NewClient(o)
		tk := c.Connect()
		tk.WaitTimeout(10 * time.Second)
		if tk.Error() == nil {
			c.Disconnect(0)
		}
		return tk.Error()
	}
	if err := login("14155550123", tok); err != nil {
		t.Fatalf("login with an issued token: %v", err)
	}
	if err := login("14155550124", tok); err == nil || !strings.Contains(err.Error(), "not Authorized") {
		t.Fatalf("login with another user's token: %v, want not authorized", err)
	}
}
