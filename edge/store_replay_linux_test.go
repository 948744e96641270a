package edge

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/internal/wal"
)

// TestReplayKeepsPersistentGenericQueueUndated: a persistent
// session of a client whose id is not a profile id (here "dev:1") holds
// generic QoS 1 messages. Live, the inbox sweep never touches it (it was
// seen; its inbox has no date). After a restart finishReplay dates the
// inbox (cl.made = now) and the record has no last-seen time (recSeen is
// logged for profile ids only), so the sweep takes it for the inbox of a
// user who never connected and empties it InboxExpiry later.
func TestReplayKeepsPersistentGenericQueueUndated(t *testing.T) {
	dir := t.TempDir()
	clock := newTestClock(time.Unix(1_800_000_000, 0))
	set := hourExpiry(clock)
	s := startDurable(t, dir, set)
	dev := dial(t, s)
	dev.connect("dev:1", true)
	dev.subscribe("t/#", 1)
	dev.conn.Close()
	waitFor(t, "dev offline", func() bool { return s.Connections() == 0 })
	pub := dial(t, s)
	pub.connect("pub", false)
	pub.publishAcked("t/x", "queued for a persistent session")
	pub.conn.Close()
	waitFor(t, "offline", func() bool { return s.Connections() == 0 })
	s.sweep(1000) // starts the last-seen clock
	clock.Add(2 * time.Hour)
	s.sweep(1000)
	if n := s.InboxLen("dev:1"); n != 1 {
		t.Fatalf("live: the persistent session holds %d, want 1", n)
	}
	s.Close()

	s = startDurable(t, dir, set)
	if n := s.InboxLen("dev:1"); n != 1 {
		t.Fatalf("after the restart: %d, want 1", n)
	}
	clock.Add(2 * time.Hour)
	s.sweep(1000)
	if n := s.InboxLen("dev:1"); n != 1 {
		t.Errorf("after a restart the sweep emptied a persistent session's queue (%d left): live it never did", n)
	}
}

// TestReplayDatesInboxByLiveRecord: cl.made is the date of
// the record's first message; a record released (inbox purged) and made
// again later has a new date, and every put logs it. insertReplayed keeps
// the smallest made of all the puts it replays, including the puts of the
// earlier record (deleted since), so after a restart the inbox is dated
// from the old record and expires early.
func TestReplayDatesInboxByLiveRecord(t *testing.T) {
	dir := t.TempDir()
	clock := newTestClock(time.Unix(1_800_000_000, 0))
	set := hourExpiry(clock)
	s := startDurable(t, dir, set)
	alice := dial(t, s)
	alice.connect("alice", false)
	alice.publishAcked("u/ghost/m1", "first")
	if _, _, ok := s.PurgeInbox("ghost"); !ok {
		t.Fatal("purge")
	}
	alice.puback(alice.expect(mqtt.TypePublish).ID) // the purged notice
	clock.Add(50 * time.Minute)
	alice.publishAcked("u/ghost/m2", "second, 50 min later")
	alice.conn.Close()
	waitFor(t, "offline", func() bool { return s.Connections() == 0 })
	s.sweep(1000)
	clock.Add(20 * time.Minute) // 70 min after the first record, 20 after the second
	s.sweep(1000)
	if n := s.InboxLen("ghost"); n != 1 {
		t.Fatalf("live: ghost holds %d, want 1 (its inbox is 20 min old)", n)
	}
	s.Close()
	s = startDurable(t, dir, set)
	s.sweep(1000)
	clock.Add(time.Minute)
	s.sweep(1000)
	if n := s.InboxLen("ghost"); n != 1 {
		t.Errorf("after a restart ghost's 21 min old inbox expired (1 h expiry): dated from the purged record")
	}
}

// TestSnapshotKeepsRevivedLastSeen: writeSnapshot reads the clients, then
// the shards' last-seen tables. A user in a last-seen table whose record
// is made again meanwhile (a message for it, or a CONNECT) takes its
// last-seen time out of the table into the record, unlogged; if the
// record's index was passed already (a freed index is reused first), the
// snapshot holds no last-seen time for the user at all, and the recSeen
// that logged it was in a segment the compaction deletes. After the
// restart the user was never seen: presence says unknown, and the inbox
// is expired as the inbox of a user who never connected.
func TestSnapshotKeepsRevivedLastSeen(t *testing.T) {
	dir := t.TempDir()
	s := startDurable(t, dir, func(c *Config) { c.Fsync = wal.SyncNever })
	alice := dial(t, s)
	alice.connect("alice", false) // index 1
	bob := dial(t, s)
	bob.connect("bob", false) // index 2
	x := dial(t, s)
	x.connect("x1", true) // index 3: a persistent session, offline below
	x.conn.Close()
	bob.conn.Close()
	waitFor(t, "bob and x1 offline", func() bool { return s.Connections() == 1 })
	waitFor(t, "bob released", func() bool {
		cl := s.reg.lock([]byte("bob"), false)
		if cl != nil {
			cl.mu.Unlock()
		}
		return cl == nil
	})
	if _, seen, known := s.reg.presence([]byte("bob")); !known || seen == 0 {
		t.Fatalf("bob not in the last-seen table")
	}
	// Hold x1: the snapshot stops there, past bob's (free) index.
	held := s.reg.lock([]byte("x1"), false)
	done := make(chan error, 1)
	go func() { done <- s.compact() }()
	waitFor(t, "snapshot started", func() bool {
		m, _ := filepath.Glob(filepath.Join(dir, "snap-*.tmp"))
		return len(m) > 0
	})
	time.Sleep(200 * time.Millisecond)        // past index 2, waiting for x1
	alice.publishAcked("u/bob/m1", "for bob") // bob's record again, at index 2
	live := stateOf(s, "bob")
	held.mu.Unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if live.lastSeen == 0 || len(live.inbox) != 1 {
		t.Fatalf("live bob: %+v", live)
	}
	alice.conn.Close()
	waitFor(t, "offline", func() bool { return s.Connections() == 0 })
	s.Close()
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	t.Logf("data dir: %s", strings.Join(names, " "))
	s = startDurable(t, dir, func(c *Config) { c.Fsync = wal.SyncNever })
	if st := stateOf(s, "bob"); st.lastSeen != live.lastSeen {
		t.Errorf("bob after the restart: last seen %d, live %d (inbox %v)", st.lastSeen, live.lastSeen, st.inbox)
	}
}

// TestSnapshotInV5DisconnectWindow: a v5 DISCONNECT with Session
// Expiry 0 ends a persistent session while its connection is still open
// (handle5: persistent = false, a session record with persistent 0); the
// session's subscriptions and generic messages go only at OnClose
// (dropSession, nothing logged: replay of the session end drops them).
// A snapshot that reads the client between the two writes its logged
// generic entries (writeSnapshot writes every entry with a seq, persistent
// or not); if the session end was logged before the compaction's
// rotation, nothing after the snapshot drops them, and they come back
// after a restart for a client that has no session.
func TestSnapshotInV5DisconnectWindow(t *testing.T) {
	dir := t.TempDir()
	s := startDurable(t, dir, func(c *Config) { c.Fsync = wal.SyncNever })
	dev := dial5(t, s)
	if p := dev.connect(mqtt.Connect{ClientID: []byte("dev"), CleanSession: true}, mqtt.AppendU32Prop(nil, mqtt.PropSessionExpiry, 300)); p.Code != 0 {
		t.Fatalf("CONNACK %+v", p)
	}
	dev.subscribe("t/#", 1)
	pub := dial(t, s)
	pub.connect("pub", false)
	pub.publishAcked("t/x", "in flight to dev")
	dev.expect(mqtt.TypePublish) // not acknowledged
	dev.send(mqtt.AppendDisconnect5(nil, 0, mqtt.AppendU32Prop(nil, mqtt.PropSessionExpiry, 0)))
	dev.expectClosed()
	pub.conn.Close()
	waitFor(t, "offline", func() bool { return s.Connections() == 0 })
	if st := stateOf(s, "dev"); st.persistent || len(st.subs) != 0 || len(st.inbox) != 0 {
		t.Fatalf("dev live: %+v", st)
	}
	s.Close()
	recs := readRecords(t, dir)
	end := -1
	for i, r := range recs {
		f := r.Fields()
		if id, _ := f.Next(); r.Type == recSession && string(id) == "dev" {
			if p, _ := f.Next(); len(p) == 1 && p[0] == 0 {
				end = i
			}
		}
	}
	if end < 0 {
		t.Fatal("no session end for dev")
	}
	// The state in the window: every record up to the session end, and
	// what handle5 did with it (the drop waits for OnClose).
	s3 := startServer(t, nil)
	var rs replayState
	for _, r := range recs[:end] {
		if err := s3.apply(&rs, r); err != nil {
			t.Fatal(err)
		}
	}
	cl := s3.reg.lock([]byte("dev"), false)
	cl.persistent, cl.expiry = false, 0
	cl.mu.Unlock()
	// The real snapshot of that state.
	sdir := t.TempDir()
	l, err := wal.Open(wal.Options{Dir: sdir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Replay(func(wal.Record) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := l.Compact(s3.writeSnapshot); err != nil {
		t.Fatal(err)
	}
	l.Close()
	snap := readRecords(t, sdir)
	// Replay: the snapshot, then segment R (what was logged after the
	// session end: the rotation came after it).
	s2 := startServer(t, nil)
	rs = replayState{}
	for _, r := range append(snap, recs[end+1:]...) {
		if err := s2.apply(&rs, r); err != nil {
			t.Fatal(err)
		}
	}
	s2.finishReplay()
	if st := stateOf(s2, "dev"); st.persistent || len(st.subs) != 0 || len(st.inbox) != 0 {
		t.Errorf("dev replayed: %+v, live: no session, no subscription, no message", st)
	}
}

func readRecords(t *testing.T, dir string) []wal.Record {
	t.Helper()
	l, err := wal.Open(wal.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var recs []wal.Record
	if _, err := l.Replay(func(r wal.Record) error {
		r.Data = slices.Clone(r.Data)
		recs = append(recs, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return recs
}

// blockingCluster is stubCluster whose SendSync waits for release.
type blockingCluster struct {
	stubCluster
	entered chan struct{}
	release chan error
}

func (c blockingCluster) SendSync(string, []byte, string) error {
	c.entered <- struct{}{}
	return <-c.release
}

// TestCompactionDuringMoveAwayKeepsInbox: moveAway drops the durable
// entries it moves from memory, sends them, and logs their deletes only
// once the other node has them, so that "a crash before this moves them
// again" (the puts are still in the log). A compaction in between writes
// a snapshot without them and deletes the segments holding their puts: a
// kill -9 before the other node stored them (SendSync not yet returned)
// loses them on both nodes.
func TestCompactionDuringMoveAwayKeepsInbox(t *testing.T) {
	for _, compact := range []bool{false, true} {
		t.Run(fmt.Sprintf("compact=%v", compact), func(t *testing.T) {
			dir := t.TempDir()
			bc := blockingCluster{entered: make(chan struct{}), release: make(chan error)}
			s := startDurable(t, dir, func(c *Config) { c.Fsync = wal.SyncNever; c.Cluster = bc })
			alice := dial(t, s)
			alice.connect("alice", false)
			alice.publishAcked("u/bob/m1", "for bob")
			if n := s.InboxLen("bob"); n != 1 {
				t.Fatalf("bob holds %d", n)
			}
			moved := make(chan struct{})
			go func() { s.moveAway("bob", "b"); close(moved) }()
			<-bc.entered // sending to b; the entry is out of memory here
			if compact {
				if err := s.compact(); err != nil {
					t.Fatal(err)
				}
			}
			crash := copyDir(t, dir) // kill -9 now: b has not stored the batch
			bc.release <- nil
			<-moved
			s2 := startDurable(t, crash, func(c *Config) { c.Fsync = wal.SyncNever; c.Cluster = stubCluster{} })
			if n := s2.InboxLen("bob"); n != 1 {
				t.Errorf("after a kill -9 during the move bob holds %d here, want 1 (to move again): the message is on neither node", n)
			}
		})
	}
}
