package edge

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/edgedhq/edged/edge/mqtt"
)

// publishes builds n QoS 1 PUBLISH packets to fmt.Sprintf(topic, i).
func publishes(n, first int, topic, payload string) [][]byte {
	var msgs [][]byte
	for i := range n {
		msgs = append(msgs, mqtt.AppendPublish(nil, fmt.Sprintf(topic, i), []byte(payload), 1, false, false, uint16(first+i)))
	}
	return msgs
}

// held returns the entries and bytes held in id's inbox.
func held(s *Server, id string) (n, bytes int) {
	cl := s.reg.lock([]byte(id), false)
	if cl == nil {
		return 0, 0
	}
	defer cl.mu.Unlock()
	return cl.box().len(), cl.box().held()
}

// TestAckedNeverDropped: a direct message to a full inbox is acknowledged
// only while its inbox_full notice fits the sender's allowance (the inbox
// bound plus a quarter); past it the message is not acknowledged and the
// sender is closed (store_full), so every PUBACK stands for a stored copy
// or a stored notice.
func TestAckedNeverDropped(t *testing.T) {
	s := startServer(t, func(c *Config) { c.InboxMessages = 4 })
	z := dial(t, s)
	z.connect("zed", false)
	if acks, _, closed := pipeline(t, z, publishes(4, 1, "u/bob/m%d", "x"), 1); acks != 4 || closed {
		t.Fatalf("filling bob: %d acks, closed %v", acks, closed)
	}
	a := dial(t, s)
	a.connect("alice", false) // connected, never acknowledges her notices
	acks, _, closed := pipeline(t, a, publishes(20, 1, "u/bob/a%d", "x"), 1)
	if !closed || acks != 5 {
		t.Fatalf("%d acknowledged, closed %v; want the 5 whose notices fit alice's allowance, then closed", acks, closed)
	}
	waitFor(t, "store_full counted", func() bool { return s.CloseCount(ReasonStoreFull) == 1 })
	if n, _ := held(s, "alice"); n != 5 {
		t.Fatalf("alice holds %d notices, want 5 (one per acknowledged message)", n)
	}
	if n, _ := held(s, "bob"); n != 4 {
		t.Fatalf("bob holds %d, want 4", n)
	}
	if st := s.Stats(); st.NoticesDropped != 0 || st.InboxFull != 5 {
		t.Fatalf("notices dropped %d, inbox_full %d; want 0, 5", st.NoticesDropped, st.InboxFull)
	}
}

// TestGroupAckedNeverDropped: a group message whose notices for the
// members that cannot take it do not fit the sender is refused whole,
// before any member gets a copy.
func TestGroupAckedNeverDropped(t *testing.T) {
	s := startServer(t, func(c *Config) { c.InboxMessages = 4 })
	for _, u := range []string{"alice", "bob", "carol"} {
		if _, err := s.Groups().Add("team", u); err != nil {
			t.Fatal(err)
		}
	}
	z := dial(t, s)
	z.connect("zed", false)
	if acks, _, closed := pipeline(t, z, publishes(4, 1, "u/bob/m%d", "x"), 1); acks != 4 || closed {
		t.Fatalf("filling bob: %d acks, closed %v", acks, closed)
	}
	a := dial(t, s)
	a.connect("alice", false)
	// Four notices from direct messages to bob, then one from the first
	// group message (carol takes her copy): alice's allowance of 5 is used.
	msgs := append(publishes(4, 1, "u/bob/a%d", "x"), publishes(2, 5, "g/team/g%d", "x")...)
	acks, _, closed := pipeline(t, a, msgs, 1)
	if !closed || acks != 5 {
		t.Fatalf("%d acknowledged, closed %v; want 5, then closed", acks, closed)
	}
	waitFor(t, "store_full counted", func() bool { return s.CloseCount(ReasonStoreFull) == 1 })
	if n, _ := held(s, "carol"); n != 1 {
		t.Fatalf("carol holds %d group messages, want 1: the refused one must reach no member", n)
	}
	if n, _ := held(s, "alice"); n != 5 {
		t.Fatalf("alice holds %d notices, want 5", n)
	}
	if st := s.Stats(); st.NoticesDropped != 0 {
		t.Fatalf("notices dropped %d, want 0", st.NoticesDropped)
	}
}

// TestPresenceSubscribeBounded: SUBSCRIBE to p/<user> queues at most one
// pending presence entry per user, within the inbox bounds.
func TestPresenceSubscribeBounded(t *testing.T) {
	s := startServer(t, func(c *Config) { c.InboxMessages = 100 })
	for i := range 30 {
		m := dial(t, s)
		m.connect(fmt.Sprint("mallory", i), false)
		m.conn.Close()
	}
	waitFor(t, "the mallories offline", func() bool { return s.Connections() == 0 })
	subscribeAll := func(c *rawClient, packets int, filters []string) {
		t.Helper()
		var subs []mqtt.Subscription
		for _, f := range filters {
			subs = append(subs, mqtt.Subscription{Filter: f, QoS: 1})
		}
		for range packets {
			c.send(mqtt.AppendSubscribe(nil, c.nextID(), subs...))
		}
		for got := 0; got < packets; {
			if c.read().Type == mqtt.TypeSuback {
				got++
			}
		}
	}
	t.Run("one user", func(t *testing.T) {
		c := dial(t, s)
		c.connect("watcher", true)
		same := make([]string, 2000)
		for i := range same {
			same[i] = "p/mallory0"
		}
		subscribeAll(c, 20, same)
		// One pending per SUBSCRIBE at most (the one before may have been
		// sent meanwhile), not 40,000 nor the inbox bound of 100.
		if n, _ := held(s, "watcher"); n == 0 || n > 20 {
			t.Fatalf("watcher's inbox holds %d presence entries, want 1-20", n)
		}
	})
	t.Run("inbox bound", func(t *testing.T) {
		s := startServer(t, func(c *Config) { c.InboxMessages = 10 })
		var many []string
		for i := range 30 {
			m := dial(t, s)
			m.connect(fmt.Sprint("mallory", i), false)
			m.conn.Close()
			many = append(many, fmt.Sprint("p/mallory", i))
		}
		waitFor(t, "the mallories offline", func() bool { return s.Connections() == 0 })
		c := dial(t, s)
		c.connect("watcher2", true)
		subscribeAll(c, 3, many) // 90 presence entries asked for, never acknowledged
		if n, _ := held(s, "watcher2"); n != 10 {
			t.Fatalf("watcher2's inbox holds %d presence entries, want the bound of 10", n)
		}
	})
}

// TestLongIDsCounted: long client ids and persistent sessions count in
// the store; past the cap CONNECT gets 0x03 (server unavailable), counted
// as store_full; ending the sessions gives every byte back.
func TestLongIDsCounted(t *testing.T) {
	const capBytes = 2 << 20
	s := startServer(t, func(c *Config) { c.MaxPacketSize, c.StoreMaxBytes = 64<<10, capBytes })
	per := longIDCost(65000) + sessionOverhead
	var ok []string
	refused := 0
	for i := range 200 {
		id := fmt.Sprintf("%05d", i) + strings.Repeat("x", 65000-5)
		c := dial(t, s)
		p := c.connectWith(mqtt.Connect{ClientID: []byte(id), KeepAlive: 60})
		switch p.Code {
		case mqtt.ConnAccepted:
			ok = append(ok, id)
		case mqtt.ConnRefusedServerUnavailable:
			refused++
		default:
			t.Fatalf("CONNACK %d", p.Code)
		}
		c.conn.Close()
	}
	if len(ok) == 0 || refused == 0 || int64(len(ok)) != capBytes/per {
		t.Fatalf("%d accepted, %d refused; want %d accepted (cap %d / %d each)", len(ok), refused, capBytes/per, capBytes, per)
	}
	waitFor(t, "all offline", func() bool { return s.Connections() == 0 })
	if h := s.held.Load(); h != int64(len(ok))*per {
		t.Fatalf("store holds %d, want %d", h, int64(len(ok))*per)
	}
	if st := s.Stats(); st.StoreFull != uint64(refused) {
		t.Fatalf("store_full %d, want %d", st.StoreFull, refused)
	}
	for _, id := range ok {
		c := dial(t, s)
		if p := c.connectWith(mqtt.Connect{ClientID: []byte(id), CleanSession: true, KeepAlive: 60}); p.Code != 0 {
			t.Fatalf("clean connect: %d", p.Code)
		}
		c.conn.Close()
	}
	waitFor(t, "store empty", func() bool { return s.held.Load() == 0 && s.Clients() == 0 })
	if b := []byte(ok[0]); hashID(b) != hashIDString(ok[0]) {
		t.Fatal("hashID and hashIDString disagree: release would miss the record")
	}
}

// TestPurgeOnlineKeepsInflight: purging a connected user's inbox keeps
// what is in flight, so its PUBACK still sends the delivered receipt;
// only the unsent rest is purged and notified.
func TestPurgeOnlineKeepsInflight(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Inflight = 2 })
	b := dial(t, s)
	b.connect("bob", false)
	a := dial(t, s)
	a.connect("alice", false)
	for i := range 3 {
		a.publish(fmt.Sprint("u/bob/m", i), "x", 1)
		a.expect(mqtt.TypePuback)
	}
	p0, p1 := b.expect(mqtt.TypePublish), b.expect(mqtt.TypePublish)
	n, _, ok := s.PurgeInbox("bob")
	if !ok || n != 1 {
		t.Fatalf("purged %d (ok %v), want 1: the two in flight stay", n, ok)
	}
	if n, _ := held(s, "bob"); n != 2 {
		t.Fatalf("bob holds %d, want the 2 in flight", n)
	}
	b.puback(p0.ID)
	b.puback(p1.ID)
	got := map[string]string{}
	for range 3 {
		p := a.expect(mqtt.TypePublish)
		got[p.Topic] = p.Payload
		a.puback(p.ID)
	}
	want := map[string]string{"u/alice/d/bob/m0": "", "u/alice/d/bob/m1": "", "u/alice/e/bob/m2": "purged"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("alice got %v, want %v", got, want)
	}
	waitFor(t, "inboxes empty", func() bool { return s.InboxLen("bob")+s.InboxLen("alice") == 0 })
}

// TestTrimRepairs: an empty inbox that holds bytes (an accounting bug) is
// repaired and counted, not a panic on an event loop.
func TestTrimRepairs(t *testing.T) {
	var total atomic.Int64
	total.Store(300)
	q := &inbox{bytes: 100, acct: &total}
	before := acctRepairs.Load()
	q.trim()
	if q.bytes != 0 || total.Load() != 200 || acctRepairs.Load() != before+1 {
		t.Fatalf("after trim: bytes %d, total %d, repairs +%d; want 0, 200, +1", q.bytes, total.Load(), acctRepairs.Load()-before)
	}
}

// TestStoreBytesReturnToZero: after mixed load (retained churn, a
// persistent session's queue, a clean-session takeover, a purge while
// online, long ids) and everyone leaving with everything acknowledged, the
// store total is exactly 0 and nothing needed repair.
func TestStoreBytesReturnToZero(t *testing.T) {
	s := startServer(t, nil)
	repairs := acctRepairs.Load()
	pub := dial(t, s)
	pub.connect("pub", false)
	for i := range 50 {
		pub.send(mqtt.AppendPublish(nil, fmt.Sprint("ret/", i), []byte(strings.Repeat("v", i*100)), 1, true, false, pub.nextID()))
		pub.expect(mqtt.TypePuback)
	}
	for i := range 50 {
		pub.send(mqtt.AppendPublish(nil, fmt.Sprint("ret/", i), nil, 1, true, false, pub.nextID()))
		pub.expect(mqtt.TypePuback)
	}

	// A persistent session's queue, drained in part, then ended by a
	// clean-session takeover.
	sl := dial(t, s)
	sl.connect("sleeper", true)
	sl.subscribe("news/#", 1)
	sl.conn.Close()
	waitFor(t, "sleeper offline", func() bool { return s.Connections() == 1 })
	for range 10 {
		pub.publish("news/x", strings.Repeat("n", 500), 1)
		pub.expect(mqtt.TypePuback)
	}
	s2 := dial(t, s)
	s2.connect("sleeper", true)
	for i := range 10 {
		if p := s2.expect(mqtt.TypePublish); i < 5 {
			s2.puback(p.ID)
		}
	}
	s3 := dial(t, s)
	s3.connect("sleeper", false) // clean session: takes over and ends it
	s2.expectClosed()

	// A long id with a persistent session, ended by a clean one.
	long := strings.Repeat("ü", 200)
	l := dial(t, s)
	l.connectWith(mqtt.Connect{ClientID: []byte(long), KeepAlive: 60})
	l.conn.Close()
	l = dial(t, s)
	l.connectWith(mqtt.Connect{ClientID: []byte(long), CleanSession: true, KeepAlive: 60})

	// A purge while bob is online, with messages in flight.
	b := dial(t, s)
	b.connect("bob", false)
	a := dial(t, s)
	a.connect("alice", false)
	for i := range 40 {
		a.publish(fmt.Sprint("u/bob/m", i), "hello", 1)
		a.expect(mqtt.TypePuback)
	}
	var ids []uint16
	for range DefaultInflight {
		ids = append(ids, b.expect(mqtt.TypePublish).ID)
	}
	if n, _, _ := s.PurgeInbox("bob"); n != 40-DefaultInflight {
		t.Fatalf("purged %d, want %d", n, 40-DefaultInflight)
	}
	for _, id := range ids {
		b.puback(id)
	}
	for range 40 { // receipts and purged notices
		a.puback(a.expect(mqtt.TypePublish).ID)
	}

	for _, c := range []*rawClient{pub, s3, l, b, a} {
		c.send(mqtt.AppendDisconnect(nil))
		c.conn.Close()
	}
	waitFor(t, "everyone offline", func() bool { return s.Connections() == 0 })
	waitFor(t, "store total back to 0", func() bool { return s.held.Load() == 0 })
	if s.Clients() != 0 || acctRepairs.Load() != repairs {
		t.Fatalf("clients %d, repairs +%d; want 0, 0", s.Clients(), acctRepairs.Load()-repairs)
	}
}
