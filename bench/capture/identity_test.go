package capture

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge"
)

// TestMintToken checks minted tokens against the server's own verifier.
func TestMintToken(t *testing.T) {
	secret := []byte("0123456789abcdef-test-secret")
	now := time.Unix(1_800_000_000, 0)
	tests := []struct {
		name   string
		secret []byte
		user   string
		expiry time.Time
		want   error
	}{
		{"valid", secret, "r0.1.___", now.Add(time.Hour), nil},
		{"expired", secret, "r0.1.___", now.Add(-time.Second), edge.ErrTokenExpired},
		{"other secret", []byte("another secret, 16+ bytes"), "r0.1.___", now.Add(time.Hour), edge.ErrBadToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := MintToken(tt.secret, tt.user, tt.expiry)
			if err := edge.VerifyToken(secret, tt.user, tok, now); !errors.Is(err, tt.want) {
				t.Fatalf("VerifyToken(%q) = %v, want %v", tok, err, tt.want)
			}
			want, err := edge.IssueToken(tt.secret, tt.user, tt.expiry)
			if err != nil || want != tok {
				t.Fatalf("MintToken = %q, edge.IssueToken = %q, %v", tok, want, err)
			}
		})
	}
}

// TestReplayIDs: every replay id is a valid user id, keeps the recorded
// length when that is at least 8 (up to 64), and no two (copy, index) pairs
// share one.
func TestReplayIDs(t *testing.T) {
	for _, length := range []int{1, 5, 8, 9, 64, 200} {
		t.Run(fmt.Sprint(length), func(t *testing.T) {
			seen := map[string]bool{}
			for k := 0; k < 50; k++ {
				for n := 0; n < 50; n++ {
					id := replayID(k, n, length)
					if !validID(id) {
						t.Fatalf("replayID(%d, %d, %d) = %q is not a valid user id", k, n, length, id)
					}
					if length >= 8 && length <= maxIDLen && len(id) != length {
						t.Fatalf("replayID(%d, %d, %d) = %q: length not kept", k, n, length, id)
					}
					if seen[id] {
						t.Fatalf("replayID(%d, %d, %d) = %q twice", k, n, length, id)
					}
					seen[id] = true
				}
			}
		})
	}
}

func TestTopicMapping(t *testing.T) {
	m := newIdentities()
	m.add("alice001")
	m.scanTopic("u/bob00002/m1")
	m.scanTopic("p/carol003")
	m.scanTopic("u/+/x")      // a wildcard is no user
	m.scanTopic("room/lobby") // generic: nothing to register
	tests := []struct {
		topic   string
		k       int
		isolate bool
		want    string
	}{
		{"u/bob00002/m1", 0, false, "u/r0.1.___/m1"},
		{"u/bob00002/m1", 1, true, "u/r1.1.___/m1"},
		{"u/alice001/#", 2, false, "u/r2.0.___/#"},
		{"p/carol003", 0, true, "p/r0.2.___"},
		{"room/lobby", 0, false, "room/lobby"},
		{"room/lobby", 3, true, "r3/room/lobby"},
		{"#", 1, true, "r1/#"},
		{"$SYS/x", 1, true, "$SYS/x"},
		{"g/team/m9", 1, true, "g/team/m9"},
		{"chat/alice001/in", 0, false, "chat/r0.0.___/in"},
	}
	for _, tt := range tests {
		t.Run(tt.topic, func(t *testing.T) {
			if got := m.topic(tt.topic, tt.k, tt.isolate); got != tt.want {
				t.Fatalf("topic(%q, %d, %v) = %q, want %q", tt.topic, tt.k, tt.isolate, got, tt.want)
			}
		})
	}
}
