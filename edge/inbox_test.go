package edge

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/edgedhq/edged/edge/mqtt"
)

// testEntry is a stored QoS 1 PUBLISH on topic, as pushProps builds one.
func testEntry(topic string, flags uint8) entry {
	buf := getBuf(len(topic) + 1 + 9)
	*buf = mqtt.AppendPublish(*buf, []byte(topic), []byte("x"), 1, false, false, 1)
	return entry{buf: buf, flags: flags, pidOff: uint32(len(*buf) - 1 - 2)}
}

// newTestInbox returns an inbox accounted into fresh totals, holding n
// entries on the topics t0, t1, ...
func newTestInbox(n int) (q *inbox, held, cnt *atomic.Int64) {
	held, cnt = new(atomic.Int64), new(atomic.Int64)
	q = &inbox{acct: held, cnt: cnt}
	for i := range n {
		q.push(testEntry(fmt.Sprintf("t%d", i), 0))
	}
	return q, held, cnt
}

// topics lists q's entries' topics, front first.
func topics(q *inbox) []string {
	var out []string
	for i := range q.len() {
		out = append(out, string(q.at(i).topic()))
	}
	return out
}

// checkAccounting: q's bytes are what its entries hold (plus the overhead
// while not empty) and equal to the server totals it feeds.
func checkAccounting(t *testing.T, q *inbox, held, cnt *atomic.Int64) {
	t.Helper()
	want := 0
	for i := range q.len() {
		want += bufCap(cap(*q.at(i).buf)) + entryOverhead
	}
	if q.len() > 0 {
		want += inboxOverhead
	}
	if q.held() != want || held.Load() != int64(want) || cnt.Load() != int64(q.len()) {
		t.Fatalf("accounting: held %d, total %d, entries total %d; want %d, %d, %d",
			q.held(), held.Load(), cnt.Load(), want, want, q.len())
	}
}

func TestInbox(t *testing.T) {
	t.Run("push keeps order and accounts", func(t *testing.T) {
		q, held, cnt := newTestInbox(3)
		if got := fmt.Sprint(topics(q)); got != "[t0 t1 t2]" {
			t.Fatalf("topics %s", got)
		}
		checkAccounting(t, q, held, cnt)
	})
	t.Run("remove from the middle keeps order and the window", func(t *testing.T) {
		q, held, cnt := newTestInbox(4)
		q.nsent = 3
		q.remove(1)
		if got := fmt.Sprint(topics(q)); got != "[t0 t2 t3]" || q.nsent != 2 {
			t.Fatalf("topics %s, nsent %d; want [t0 t2 t3], 2", got, q.nsent)
		}
		q.remove(2) // not in flight
		if q.nsent != 2 || q.len() != 2 {
			t.Fatalf("nsent %d, len %d; want 2, 2", q.nsent, q.len())
		}
		checkAccounting(t, q, held, cnt)
		q.remove(0)
		q.remove(0)
		if q.len() != 0 || q.nsent != 0 || q.held() != 0 || held.Load() != 0 {
			t.Fatalf("emptied: len %d, nsent %d, held %d, total %d", q.len(), q.nsent, q.held(), held.Load())
		}
		checkAccounting(t, q, held, cnt)
	})
	t.Run("findSent looks in the window only", func(t *testing.T) {
		q, _, _ := newTestInbox(3)
		for i := range 3 {
			q.at(i).pid = uint16(10 + i)
		}
		q.nsent = 2
		if q.findSent(10) != 0 || q.findSent(11) != 1 || q.findSent(12) != -1 || q.findSent(99) != -1 {
			t.Fatalf("findSent: %d %d %d %d; want 0 1 -1 -1", q.findSent(10), q.findSent(11), q.findSent(12), q.findSent(99))
		}
		var nilq *inbox
		if nilq.findSent(1) != -1 || nilq.len() != 0 || nilq.held() != 0 {
			t.Fatal("a nil inbox is not empty")
		}
	})
	t.Run("unsend marks the window DUP", func(t *testing.T) {
		q, _, _ := newTestInbox(3)
		q.nsent = 2
		q.unsend()
		if q.nsent != 0 || q.at(0).flags&fDup == 0 || q.at(1).flags&fDup == 0 || q.at(2).flags&fDup != 0 {
			t.Fatalf("after unsend: nsent %d, flags %d %d %d", q.nsent, q.at(0).flags, q.at(1).flags, q.at(2).flags)
		}
	})
	t.Run("pending sees unsent entries only", func(t *testing.T) {
		q, _, _ := newTestInbox(3)
		q.nsent = 1
		if q.pending([]byte("t0")) || !q.pending([]byte("t2")) || q.pending([]byte("nope")) {
			t.Fatal("pending: wrong answer")
		}
	})
	t.Run("drop and dropGeneric keep order and account", func(t *testing.T) {
		held, cnt := new(atomic.Int64), new(atomic.Int64)
		q := &inbox{acct: held, cnt: cnt}
		for i, f := range []uint8{fDurable, 0, fDurable, 0} {
			q.push(testEntry(fmt.Sprintf("t%d", i), f))
		}
		q.dropGeneric()
		if got := fmt.Sprint(topics(q)); got != "[t0 t2]" {
			t.Fatalf("after dropGeneric: %s", got)
		}
		checkAccounting(t, q, held, cnt)
		q.nsent = 1
		if n := q.drop(func(e *entry) bool { return string(e.topic()) == "t0" }); n != 1 || q.nsent != 0 {
			t.Fatalf("drop: %d dropped, nsent %d; want 1, 0", n, q.nsent)
		}
		checkAccounting(t, q, held, cnt)
		if n := q.drop(func(*entry) bool { return true }); n != 1 || q.len() != 0 || q.items != nil {
			t.Fatalf("drop all: %d dropped, len %d, items kept %v", n, q.len(), q.items != nil)
		}
		checkAccounting(t, q, held, cnt)
	})
	t.Run("dropFrom keeps the in-flight prefix", func(t *testing.T) {
		q, held, cnt := newTestInbox(4)
		q.nsent = 2
		if n := q.dropFrom(2, func(*entry) bool { return true }); n != 2 || q.nsent != 2 {
			t.Fatalf("dropFrom: %d dropped, nsent %d; want 2, 2", n, q.nsent)
		}
		if got := fmt.Sprint(topics(q)); got != "[t0 t1]" {
			t.Fatalf("after dropFrom: %s", got)
		}
		checkAccounting(t, q, held, cnt)
		defer func() {
			if recover() == nil {
				t.Fatal("dropFrom into the window did not panic")
			}
		}()
		q.dropFrom(1, func(*entry) bool { return true })
	})
	t.Run("push reclaims the removed front", func(t *testing.T) {
		q, held, cnt := newTestInbox(2000)
		for range 1500 {
			q.remove(0)
		}
		q.push(testEntry("last", 0))
		if q.head != 0 || q.len() != 501 || string(q.at(500).topic()) != "last" || string(q.at(0).topic()) != "t1500" {
			t.Fatalf("after compaction: head %d, len %d", q.head, q.len())
		}
		checkAccounting(t, q, held, cnt)
	})
	t.Run("trim and freeAll", func(t *testing.T) {
		q, held, cnt := newTestInbox(2)
		q.trim() // not empty: nothing to do
		if q.len() != 2 {
			t.Fatal("trim dropped entries")
		}
		q.freeAll()
		if q.len() != 0 || q.held() != 0 || held.Load() != 0 || cnt.Load() != 0 || q.items != nil {
			t.Fatalf("after freeAll: len %d, held %d, totals %d %d", q.len(), q.held(), held.Load(), cnt.Load())
		}
	})
	t.Run("full is the bounds", func(t *testing.T) {
		q, _, _ := newTestInbox(2)
		n := 10
		if !q.full(2, 1<<20, n) || q.full(3, 1<<20, n) || !q.full(3, q.held()+heldSize(n)-1, n) || q.full(3, q.held()+heldSize(n), n) {
			t.Fatal("full: wrong bounds")
		}
		var empty *inbox
		if empty.full(1, inboxOverhead+heldSize(n)-1, n) == false || empty.full(1, inboxOverhead+heldSize(n), n) {
			t.Fatal("full: an empty inbox pays the overhead")
		}
	})
}
