package edge

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgedhq/edged/internal/wal"
)

// TestSnapshotDuringLinkCommit: the consumer stores a batch on a link
// (records, then the link record, then the commit) while a compaction
// writes its fuzzy snapshot. If the snapshot reads the inboxes before the
// batch's records are applied and the link table after the batch is
// marked, it holds "seq 2 stored" without the records, which are only in
// the new segment's unwritten buffer. A kill -9 before the commit: the
// sender got no reply, times out and sends the batch to the stream
// (JetStream acks it: the PUBACK goes); the restarted destination takes
// the stream copy for a duplicate and drops it: an acknowledged message
// lost.
func TestSnapshotDuringLinkCommit(t *testing.T) {
	dir := t.TempDir()
	mod := func(c *Config) { c.Fsync = wal.SyncNever; c.Cluster = stubCluster{} }
	s := startDurable(t, dir, mod)
	n := 0
	batch := func(link string, seq uint64, fast bool) Batch {
		n++
		return aliceToBob(n, link, seq, fast)
	}
	newLS := func() *loopState {
		ls := &loopState{cl: newClusterLoop(false)}
		ls.cl.remote, ls.cl.loop = true, true
		return ls
	}
	const l = "a/boot1/0"
	if err := s.deliverBatches(newLS(), []Batch{batch(l, 1, true)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testSnapshotHook, testLinkCommitHook = nil, nil })
	mid, goOn := make(chan struct{}), make(chan struct{})
	testSnapshotHook = func() { close(mid); <-goOn }
	marked, release := make(chan struct{}), make(chan struct{})
	testLinkCommitHook = func() { close(marked); <-release }
	compacted := make(chan error, 1)
	go func() { compacted <- s.compact() }()
	<-mid // the snapshot has read the inboxes
	delivered := make(chan error, 1)
	go func() { delivered <- s.deliverBatches(newLS(), []Batch{batch(l, 2, true)}) }()
	<-marked // seq 2's records applied and its link marked, not committed
	close(goOn)
	if err := <-compacted; err != nil {
		t.Fatal(err)
	}
	crash := copyDir(t, dir) // kill -9 now: no reply was sent
	close(release)
	if err := <-delivered; err != nil {
		t.Fatal(err)
	}
	testSnapshotHook, testLinkCommitHook = nil, nil
	s2 := startDurable(t, crash, mod)
	// The sender's fast request timed out: seq 2 comes from the stream.
	if err := s2.deliverBatches(newLS(), []Batch{batch(l, 2, false)}); err != nil {
		t.Fatal(err)
	}
	if got := s2.InboxLen("bob"); got != 2 {
		t.Errorf("after a kill -9 during a snapshot bob holds %d, want 2: batch 2 (acknowledged through the stream) was taken for a duplicate", got)
	}
}

// TestIdleLinkPruned: a link unused for linkIdle leaves the snapshot and
// the table in memory too (every sender start makes new links: kept in
// memory, the table grew with each while the destination ran).
func TestIdleLinkPruned(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Now().Unix())
	s := startDurable(t, t.TempDir(), func(c *Config) {
		c.Fsync = wal.SyncNever
		c.Cluster = stubCluster{}
		c.Now = func() time.Time { return time.Unix(clock.Load(), 0) }
	})
	ls := &loopState{cl: newClusterLoop(false)}
	ls.cl.remote, ls.cl.loop = true, true
	b := []byte{'D', 'm'}
	for _, f := range []string{"bob", "alice", "", "m1", "hi", ""} {
		b = appendField(b, []byte(f))
	}
	if err := s.deliverBatches(ls, []Batch{{Data: b, Link: "a/boot1/0", Seq: 1, Fast: true}}); err != nil {
		t.Fatal(err)
	}
	clock.Add(linkIdle + 1)
	if err := s.compact(); err != nil {
		t.Fatal(err)
	}
	s.links.mu.Lock()
	n := len(s.links.m)
	s.links.mu.Unlock()
	if n != 0 {
		t.Errorf("%d links in memory after a compaction, want the idle one gone", n)
	}
}
