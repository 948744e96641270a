package capture

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge"
)

// TestReplaySynthetic replays the crafted session against a real edged that
// requires tokens: the minted token must be accepted and every recorded
// client packet sent with its recorded size (the id "alice" maps to
// "r0.0." of the same length).
func TestReplaySynthetic(t *testing.T) {
	secret := []byte("synthetic-test-secret-0123456789")
	srv := startServer(t, edge.Config{Auth: edge.AuthToken, Secret: secret})
	w, err := Read(bytes.NewReader(pcapBytes(t, craftSession(t))), 1883)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Replay(context.Background(), w, ReplayOptions{Target: srv.Addr().String(), Speed: 4, Secret: secret, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Connected != 1 || rep.PerSession[0].ID != "r0.0." {
		t.Fatalf("report %+v", rep)
	}
	if got, want := rep.Sent["PUBLISH"], rep.RecordedSent["PUBLISH"]; got != want {
		t.Errorf("sent PUBLISH %+v, recorded %+v", got, want)
	}
	if got, want := rep.Sent["DISCONNECT"], rep.RecordedSent["DISCONNECT"]; got != want {
		t.Errorf("sent DISCONNECT %+v, recorded %+v", got, want)
	}
	if got := rep.Received["PUBACK"]; got.Packets != 1 {
		t.Errorf("received PUBACK %+v, want 1", got)
	}
	if rep.MessagesRecorded != 1 {
		t.Errorf("messages recorded %d, want 1", rep.MessagesRecorded)
	}
	text := rep.Text()
	for _, want := range []string{"sessions     1 replayed, 1 connected, 0 refused, 0 failed", "PUBLISH", "errors       none"} {
		if !strings.Contains(text, want) {
			t.Errorf("report text lacks %q:\n%s", want, text)
		}
	}
}

// TestReplayFailures: an unreachable target and a wrong secret are counted
// as failed and refused sessions, not hidden.
func TestReplayFailures(t *testing.T) {
	w, err := Read(bytes.NewReader(pcapBytes(t, craftSession(t))), 1883)
	if err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, edge.Config{Auth: edge.AuthToken, Secret: []byte("the-right-secret-0123456789")})
	dead := startServer(t, edge.Config{Auth: edge.AuthAnonymous})
	deadAddr := dead.Addr().String()
	dead.Close()
	tests := []struct {
		name            string
		o               ReplayOptions
		refused, failed int
		errKey          string
	}{
		{"wrong secret", ReplayOptions{Target: srv.Addr().String(), Secret: []byte("a-wrong-secret-0123456789"), Speed: 8}, 1, 0, ""},
		{"no server", ReplayOptions{Target: deadAddr, Speed: 8, DialTimeout: 2 * time.Second}, 0, 1, "dial"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, err := Replay(context.Background(), w, tt.o)
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK() || rep.Refused != tt.refused || rep.Failed != tt.failed {
				t.Fatalf("refused %d failed %d, want %d %d", rep.Refused, rep.Failed, tt.refused, tt.failed)
			}
			if tt.errKey != "" && rep.Errors[tt.errKey] != 1 {
				t.Fatalf("errors %v, want %s 1", rep.Errors, tt.errKey)
			}
		})
	}
	if _, err := Replay(context.Background(), &Workload{}, ReplayOptions{Target: "127.0.0.1:1"}); !errors.Is(err, ErrNoSessions) {
		t.Errorf("Replay(empty workload) = %v, want ErrNoSessions", err)
	}
}
