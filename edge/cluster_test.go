package edge

import (
	"bytes"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
)

// TestClusterLoopTicks walks the held-PUBACK accounting of a loop's
// cluster batches: a tick is stored once no batch unsent or in flight holds
// it or an earlier one; a refused batch marks its ticks refused.
func TestClusterLoopTicks(t *testing.T) {
	c := newClusterLoop(true)
	put := func(node string, rec string) {
		b := c.gather(node, len(rec))
		c.batches[node] = append(b, rec...)
	}
	send := func(node string) (id uint64) { // what flushCluster does for one batch
		q := c.dest[node]
		sb, ok := c.next(node, q)
		if !ok {
			t.Fatalf("nothing to send for %s", node)
		}
		c.nextFlight++
		f := &flight{node: node, min: sb.min, max: sb.max}
		c.flights[c.nextFlight] = f
		q.open = append(q.open, f)
		q.flying++
		return c.nextFlight
	}
	if c.low() != math.MaxUint64 {
		t.Fatal("an empty loop holds a tick")
	}
	put("b", "r1") // tick 1
	put("c", "r2")
	if c.low() != 1 {
		t.Fatalf("low %d, want 1", c.low())
	}
	b1, c1 := send("b"), send("c")
	c.tick++         // tick 2
	put("b", "r3")   // gathers while b's first batch flies
	c.done(b1, true) // b's tick-1 batch stored; c's still flying
	if c.low() != 1 {
		t.Fatalf("low %d, want 1 (c's batch of tick 1 flies)", c.low())
	}
	c.done(c1, true)
	if c.low() != 2 {
		t.Fatalf("low %d, want 2 (b's gathering batch)", c.low())
	}
	b2 := send("b")
	c.tick++ // tick 3
	c.done(b2, false)
	if c.low() != math.MaxUint64 || !c.refused(2) || c.refused(1) || c.refused(3) {
		t.Fatalf("after a refused tick-2 batch: low %d, refused(1,2,3) %v %v %v", c.low(), c.refused(1), c.refused(2), c.refused(3))
	}
	// A batch past maxBatch is sealed, and the next one starts at the
	// current tick.
	big := string(bytes.Repeat([]byte{'x'}, maxBatch-2))
	put("b", big)
	c.tick++ // tick 4
	put("b", "more")
	if q := c.dest["b"]; len(q.sealed) != 1 || q.sealed[0].min != 3 || q.min != 4 {
		t.Fatalf("sealing: %d sealed, first min %d, gathering from %d", len(q.sealed), q.sealed[0].min, q.min)
	}
	var sent [][]byte
	c.drain(func(node string, b []byte) error { sent = append(sent, b); return nil })
	if len(sent) != 2 || len(sent[0]) != len(big) || string(sent[1]) != "more" || c.low() != math.MaxUint64 {
		t.Fatalf("drain sent %d batches, low %d", len(sent), c.low())
	}
}

// TestBatchFields: fields reads what appendField wrote and refuses a
// truncated or overlong record.
func TestBatchFields(t *testing.T) {
	b := appendField(appendField(appendField(nil, []byte("alice")), nil), bytes.Repeat([]byte{7}, 300))
	var f [3][]byte
	rest, err := fields(b, f[:])
	if err != nil || len(rest) != 0 || string(f[0]) != "alice" || len(f[1]) != 0 || len(f[2]) != 300 {
		t.Fatalf("fields: %q %v", f, err)
	}
	for n := range len(b) - 1 {
		if _, err := fields(b[:n], f[:]); err == nil {
			t.Fatalf("truncated at %d: no error", n)
		}
	}
	if _, err := fields([]byte{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}, f[:1]); err == nil {
		t.Fatal("a length past the batch: no error")
	}
}

// FuzzBatchFields: no input makes fields panic or read past its input.
func FuzzBatchFields(f *testing.F) {
	f.Add(appendField(appendField(nil, []byte("u")), []byte("payload")))
	f.Fuzz(func(t *testing.T, b []byte) {
		var dst [6][]byte
		rest, err := fields(b, dst[:])
		if err == nil && len(rest) > len(b) {
			t.Fatal("rest longer than the input")
		}
	})
}

// stubCluster is a Cluster with no other node: only moveAway is exercised.
type stubCluster struct{}

func (stubCluster) Node() string                                  { return "a" }
func (stubCluster) Home([]byte) (string, bool)                    { return "", false }
func (stubCluster) Claim(string)                                  {}
func (stubCluster) Users() int                                    { return 0 }
func (stubCluster) Send(_ string, _ int, _ []byte, d func(error)) { d(nil) }
func (stubCluster) SendSync(string, []byte, string) error         { return nil }
func (stubCluster) Broadcast([]byte)                              {}
func (stubCluster) SetGroup(bool, string, string) error           { return nil }
func (stubCluster) Run(ClusterHooks) error                        { return nil }
func (stubCluster) Close() error                                  { return nil }

// TestMoveAwayEndsCleanSession: a connected clean-session user whose
// directory entry moves to another node, holding a will or an inbound QoS 2
// id awaiting PUBREL, is taken over here without a panic (release used to
// find the will or the QoS 2 state and panic on the cluster goroutine),
// the will is not sent, and the record is freed.
func TestMoveAwayEndsCleanSession(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(c *rawClient)
	}{
		{"will", func(c *rawClient) { c.connectWith(mqttConnectWill("alice", "w/alice", "gone")) }},
		{"qos2", func(c *rawClient) {
			c.connect("alice", false)
			c.publish("x/y", "p", 2)
			c.expect(mqtt.TypePubrec)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, func(c *Config) { c.Cluster = stubCluster{} })
			w := dial(t, s)
			w.connect("watcher", false)
			w.subscribe("w/#", 1)
			a := dial(t, s)
			tc.open(a)
			s.moveAway("alice", "b")
			if _, err := a.tryRead(5 * time.Second); err == nil {
				// a DISCONNECT (v5) or nothing: then the close
				a.tryRead(5 * time.Second)
			}
			waitFor(t, "the record freed", func() bool { return s.Clients() == 1 })
			if p, err := w.tryRead(300 * time.Millisecond); err == nil {
				t.Fatalf("watcher got %v %q: the will of a session that moved on was sent", p.Type, p.Topic)
			}
		})
	}
}

// TestDeliverBatchLinks walks the destination's side of the links: a batch
// is stored once (a copy with a Seq stored already is dropped, as when a
// fast-path reply was lost and the sender sent it to the stream), a
// fast-path batch that does not follow its link's last is refused (its
// predecessor is in the stream), a stream batch is stored past a hole (a
// predecessor refused to its publisher) and a late predecessor is stored
// too (not taken for a duplicate: the stream redelivers out of order
// after a consumer failed), a batch on no link is always stored, and the
// links' state survives a restart and a compaction.
func TestDeliverBatchLinks(t *testing.T) {
	dir := t.TempDir()
	start := func() *Server { return startDurable(t, dir, func(c *Config) { c.Cluster = stubCluster{} }) }
	s := start()
	n := 0
	batch := func(link string, seq uint64, fast bool) Batch {
		n++
		return aliceToBob(n, link, seq, fast)
	}
	deliver := func(s *Server, want int, bs ...Batch) []Batch {
		t.Helper()
		ls := &loopState{cl: newClusterLoop(false)}
		ls.cl.remote, ls.cl.loop = true, true
		if err := s.deliverBatches(ls, bs); err != nil {
			t.Fatal(err)
		}
		if got := s.InboxLen("bob"); got != want {
			t.Fatalf("bob's inbox holds %d, want %d", got, want)
		}
		return bs
	}
	const l = "a/boot1/0"
	deliver(s, 1, batch(l, 1, true))
	deliver(s, 1, batch(l, 1, false)) // the stream's copy of a stored batch (a lost reply)
	if bs := deliver(s, 1, batch(l, 3, true)); !bs[0].Refused {
		t.Fatal("a fast-path batch after a gap was not refused")
	}
	// In one call: 2 from the stream, then 3 (fast) follows it.
	if bs := deliver(s, 3, batch(l, 2, false), batch(l, 3, true)); bs[0].Refused || bs[1].Refused {
		t.Fatal("a fast-path batch following a stream batch of the same call was refused")
	}
	deliver(s, 4, batch(l, 6, false)) // the stream past a hole (4 and 5 not here)
	deliver(s, 5, batch("", 0, true)) // on no link: stored
	deliver(s, 6, batch("a/boot2/0", 1, true))
	s.Close()

	runs := func(s *Server, link string) []seqRange {
		s.links.mu.Lock()
		defer s.links.mu.Unlock()
		if st := s.links.m[link]; st != nil {
			return append([]seqRange(nil), st.runs...)
		}
		return nil
	}
	s = start()
	if r := runs(s, l); fmt.Sprint(r) != "[{1 3} {6 6}]" {
		t.Fatalf("after a restart: %v", r)
	}
	deliver(s, 7, batch(l, 6, false), batch(l, 5, false)) // 6 again; 5, late
	deliver(s, 8, batch(l, 7, true))                      // follows 6
	deliver(s, 9, batch(l, 4, false))
	if err := s.compact(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = start()
	if r := runs(s, l); fmt.Sprint(r) != "[{1 7}]" || len(runs(s, "a/boot2/0")) != 1 {
		t.Fatalf("after a compaction and a restart: %v", r)
	}
	deliver(s, 9, batch(l, 4, false))
	deliver(s, 10, batch(l, 8, true))
}

// TestLinkRuns: a link's stored Seqs as ranges: adjacent ones merge, a
// range fills a hole, and past maxRuns the first hole is taken as stored.
func TestLinkRuns(t *testing.T) {
	var st linkState
	for _, r := range []seqRange{{1, 1}, {2, 2}, {5, 5}, {9, 10}, {4, 4}, {3, 3}, {12, 12}, {6, 8}} {
		st.add(r.lo, r.hi)
	}
	if fmt.Sprint(st.runs) != "[{1 10} {12 12}]" || !st.has(7) || st.has(11) || st.last() != 12 {
		t.Fatalf("runs %v", st.runs)
	}
	for i := range uint64(maxRuns) {
		st.add(14+2*i, 14+2*i) // a hole before each
	}
	// Two holes too many: 11 and 13 taken as stored, 15 still one.
	if len(st.runs) != maxRuns || st.runs[0] != (seqRange{1, 14}) || !st.has(13) || st.has(15) {
		t.Fatalf("%d runs, first %v", len(st.runs), st.runs[0])
	}
}

// TestDeliverBatchPrev: a fast-path batch whose sender says the batches
// before it failed on both paths (Prev below Seq-1: never acknowledged)
// is stored if Prev is, not refused as a gap: refused, it would go to the
// stream, and while the stream fails (no quorum, a leader election) every
// later batch of the link would fail with it although the fast path works.
func TestDeliverBatchPrev(t *testing.T) {
	s := startDurable(t, t.TempDir(), func(c *Config) { c.Cluster = stubCluster{} })
	n := 0
	batch := func(seq, prev uint64) Batch {
		n++
		b := []byte{'D', 'm'}
		for _, f := range []string{"bob", "alice", "", fmt.Sprintf("m%d", n), "hi", ""} {
			b = appendField(b, []byte(f))
		}
		return Batch{Data: b, Link: "a/boot1/0", Seq: seq, Prev: prev, Fast: true}
	}
	deliver := func(want int, refused bool, bs ...Batch) {
		t.Helper()
		ls := &loopState{cl: newClusterLoop(false)}
		ls.cl.remote, ls.cl.loop = true, true
		if err := s.deliverBatches(ls, bs); err != nil {
			t.Fatal(err)
		}
		if got := s.InboxLen("bob"); got != want || bs[len(bs)-1].Refused != refused {
			t.Fatalf("bob holds %d, want %d; refused %v, want %v", got, want, bs[len(bs)-1].Refused, refused)
		}
	}
	deliver(1, false, batch(1, 0))
	deliver(1, true, batch(4, 3))  // 2 and 3 not here: a gap
	deliver(2, false, batch(4, 1)) // 2 and 3 failed at the sender
	deliver(2, true, batch(6, 3))  // 3 is not stored
	deliver(3, false, batch(6, 4))
	deliver(3, true, batch(5, 4)) // 6 is stored: 5 would come after it
	deliver(5, false, batch(8, 0), batch(9, 8))
}

// aliceToBob is a batch of link seq holding one direct message m<n> from
// alice to bob, as deliverBatches receives it.
func aliceToBob(n int, link string, seq uint64, fast bool) Batch {
	b := []byte{'D', 'm'}
	for _, f := range []string{"bob", "alice", "", fmt.Sprintf("m%d", n), "hi", ""} {
		b = appendField(b, []byte(f))
	}
	return Batch{Data: b, Link: link, Seq: seq, Prev: seq - 1, Fast: fast}
}
