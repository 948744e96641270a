package edge

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
)

// TestInboxAccounting: an inbox counts the bytes its entries hold (the
// pool's size class, or whole pages above it), not the bytes they use, and
// feeds every change into the store total.
func TestInboxAccounting(t *testing.T) {
	for _, tc := range []struct{ n, cap int }{
		{1, 64}, {64, 64}, {65, 128}, {1000, 1024}, {33 << 10, 64 << 10}, {256 << 10, 256 << 10},
		{256<<10 + 1, 512 << 10}, {600 << 10, 600 << 10}, {600<<10 + 1, 600<<10 + 8192},
	} {
		if got := bufCap(tc.n); got != tc.cap {
			t.Errorf("bufCap(%d) = %d, want %d", tc.n, got, tc.cap)
		}
		if b := getBuf(tc.n); bufCap(cap(*b)) != tc.cap {
			t.Errorf("getBuf(%d) has cap %d, held as %d, want %d", tc.n, cap(*b), bufCap(cap(*b)), tc.cap)
		}
	}
	var total atomic.Int64
	q := &inbox{acct: &total}
	want := 0
	sizes := []int{10, 100, 33 << 10, 1000, 300 << 10}
	for i, n := range sizes {
		b := getBuf(n)
		*b = append(*b, make([]byte, n)...)
		flags := uint8(0)
		if i%2 == 0 {
			flags = fDurable
		}
		q.push(entry{buf: b, flags: flags})
		want += bufCap(n) + entryOverhead
		if i == 0 {
			want += inboxOverhead
		}
		if q.held() != want || total.Load() != int64(want) {
			t.Fatalf("after %d pushes: held %d, total %d, want %d", i+1, q.held(), total.Load(), want)
		}
	}
	if used := 10 + 100 + 33<<10 + 1000 + 300<<10; want < used+used/2 {
		t.Fatalf("held %d for %d used: the 33 KiB and 300 KiB messages must count their 64 KiB and 512 KiB buffers", want, used)
	}
	// full: the next entry's held size must fit.
	if q.full(100, want+heldSize(100), 100) || !q.full(100, want+heldSize(100)-1, 100) || !q.full(len(sizes), 1<<30, 1) {
		t.Fatalf("full() disagrees with held %d", want)
	}
	if (*inbox)(nil).full(1, heldSize(100)+inboxOverhead, 100) || !(*inbox)(nil).full(1, heldSize(100)+inboxOverhead-1, 100) {
		t.Fatal("an empty inbox must count its overhead")
	}
	q.remove(1) // 100 bytes: 128 class
	want -= 128 + entryOverhead
	if q.held() != want || total.Load() != int64(want) {
		t.Fatalf("after remove: held %d, total %d, want %d", q.held(), total.Load(), want)
	}
	q.dropGeneric() // 1000 bytes, non-durable
	want -= 1024 + entryOverhead
	if q.len() != 3 || q.held() != want || total.Load() != int64(want) {
		t.Fatalf("after dropGeneric: len %d held %d total %d, want 3, %d", q.len(), q.held(), total.Load(), want)
	}
	for q.len() > 0 {
		q.remove(0)
	}
	if q.held() != 0 || total.Load() != 0 {
		t.Fatalf("empty inbox holds %d, total %d", q.held(), total.Load())
	}
}

// pipeline sends the PUBLISH packets in batches of batch and reads until
// the connection closes or every packet is answered; it returns the number
// of PUBACKs and of other PUBLISHes (notices) received, and whether the
// server closed the connection.
func pipeline(t *testing.T, c *rawClient, msgs [][]byte, batch int) (acks, notices int, closed bool) {
	t.Helper()
	for i := 0; i < len(msgs) && !closed; i += batch {
		var b []byte
		n := 0
		for _, m := range msgs[i:min(i+batch, len(msgs))] {
			b = append(b, m...)
			n++
		}
		if _, err := c.conn.Write(b); err != nil {
			return acks, notices, true
		}
		for got := 0; got < n; {
			p, err := c.tryRead(10e9)
			if err != nil {
				closed = true
				break
			}
			switch p.Type {
			case mqtt.TypePuback:
				acks++
				got++
			case mqtt.TypePublish:
				notices++
			default:
				t.Fatalf("unexpected %v", p.Type)
			}
		}
	}
	return acks, notices, closed
}

func TestInboxBoundCountsBytesHeld(t *testing.T) {
	s := startServer(t, func(c *Config) { c.MaxPacketSize, c.InboxBytes = 64<<10, 1<<20 })
	a := dial(t, s)
	a.connect("alice", false)
	payload := strings.Repeat("x", 33<<10) // held in a 64 KiB buffer
	var msgs [][]byte
	for i := range 40 {
		msgs = append(msgs, mqtt.AppendPublish(nil, fmt.Sprint("u/bob/m", i), []byte(payload), 1, false, false, uint16(i+1)))
	}
	acks, _, closed := pipeline(t, a, msgs, 40)
	if closed || acks != 40 {
		t.Fatalf("acks %d, closed %v: every message is acknowledged", acks, closed)
	}
	want := (1<<20 - inboxOverhead) / (64<<10 + entryOverhead) // 15, not the 31 that fit by length
	if n := s.InboxLen("bob"); n != want {
		t.Fatalf("bob's inbox holds %d, want %d", n, want)
	}
	// alice never acknowledges, so every notice stays in her inbox, those
	// the pipeline already read included (counting both raced with the
	// notices' delivery on a loaded machine).
	waitFor(t, "inbox_full notices", func() bool { return s.InboxLen("alice") == 40-want })
}

// TestNewInboxRate is the 8.4M-inbox attack in bounded form: one connection
// spraying messages at never-seen users is closed at the new-inbox rate;
// what it had been acknowledged stays; messages to users the server has
// seen are not limited.
//
// The source address's bucket runs on Config.Now, frozen here, so the
// counts are exact whatever the machine's load.
func TestNewInboxRate(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	s := startServer(t, func(c *Config) {
		c.NewInboxRate, c.NewInboxBurst = 5, 50
		c.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	})
	check := bystanders(t, s)
	before := s.Clients()
	c := dial(t, s)
	c.connect("spray", false)
	var msgs [][]byte
	for i := range 2000 {
		msgs = append(msgs, mqtt.AppendPublish(nil, fmt.Sprintf("u/never-%d/m", i), []byte("x"), 1, false, false, uint16(i+1)))
	}
	acks, _, closed := pipeline(t, c, msgs, 100)
	if !closed {
		t.Fatal("the sprayer was not closed")
	}
	waitFor(t, "new_inbox_rate counted", func() bool { return s.CloseCount(ReasonNewInboxRate) == 1 })
	if acks != 50 {
		t.Fatalf("%d messages acknowledged, want the burst of 50 (the source bucket's clock stands still)", acks)
	}
	waitFor(t, "one inbox per acknowledged message", func() bool { return s.Clients() == before+int64(acks) })
	for i := range acks {
		if n := s.InboxLen(fmt.Sprintf("never-%d", i)); n != 1 {
			t.Fatalf("acknowledged message %d: inbox holds %d", i, n)
		}
	}
	check()

	// Reconnecting gives no fresh allowance: the source address's bucket
	// is as empty as the connection's was.
	c = dial(t, s)
	c.connect("spray2", false)
	for i := range msgs {
		msgs[i] = mqtt.AppendPublish(nil, fmt.Sprintf("u/again-%d/m", i), []byte("x"), 1, false, false, uint16(i+1))
	}
	acks2, _, closed := pipeline(t, c, msgs, 100)
	if !closed || acks2 != 0 {
		t.Fatalf("after reconnecting: %d acknowledged, closed %v; want none, then closed", acks2, closed)
	}
	check()
	// Two seconds later the source has 10 tokens at 5/s.
	clock.Add(int64(2 * time.Second))
	c = dial(t, s)
	c.connect("spray3", false)
	for i := range msgs {
		msgs[i] = mqtt.AppendPublish(nil, fmt.Sprintf("u/later-%d/m", i), []byte("x"), 1, false, false, uint16(i+1))
	}
	if acks3, _, closed := pipeline(t, c, msgs, 100); !closed || acks3 != 10 {
		t.Fatalf("2 s later: %d acknowledged, closed %v; want 10, then closed", acks3, closed)
	}
	check()

	// Users that have connected before are not new.
	for i := range 100 {
		u := dial(t, s)
		u.connect(fmt.Sprint("known-", i), false)
		u.conn.Close()
	}
	waitFor(t, "known users offline", func() bool { return s.Connections() == 2 })
	c = dial(t, s)
	c.connect("spray", false)
	msgs = msgs[:0]
	for i := range 100 {
		msgs = append(msgs, mqtt.AppendPublish(nil, fmt.Sprintf("u/known-%d/m", i), []byte("x"), 1, false, false, uint16(i+1)))
	}
	if acks, _, closed := pipeline(t, c, msgs, 100); acks != 100 || closed {
		t.Fatalf("to known users: %d acks, closed %v; want 100, open", acks, closed)
	}
	check()
}

// TestReceiptFlood: read receipts count against the recipient's inbox, in a
// bounded allowance above the message bound; the reader gets inbox_full
// notices, which are bounded too: once the reader has no room for the
// notice, its receipt is not acknowledged and it is closed (store_full),
// so nothing acknowledged is lost.
func TestReceiptFlood(t *testing.T) {
	s := startServer(t, func(c *Config) { c.MaxPacketSize, c.InboxMessages, c.InboxBytes = 64<<10, 100, 1<<20 })
	check := bystanders(t, s)
	r := dial(t, s)
	r.connect("reader", false)
	payload := bytes.Repeat([]byte("r"), 20000)
	var msgs [][]byte
	for i := range 2000 {
		msgs = append(msgs, mqtt.AppendPublish(nil, fmt.Sprint("r/victim/m", i), payload, 1, false, false, uint16(i+1)))
	}
	acks, _, closed := pipeline(t, r, msgs, 100)
	if !closed {
		t.Fatalf("acks %d: the reader was not closed when its notices stopped fitting", acks)
	}
	waitFor(t, "store_full counted", func() bool { return s.CloseCount(ReasonStoreFull) == 1 })
	allowance := 1<<20 + 1<<20/4
	cl := s.reg.lock([]byte("victim"), false)
	n, held := cl.box().len(), cl.box().held()
	cl.mu.Unlock()
	if n == 0 || n > 125 || held > allowance {
		t.Fatalf("victim's inbox: %d entries, %d bytes held; want at most 125 and %d", n, held, allowance)
	}
	cl = s.reg.lock([]byte("reader"), false)
	rn := cl.box().len()
	cl.mu.Unlock()
	if rn != 125 {
		t.Fatalf("reader's inbox holds %d notices, want its allowance of 125", rn)
	}
	if acks != n+rn {
		t.Fatalf("%d receipts acknowledged, want %d stored plus %d notified", acks, n, rn)
	}
	st := s.Stats()
	if st.InboxFull != uint64(rn) || st.NoticesDropped != 0 {
		t.Fatalf("inbox_full %d, notices dropped %d; want %d, 0", st.InboxFull, st.NoticesDropped, rn)
	}
	check()
}

// TestStoreCap: the store cap refuses direct messages (no PUBACK, the
// sender closed with store_full) once offline inboxes fill it; everything
// acknowledged is kept; connected users with short inboxes go on in the
// reserved last eighth.
func TestStoreCap(t *testing.T) {
	const capBytes = 4 << 20
	s := startServer(t, func(c *Config) {
		c.MaxPacketSize, c.StoreMaxBytes, c.NewInboxRate = 64<<10, capBytes, -1
	})
	check := bystanders(t, s)
	c := dial(t, s)
	c.connect("filler", false)
	payload := bytes.Repeat([]byte("f"), 30000)
	var msgs [][]byte
	for i := range 1000 {
		msgs = append(msgs, mqtt.AppendPublish(nil, fmt.Sprint("u/offline-", i, "/m"), payload, 1, false, false, uint16(i+1)))
	}
	acks, _, closed := pipeline(t, c, msgs, 50)
	if !closed {
		t.Fatal("filler not closed")
	}
	waitFor(t, "store_full counted", func() bool { return s.CloseCount(ReasonStoreFull) == 1 })
	if h := s.held.Load(); h > capBytes || h < capBytes*3/4 {
		t.Fatalf("store holds %d bytes, want near the cap %d", h, capBytes)
	}
	for i := range acks {
		if n := s.InboxLen(fmt.Sprint("offline-", i)); n != 1 {
			t.Fatalf("acknowledged message %d lost: inbox holds %d", i, n)
		}
	}
	if n := s.InboxLen(fmt.Sprint("offline-", acks)); n != 0 {
		t.Fatalf("unacknowledged message stored (%d)", n)
	}
	// The last eighth: the filler stopped where one more message of this
	// size crosses the soft level, so the same size to a connected user
	// with a short inbox goes in the reserve, and to an offline one not.
	if h := s.held.Load() + int64(heldSize(len("u/offline-000/m")+len(payload)+9)+inboxOverhead); h <= s.storeSoft || h > capBytes {
		t.Fatalf("store holds %d: one more message (%d) is not in the last eighth (%d, %d]", s.held.Load(), h, s.storeSoft, capBytes)
	}
	live := dial(t, s)
	live.connect("live", false)
	talker := dial(t, s)
	talker.connect("talker", false)
	talker.publish("u/live/m1", string(payload), 1)
	talker.expect(mqtt.TypePuback)
	p := live.expect(mqtt.TypePublish)
	if p.Topic != "u/live/m/talker/m1" {
		t.Fatalf("live got %+v", p)
	}
	live.puback(p.ID)
	talker.publish("u/offline-0/m2", string(payload), 1)
	talker.expectClosed()
	waitFor(t, "store_full counted twice", func() bool { return s.CloseCount(ReasonStoreFull) == 2 })
	live.conn.Close()
	waitFor(t, "live offline", func() bool { return s.Connections() == 2 })
	for range 20 {
		check()
	}
	// Generic messages to offline persistent sessions are dropped, counted.
	sl := dial(t, s)
	sl.connect("sleeper", true)
	sl.subscribe("news/#", 1)
	sl.conn.Close()
	waitFor(t, "sleeper offline", func() bool { return s.Connections() == 2 })
	d := s.Stats().Dropped
	pub := dial(t, s)
	pub.connect("newsroom", false)
	for range 200 {
		pub.publish("news/x", string(payload), 1)
		pub.expect(mqtt.TypePuback)
	}
	if h := s.held.Load(); h > capBytes {
		t.Fatalf("store holds %d bytes over the cap", h)
	}
	if s.Stats().Dropped == d {
		t.Fatal("no generic delivery dropped at the store cap")
	}
	check()
}

// TestRetainedByteCap: retained messages are capped by bytes held too, and
// count in the store total.
func TestRetainedByteCap(t *testing.T) {
	s := startServer(t, func(c *Config) { c.MaxPacketSize, c.RetainedMaxBytes = 64<<10, 512<<10 })
	pub := dial(t, s)
	pub.connect("pub", false)
	payload := bytes.Repeat([]byte("v"), 30000) // a 32 KiB allocation each (Go's size class)
	for i := range 30 {
		pub.send(mqtt.AppendPublish(nil, fmt.Sprintf("big/%02d", i), payload, 1, true, false, uint16(i+1)))
		pub.expect(mqtt.TypePuback)
	}
	per := int64(len("big/00") + 32<<10 + retainedOverhead + 2*retainedLevelOverhead) // two levels
	fit := (512 << 10) / per
	s.tree.rmu.RLock()
	n, held := int64(s.tree.nretained), s.tree.rbytes
	s.tree.rmu.RUnlock()
	if n != fit || held != fit*per || s.held.Load() != held {
		t.Fatalf("retained %d topics, %d bytes, store %d; want %d topics, %d bytes", n, held, s.held.Load(), fit, fit*per)
	}
	if got := s.Stats().RetainedFull; got != uint64(30-fit) {
		t.Fatalf("retained_full %d, want %d", got, 30-fit)
	}
	// Clearing one frees its bytes; a new one then fits.
	pub.send(mqtt.AppendPublish(nil, "big/00", nil, 1, true, false, 100))
	pub.expect(mqtt.TypePuback)
	if s.held.Load() != held-per {
		t.Fatalf("after clearing: store %d, want %d", s.held.Load(), held-per)
	}
	pub.send(mqtt.AppendPublish(nil, "big/99", payload, 1, true, false, 101))
	pub.expect(mqtt.TypePuback)
	sub := dial(t, s)
	sub.connect("sub", false)
	sub.subscribe("big/99", 1)
	if p := sub.expect(mqtt.TypePublish); p.Topic != "big/99" || !p.Retain {
		t.Fatalf("got %+v, want retained big/99", p)
	}
}

func TestDefaultStoreMaxBytes(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(old)
	debug.SetMemoryLimit(6 << 30)
	if got := DefaultStoreMaxBytes(); got != 3<<30 {
		t.Fatalf("with GOMEMLIMIT 6 GiB: %d, want half, 3 GiB", got)
	}
	debug.SetMemoryLimit(math.MaxInt64) // no limit: a quarter of physical memory
	pm := physMem()
	if pm == 0 {
		pm = fallbackPhysMem
	}
	if got := DefaultStoreMaxBytes(); got != max(int64(pm/4), minStoreBytes) {
		t.Fatalf("without a limit: %d, want a quarter of %d", got, pm)
	}
	debug.SetMemoryLimit(10 << 20)
	if got := DefaultStoreMaxBytes(); got != minStoreBytes {
		t.Fatalf("with a tiny limit: %d, want the floor %d", got, minStoreBytes)
	}
	for _, cfg := range []Config{
		{Auth: AuthAnonymous, StoreMaxBytes: 1 << 20},
		{Auth: AuthAnonymous, RetainedMaxBytes: -1},
		{Auth: AuthAnonymous, NewInboxRate: 10, NewInboxBurst: 0.5},
		{Auth: AuthAnonymous, InboxExpiry: time.Second - 1},
		{Auth: AuthAnonymous, InboxExpiry: time.Millisecond},
		{Auth: AuthAnonymous, StoreMaxBytes: 64 << 20, RetainedMaxBytes: 64<<20 + 1},
		{Auth: AuthAnonymous, MaxKeepAlive: 1500 * time.Millisecond},
		{Auth: AuthAnonymous, MaxKeepAlive: 65536 * time.Second},
		{Auth: AuthAnonymous, MaxKeepAlive: -time.Second},
	} {
		if err := cfg.setDefaults(); !errors.Is(err, ErrBadConfig) {
			t.Errorf("%+v: %v, want ErrBadConfig", cfg, err)
		}
	}
	for _, cfg := range []Config{
		{Auth: AuthAnonymous, InboxExpiry: time.Second},
		{Auth: AuthAnonymous, InboxExpiry: -1},
		{Auth: AuthAnonymous, StoreMaxBytes: 64 << 20, RetainedMaxBytes: 64 << 20},
	} {
		if err := cfg.setDefaults(); err != nil {
			t.Errorf("%+v: %v, want valid", cfg, err)
		}
	}
	cfg := Config{Auth: AuthAnonymous, NewInboxRate: 5000}
	if cfg.setDefaults(); cfg.NewInboxBurst != 5000 {
		t.Errorf("burst at rate 5000: %g, want the rate", cfg.NewInboxBurst)
	}
}
