package edge

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestToken(t *testing.T) {
	secret := []byte("0123456789abcdef")
	now := time.Unix(1_800_000_000, 0)
	good, err := IssueToken(secret, "14155550123", now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	tamper := []byte(good)
	tamper[len(tamper)-1] ^= 1
	for _, tc := range []struct {
		name   string
		secret []byte
		user   string
		token  string
		at     time.Time
		want   error
	}{
		{"valid", secret, "14155550123", good, now, nil},
		{"expired", secret, "14155550123", good, now.Add(time.Hour), ErrTokenExpired},
		{"other user", secret, "14155550124", good, now, ErrBadToken},
		{"other secret", []byte("fedcba9876543210"), "14155550123", good, now, ErrBadToken},
		{"tampered mac", secret, "14155550123", string(tamper), now, ErrBadToken},
		{"empty", secret, "14155550123", "", now, ErrBadToken},
		{"wrong version", secret, "14155550123", "v2" + good[2:], now, ErrBadToken},
		{"no mac", secret, "14155550123", "v1.1800003600", now, ErrBadToken},
		{"non-numeric expiry", secret, "14155550123", "v1.soon.abc", now, ErrBadToken},
		{"padded expiry", secret, "14155550123", "v1.0" + good[3:], now, ErrBadToken},
		{"no secret", nil, "14155550123", good, now, ErrNoSecret},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := VerifyToken(tc.secret, tc.user, tc.token, tc.at); !errors.Is(err, tc.want) {
				t.Fatalf("VerifyToken = %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := IssueToken(secret, "bad user", now); !errors.Is(err, ErrBadUserID) {
		t.Fatalf("IssueToken(bad user) = %v", err)
	}
	if _, err := IssueToken(nil, "u", now); !errors.Is(err, ErrNoSecret) {
		t.Fatalf("IssueToken(no secret) = %v", err)
	}
}

func TestTopicTreeMatch(t *testing.T) {
	tr := newTopicTree()
	reg := newRegistry()
	subs := map[string]*client{}
	for _, f := range []string{"a/b", "a/+", "a/#", "#", "+/b", "$SYS/#", "p/bob", "+/+/#", "a/b/c"} {
		cl := reg.lock([]byte(fmt.Sprint("c", len(subs))), true)
		tr.subscribe(f, cl, 1)
		cl.mu.Unlock()
		subs[f] = cl
	}
	names := func(topic string) []string {
		var out []string
		for _, s := range tr.match([]byte(topic), nil) {
			for f, cl := range subs {
				if cl == s.cl {
					out = append(out, f)
				}
			}
		}
		slices.Sort(out)
		return out
	}
	for _, tc := range []struct {
		topic string
		want  []string
	}{
		{"a/b", []string{"#", "+/+/#", "+/b", "a/#", "a/+", "a/b"}},
		{"a", []string{"#", "a/#"}},
		{"a/b/c", []string{"#", "+/+/#", "a/#", "a/b/c"}},
		{"$SYS/load", []string{"$SYS/#"}},
		{"p/bob", []string{"p/bob"}},
		{"u/bob/m/alice/1", nil},
		{"r/alice/1", nil},
		{"g/team/1", nil},
		{"x/b", []string{"#", "+/+/#", "+/b"}},
	} {
		t.Run(tc.topic, func(t *testing.T) {
			if got := names(tc.topic); !slices.Equal(got, tc.want) {
				t.Fatalf("match(%q) = %v, want %v", tc.topic, got, tc.want)
			}
		})
	}
	for f, cl := range subs {
		if !tr.unsubscribe(f, cl) {
			t.Fatalf("unsubscribe %q: not found", f)
		}
	}
	if n := tr.root.nkids(); n != 0 || tr.root.x != nil {
		t.Fatalf("tree not pruned: %d children", n)
	}
}

// TestRegistryTable churns the user table's open-addressing hash table
// (growth, backward-shift deletion) against a map.
func TestRegistryTable(t *testing.T) {
	reg := newRegistry()
	live := map[string]uint32{}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 50_000 {
		id := fmt.Sprint("user", rng.IntN(5000))
		if _, ok := live[id]; ok && rng.IntN(2) == 0 {
			cl := reg.lock([]byte(id), false)
			if cl == nil || cl.name() != id {
				t.Fatalf("step %d: lookup %s failed", i, id)
			}
			gen := cl.gen
			cl.mu.Unlock()
			reg.release(cl, gen)
			delete(live, id)
			continue
		}
		cl := reg.lock([]byte(id), true)
		if idx, ok := live[id]; ok && cl.idx != idx {
			t.Fatalf("step %d: %s moved from %d to %d", i, id, idx, cl.idx)
		}
		live[id] = cl.idx
		cl.mu.Unlock()
	}
	if got := reg.count.Load(); got != int64(len(live)) {
		t.Fatalf("count %d, want %d", got, len(live))
	}
	for id, idx := range live {
		cl := reg.lock([]byte(id), false)
		if cl == nil || cl.idx != idx {
			t.Fatalf("%s lost", id)
		}
		cl.mu.Unlock()
	}
	for i := range 5000 {
		id := fmt.Sprint("user", i)
		if _, ok := live[id]; !ok && reg.lock([]byte(id), false) != nil {
			t.Fatalf("released %s still found", id)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"token without secret", Config{Auth: AuthToken}, "token auth without a secret"},
		{"tiny packets", Config{Auth: AuthAnonymous, MaxPacketSize: 10}, "max packet size"},
		{"inbox below packet", Config{Auth: AuthAnonymous, InboxBytes: 1000}, "inbox bounds"},
		{"window", Config{Auth: AuthAnonymous, Inflight: 5000}, "in-flight window"},
		{"negative", Config{Auth: AuthAnonymous, MaxConnections: -1}, "negative"},
		{"queue", Config{Auth: AuthAnonymous, MaxQueued: 1000}, "max queued"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want ErrBadConfig with %q", err, tc.want)
			}
		})
	}
}

// TestInboxTopic: parseInboxTopic reads back what appendTo wrote, len is
// what it wrote, and other shapes are refused.
func TestInboxTopic(t *testing.T) {
	for _, p := range []inboxTopic{
		{kind: 'm', to: []byte("bob"), from: []byte("alice"), mid: []byte("m1")},
		{kind: 'g', to: []byte("bob"), from: []byte("alice"), group: []byte("team"), mid: []byte("7")},
		{kind: 'e', to: []byte("alice"), from: []byte("bob"), mid: []byte("x.y-z_")},
		{kind: 'd', to: []byte("a"), from: []byte("b"), mid: []byte("c")},
	} {
		enc := p.appendTo(nil)
		got, ok := parseInboxTopic(enc)
		if !ok || len(enc) != p.len() || got.kind != p.kind || string(got.to) != string(p.to) || string(got.from) != string(p.from) ||
			string(got.group) != string(p.group) || string(got.mid) != string(p.mid) {
			t.Errorf("%s: parsed %+v ok %v, len %d (encoded %d)", enc, got, ok, p.len(), len(enc))
		}
		if _, ok := delivered(enc); ok != (p.kind == 'm') {
			t.Errorf("%s: delivered says %v", enc, ok)
		}
	}
	for _, bad := range []string{"", "u", "u/", "u/bob", "u/bob/m", "u/bob/m/alice", "u/bob/mm/alice/1", "r/bob/m/alice/1", "u/bob/g/team/alice"} {
		if p, ok := parseInboxTopic([]byte(bad)); ok {
			t.Errorf("%q parsed as %+v", bad, p)
		}
	}
}
