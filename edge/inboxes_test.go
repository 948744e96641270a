package edge

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
)

func adminDo(t *testing.T, s *Server, method, path string, v any) int {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+s.AdminAddr().String()+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

type inboxList struct {
	Inboxes []InboxInfo
	Total   int
	Bytes   int64
}

func TestInboxListPurge(t *testing.T) {
	s := startServer(t, nil)
	t.Cleanup(http.DefaultClient.CloseIdleConnections)
	a := dial(t, s)
	a.connect("alice", false)
	for user, n := range map[string]int{"bob": 3, "carol": 1, "dave": 5} {
		for i := range n {
			a.publish(fmt.Sprintf("u/%s/m%d", user, i), "hi", 1)
			a.expect(mqtt.TypePuback)
		}
	}
	// A plain MQTT client with a space in its id and queued messages.
	ha := dial(t, s)
	ha.connect("home assistant", true)
	ha.subscribe("lights/#", 1)
	ha.conn.Close()
	waitFor(t, "home assistant offline", func() bool { return s.Connections() == 1 })
	a.publish("lights/kitchen", "on", 1)
	a.expect(mqtt.TypePuback)

	var l inboxList
	if code := adminDo(t, s, "GET", "/inboxes?limit=2", &l); code != 200 {
		t.Fatalf("GET /inboxes: %d", code)
	}
	if l.Total != 4 || len(l.Inboxes) != 2 || l.Inboxes[0].User != "dave" || l.Inboxes[0].Messages != 5 ||
		l.Inboxes[1].User != "bob" || !l.Inboxes[0].NeverConnected || l.Bytes+sessionOverhead != s.held.Load() {
		t.Fatalf("GET /inboxes?limit=2 = %+v (store %d)", l, s.held.Load())
	}
	if code := adminDo(t, s, "GET", "/inboxes", &l); code != 200 || len(l.Inboxes) != 4 {
		t.Fatalf("GET /inboxes: %d %+v", code, l)
	}
	for _, bad := range []string{"0", "10001", "x"} {
		if code := adminDo(t, s, "GET", "/inboxes?limit="+bad, nil); code != 400 {
			t.Fatalf("limit=%s: %d, want 400", bad, code)
		}
	}
	clients, held := s.Clients(), s.held.Load()
	var r struct{ Purged, Bytes int }
	if code := adminDo(t, s, "DELETE", "/inboxes/bob", &r); code != 200 || r.Purged != 3 || r.Bytes <= 0 {
		t.Fatalf("DELETE /inboxes/bob: %d %+v", code, r)
	}
	if s.InboxLen("bob") != 0 || s.Clients() != clients-1 {
		t.Fatalf("bob's inbox %d, clients %d (want 0, %d)", s.InboxLen("bob"), s.Clients(), clients-1)
	}
	// The sender hears of each purged message.
	for i := range 3 {
		p := a.expect(mqtt.TypePublish)
		if p.Topic != fmt.Sprintf("u/alice/e/bob/m%d", i) || p.Payload != "purged" {
			t.Fatalf("alice got %+v, want the purged notice for m%d", p, i)
		}
		a.puback(p.ID)
	}
	waitFor(t, "alice's notices acknowledged", func() bool { return s.InboxLen("alice") == 0 })
	if h := s.held.Load(); h != held-int64(r.Bytes) {
		t.Fatalf("store %d after purge, want %d", h, held-int64(r.Bytes))
	}
	if code := adminDo(t, s, "DELETE", "/inboxes/bob", nil); code != 404 {
		t.Fatalf("second purge: %d, want 404", code)
	}
	if code := adminDo(t, s, "DELETE", "/inboxes/home%20assistant", &r); code != 200 || r.Purged != 1 {
		t.Fatalf("purge home assistant: %d %+v", code, r)
	}
	if code := adminDo(t, s, "POST", "/inboxes/dave", nil); code != 405 {
		t.Fatalf("POST: %d, want 405", code)
	}
	// "." and ".." are profile ids; the path form cannot name them
	// (ServeMux cleans the path), the query form can.
	for _, id := range []string{".", ".."} {
		a.publish("u/"+id+"/m1", "hi", 1)
		a.expect(mqtt.TypePuback)
		if code := adminDo(t, s, "DELETE", "/inboxes?user="+url.QueryEscape(id), &r); code != 200 || r.Purged != 1 {
			t.Fatalf("DELETE /inboxes?user=%s: %d %+v", id, code, r)
		}
		if p := a.expect(mqtt.TypePublish); p.Topic != "u/alice/e/"+id+"/m1" || p.Payload != "purged" {
			t.Fatalf("alice got %+v, want the purged notice", p)
		}
	}
	if code := adminDo(t, s, "DELETE", "/inboxes?user=", nil); code != 400 {
		t.Fatalf("DELETE /inboxes without a user: %d, want 400", code)
	}
	if st := s.Stats(); st.Purged != 6 {
		t.Fatalf("purged counter %d, want 6", st.Purged)
	}
}

func TestInboxExpiry(t *testing.T) {
	var clock atomic.Int64
	clock.Store(1_800_000_000)
	s := startServer(t, func(c *Config) {
		c.InboxExpiry = time.Hour
		c.Now = func() time.Time { return time.Unix(clock.Load(), 0) }
	})
	s.stopSweeper() // the test steps the sweep itself
	check := bystanders(t, s)
	s.sweep(1 << 20) // starts the last-seen generations' clock
	for _, id := range []string{"bob", "leaver"} {
		c := dial(t, s)
		c.connect(id, false)
		c.conn.Close()
	}
	waitFor(t, "bob and leaver offline", func() bool { return s.Connections() == 2 })
	a := dial(t, s)
	a.connect("alice", false)
	for _, to := range []string{"ghost", "bob", "g1", "g2", "g3"} {
		a.publish("u/"+to+"/m1", "x", 1)
		a.expect(mqtt.TypePuback)
	}
	s.sweep(1 << 20)
	if s.InboxLen("ghost") != 1 {
		t.Fatal("expired before its time")
	}
	clock.Add(3601)
	// Incremental: one record per step.
	steps := 0
	for s.InboxLen("ghost")+s.InboxLen("g1")+s.InboxLen("g2")+s.InboxLen("g3") > 0 {
		if n := s.sweep(1); n > 1 {
			t.Fatalf("sweep(1) expired %d inboxes", n)
		}
		if steps++; steps > 1000 {
			t.Fatal("the sweep does not progress")
		}
	}
	if steps < 4 {
		t.Fatalf("4 inboxes expired in %d one-record steps", steps)
	}
	if s.InboxLen("bob") != 1 {
		t.Fatal("bob has connected before: his inbox must not expire")
	}
	got := map[string]bool{}
	for range 4 {
		p := a.expect(mqtt.TypePublish)
		if p.Payload != "expired" {
			t.Fatalf("alice got %+v, want an expired notice", p)
		}
		got[p.Topic] = true
		a.puback(p.ID)
	}
	for _, to := range []string{"ghost", "g1", "g2", "g3"} {
		if !got["u/alice/e/"+to+"/m1"] {
			t.Fatalf("no expired notice for %s: %v", to, got)
		}
	}
	if st := s.Stats(); st.Expired != 4 {
		t.Fatalf("expired counter %d, want 4", st.Expired)
	}
	// Last-seen times are forgotten after one to two periods.
	if _, _, known := s.reg.presence([]byte("leaver")); !known {
		t.Fatal("leaver forgotten after one period")
	}
	clock.Add(3601)
	s.sweep(1)
	if _, _, known := s.reg.presence([]byte("leaver")); known {
		t.Fatal("leaver still remembered after two periods")
	}
	check()
}

func TestInboxesHelpersUnderLoad(t *testing.T) {
	// Inboxes and PurgeInbox run beside traffic on the loops (go test -race).
	s := startServer(t, nil)
	check := bystanders(t, s)
	a := dial(t, s)
	a.connect("writer", false)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 200; i++ {
			s.Inboxes(10)
			s.PurgeInbox(fmt.Sprint("target-", i%5))
		}
	}()
	notices := 0
	ackUntilPuback := func() {
		for {
			p := a.read()
			if p.Type == mqtt.TypePuback {
				return
			}
			if p.Type != mqtt.TypePublish || p.Payload != "purged" {
				t.Fatalf("writer got %+v", p)
			}
			notices++
			a.puback(p.ID)
		}
	}
	for i := range 500 {
		a.publish(fmt.Sprintf("u/target-%d/m%d", i%5, i), strings.Repeat("x", i), 1)
		ackUntilPuback()
	}
	<-done
	purged := 0
	for i := range 5 {
		n, _, _ := s.PurgeInbox(fmt.Sprint("target-", i))
		purged += n
	}
	for notices < 500 {
		p := a.read()
		if p.Type != mqtt.TypePublish || p.Payload != "purged" {
			t.Fatalf("writer got %+v", p)
		}
		notices++
		a.puback(p.ID)
	}
	if st := s.Stats(); st.Purged != 500 {
		t.Fatalf("purged %d, want all 500", st.Purged)
	}
	check()
	// Every byte accounted for: the store total is the sum of the inboxes
	// (here only bystander-a's unacknowledged receipt).
	waitFor(t, "the store total to match the inboxes", func() bool {
		_, total, bytes := s.Inboxes(1)
		return total == 1 && s.held.Load() == bytes
	})
}

// TestSweeperRuns: the background sweeper expires inboxes by itself.
func TestSweeperRuns(t *testing.T) {
	var clock atomic.Int64
	clock.Store(1_800_000_000)
	s := startServer(t, func(c *Config) {
		c.InboxExpiry = time.Minute
		c.Now = func() time.Time { return time.Unix(clock.Load(), 0) }
	})
	a := dial(t, s)
	a.connect("alice", false)
	a.publish("u/ghost/m1", "x", 1)
	a.expect(mqtt.TypePuback)
	clock.Add(61)
	if p := a.expect(mqtt.TypePublish); p.Topic != "u/alice/e/ghost/m1" || p.Payload != "expired" {
		t.Fatalf("alice got %+v, want the expired notice from the sweeper", p)
	}
}
