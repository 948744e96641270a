package edge

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/internal/wal"
)

// startDurable starts a server on dir with mod applied after the store
// settings.
func startDurable(t *testing.T, dir string, mod func(*Config)) *Server {
	t.Helper()
	return startServer(t, func(c *Config) {
		c.DataDir = dir
		if mod != nil {
			mod(c)
		}
	})
}

// publishAcked publishes QoS 1 and waits for its PUBACK.
func (c *rawClient) publishAcked(topic, payload string) {
	c.t.Helper()
	id := c.publish(topic, payload, 1)
	if p := c.expect(mqtt.TypePuback); p.ID != id {
		c.t.Fatalf("PUBACK %d, want %d", p.ID, id)
	}
}

// TestDurableStateSurvivesRestart: inboxes (in order, the ones sent and not
// acknowledged redelivered with DUP), receipts, a persistent session with
// its subscription and queued message, retained messages, groups and
// last-seen all come back after a stop and start on the same data dir; and
// what was acknowledged before the stop does not come back.
func TestDurableStateSurvivesRestart(t *testing.T) {
	for _, mode := range []wal.SyncMode{wal.SyncAlways, wal.SyncInterval, wal.SyncNever} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			set := func(c *Config) { c.Fsync = mode }
			s := startDurable(t, dir, set)

			carol := dial(t, s)
			carol.connect("carol", true)
			if code := carol.subscribe("news/#", 1); code != 1 {
				t.Fatalf("SUBACK %d", code)
			}
			carol.conn.Close()
			waitFor(t, "carol offline", func() bool { return s.Connections() == 0 })

			alice := dial(t, s)
			alice.connect("alice", false)
			const n = 50
			for i := range n {
				alice.publishAcked(fmt.Sprintf("u/bob/m%d", i), fmt.Sprintf("hello %d", i))
			}
			alice.publishAcked("news/a", "queued for carol")
			alice.send(mqtt.AppendPublish(nil, "news/r", []byte("retained"), 1, true, false, 999))
			alice.expect(mqtt.TypePuback)
			if _, err := s.Groups().Add("team", "alice"); err != nil {
				t.Fatal(err)
			}
			s.Groups().Add("team", "bob")
			s.Groups().Add("gone", "bob")
			s.Groups().Remove("gone", "bob")
			alice.conn.Close()

			// bob takes 5 messages and acknowledges 2 of them.
			bob := dial(t, s)
			bob.connect("bob", false)
			var got []pkt
			for range 5 {
				got = append(got, bob.expect(mqtt.TypePublish))
			}
			bob.puback(got[0].ID)
			bob.puback(got[1].ID)
			waitFor(t, "two acknowledged", func() bool { return s.InboxLen("bob") == n-2 })
			bob.conn.Close()
			waitFor(t, "all offline", func() bool { return s.Connections() == 0 })
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			s = startDurable(t, dir, set)
			if got := s.InboxLen("bob"); got != n-2 {
				t.Fatalf("bob's inbox after restart: %d, want %d", got, n-2)
			}
			// Replayed entries count in the entry total ($SYS
			// messages/stored): bob's, carol's queued one, and the
			// delivered receipts queued for alice.
			if got, min := s.entries.Load(), int64(n-2+1); got < min {
				t.Fatalf("entry total after restart %d, want at least %d (replayed inboxes not counted)", got, min)
			}
			bob = dial(t, s)
			bob.connect("bob", false)
			for i := 2; i < n; i++ {
				p := bob.expect(mqtt.TypePublish)
				if want := fmt.Sprintf("u/bob/m/alice/m%d", i); p.Topic != want || p.Payload != fmt.Sprintf("hello %d", i) {
					t.Fatalf("delivery %d: %s %q, want %s", i, p.Topic, p.Payload, want)
				}
				// Sent before the stop (m2-m4) must carry DUP; the rest
				// may (recovery cannot tell which of the window went out).
				if i < 5 && !p.Dup {
					t.Fatalf("m%d redelivered without DUP", i)
				}
				bob.puback(p.ID)
			}
			// Receipts for the first two (acknowledged before the stop)
			// and the rest come to alice.
			alice = dial(t, s)
			alice.connect("alice", false)
			var receipts []string
			for range n {
				p := alice.expect(mqtt.TypePublish)
				receipts = append(receipts, p.Topic)
				alice.puback(p.ID)
			}
			for i := range n {
				if want := fmt.Sprintf("u/alice/d/bob/m%d", i); !slices.Contains(receipts, want) {
					t.Fatalf("receipt %s missing from %v", want, receipts)
				}
			}

			carol = dial(t, s)
			if p := carol.connectWith(mqtt.Connect{ClientID: []byte("carol"), KeepAlive: 60}); !p.Present {
				t.Fatal("carol's persistent session not present after restart")
			}
			for _, want := range []string{"news/a", "news/r"} {
				p := carol.expect(mqtt.TypePublish)
				if p.Topic != want {
					t.Fatalf("carol got %s, want %s", p.Topic, want)
				}
				carol.puback(p.ID)
			}
			alice.publishAcked("news/b", "after restart")
			if p := carol.expect(mqtt.TypePublish); p.Topic != "news/b" {
				t.Fatalf("carol's subscription lost: got %s", p.Topic)
			} else {
				carol.puback(p.ID)
			}
			dave := dial(t, s)
			dave.connect("dave", false)
			dave.subscribe("news/r", 0)
			if p := dave.expect(mqtt.TypePublish); !p.Retain || p.Payload != "retained" {
				t.Fatalf("retained after restart: %+v", p)
			}
			dave.subscribe("p/bob", 0)
			if m := s.Groups().Members("team"); !slices.Equal(m, []string{"alice", "bob"}) {
				t.Fatalf("group team after restart: %v", m)
			}
			if m := s.Groups().Members("gone"); m != nil {
				t.Fatalf("group gone after restart: %v", m)
			}
			bob.conn.Close()
			if p := dave.expect(mqtt.TypePublish); p.Topic != "p/bob" || p.Payload != "online" {
				t.Fatalf("presence: %+v", p)
			}
			if p := dave.expect(mqtt.TypePublish); !strings.HasPrefix(p.Payload, "offline ") {
				t.Fatalf("presence: %+v", p)
			}
			for _, c := range []*rawClient{alice, carol, dave} {
				c.conn.Close()
			}
			waitFor(t, "all offline", func() bool { return s.Connections() == 0 })
			s.Close()

			// Everything acknowledged stays gone; bob's last seen stays.
			s = startDurable(t, dir, set)
			if n := s.InboxLen("bob") + s.InboxLen("alice") + s.InboxLen("carol"); n != 0 {
				t.Fatalf("%d acknowledged messages came back", n)
			}
			if online, last, known := s.reg.presence([]byte("bob")); online || !known || last == 0 {
				t.Fatalf("bob's presence after restart: online %v known %v last %d", online, known, last)
			}
		})
	}
}

// TestDurableCompaction: a log that outgrows the live state is compacted
// into a snapshot; disk use stays near the live data, and a restart from
// the snapshot plus the log after it restores exactly the live state.
func TestDurableCompaction(t *testing.T) {
	dir := t.TempDir()
	set := func(c *Config) { c.storeSegment, c.storeCompact, c.Fsync = 64<<10, 128<<10, wal.SyncNever }
	s := startDurable(t, dir, set)
	carol := dial(t, s)
	carol.connect("carol", true)
	carol.subscribe("keep/#", 1)
	carol.conn.Close()

	alice := dial(t, s)
	alice.connect("alice", false)
	bob := dial(t, s)
	bob.connect("bob", false)
	payload := strings.Repeat("x", 1000)
	alice.publishAcked("keep/r", "retained")
	alice.send(mqtt.AppendPublish(nil, "keep/r", []byte("retained"), 1, true, false, 999))
	alice.expect(mqtt.TypePuback)
	// 3,000 messages through bob's inbox, each acknowledged: ~3 MB of log
	// for no live state but the last ten, which bob leaves unacknowledged.
	for i := range 3000 {
		alice.publishAcked(fmt.Sprintf("u/bob/m%d", i), payload)
		p := bob.expect(mqtt.TypePublish)
		if i < 2990 {
			bob.puback(p.ID)
		}
		if i < 2990 {
			alice.puback(alice.expect(mqtt.TypePublish).ID) // the receipt
		}
	}
	// The compactor runs every second: wait until it has caught up with
	// the log written so far.
	waitFor(t, "a compaction that caught up", func() bool {
		return s.wal.Stats.Compactions.Load() > 0 && !s.wal.ShouldCompact()
	})
	alice.conn.Close()
	bob.conn.Close()
	waitFor(t, "all offline", func() bool { return s.Connections() == 0 })
	s.Close()
	var size int64
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		fi, _ := e.Info()
		size += fi.Size()
	}
	if size > 1<<20 {
		t.Fatalf("data dir holds %d bytes after compaction for ~3 MB written and ~15 KB live", size)
	}
	s = startDurable(t, dir, set)
	if got := s.InboxLen("bob"); got != 10 {
		t.Fatalf("bob's inbox after compaction and restart: %d, want 10", got)
	}
	if got := s.InboxLen("alice"); got != 0 {
		t.Fatalf("alice's inbox after compaction and restart: %d acknowledged receipts came back", got)
	}
	bob = dial(t, s)
	bob.connect("bob", false)
	for i := 2990; i < 3000; i++ {
		if p := bob.expect(mqtt.TypePublish); p.Topic != fmt.Sprintf("u/bob/m/alice/m%d", i) || !p.Dup {
			t.Fatalf("after compaction: %s dup %v, want m%d with DUP", p.Topic, p.Dup, i)
		}
	}
	carol = dial(t, s)
	if p := carol.connectWith(mqtt.Connect{ClientID: []byte("carol"), KeepAlive: 60}); !p.Present {
		t.Fatal("persistent session lost by compaction")
	}
	if p := carol.expect(mqtt.TypePublish); p.Topic != "keep/r" {
		t.Fatalf("carol: %s", p.Topic)
	}
	if payload, _, ok := s.tree.retained("keep/r"); !ok || string(payload) != "retained" {
		t.Fatal("retained message lost by compaction")
	}
}

// TestDurableDirLocked: one server per data dir; a second fails to start
// with a clear error and the first is unaffected.
func TestDurableDirLocked(t *testing.T) {
	dir := t.TempDir()
	s := startDurable(t, dir, nil)
	s2, err := New(Config{Addr: "127.0.0.1:0", Loops: 1, Auth: AuthLoopbackAnonymous, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	err = s2.Start()
	if err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("second server on %s: %v, want in use", dir, err)
	}
	s2.Close()
	c := dial(t, s)
	c.connect("alice", false)
	c.publishAcked("u/bob/x", "still serving")
}

// TestDurableRefusesCorruption: a record damaged in the middle of the log
// stops the start with the file and offset; Repair drops it and starts.
func TestDurableRefusesCorruption(t *testing.T) {
	dir := t.TempDir()
	s := startDurable(t, dir, nil)
	c := dial(t, s)
	c.connect("alice", false)
	for i := range 10 {
		c.publishAcked(fmt.Sprintf("u/bob/m%d", i), "payload-"+strings.Repeat("y", 50))
	}
	c.conn.Close()
	waitFor(t, "offline", func() bool { return s.Connections() == 0 })
	s.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
	slices.Sort(segs)
	seg := segs[0]
	b, _ := os.ReadFile(seg)
	i := strings.Index(string(b), "m/alice/m4")
	b[i] ^= 0xFF
	os.WriteFile(seg, b, 0o600)

	s2, _ := New(Config{Addr: "127.0.0.1:0", Loops: 1, Auth: AuthLoopbackAnonymous, DataDir: dir})
	err := s2.Start()
	if err == nil || !strings.Contains(err.Error(), seg) || !strings.Contains(err.Error(), "offset") {
		t.Fatalf("start on a corrupt log: %v, want an error naming %s and the offset", err, seg)
	}
	s2.Close()
	s = startDurable(t, dir, func(c *Config) { c.Repair = true })
	if got := s.InboxLen("bob"); got != 9 {
		t.Fatalf("after repair bob holds %d, want 9 (one record dropped)", got)
	}
	s.Close()
	s = startDurable(t, dir, nil) // repaired for good: compacted without it
	if got := s.InboxLen("bob"); got != 9 {
		t.Fatalf("second start after repair: %d, want 9", got)
	}
}
