package edge

import (
	"crypto/tls"
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/internal/edgetls"
	"github.com/edgedhq/edged/internal/testenv"
)

// dupHandoff copies every descriptor of h, as SCM_RIGHTS would between
// processes (here both servers live in one process, and Finish closes the
// old one's).
func dupHandoff(t *testing.T, h *Handoff) *Handoff {
	t.Helper()
	d := func(fd int) int {
		n, err := unix.Dup(fd)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	out := &Handoff{Version: h.Version, State: h.State}
	for _, g := range h.Listeners {
		var fds []int
		for _, fd := range g {
			fds = append(fds, d(fd))
		}
		out.Listeners = append(out.Listeners, fds)
	}
	for _, fd := range h.Conns {
		out.Conns = append(out.Conns, d(fd))
	}
	if h.Lock != nil {
		out.Lock = os.NewFile(uintptr(d(int(h.Lock.Fd()))), h.Lock.Name())
	}
	return out
}

// TestHandoffInProcess hands a live server's connections and state to a
// new server: the clients keep their TCP connections and notice nothing:
// in-flight deliveries are acknowledged by their old packet ids, queued
// ones follow, a half-sent PUBLISH completes, a clean session's
// subscription still matches, and new connections reach the new server.
func TestHandoffInProcess(t *testing.T) {
	dir := t.TempDir()
	s1 := startDurable(t, dir, func(c *Config) { c.Inflight = 3 })
	alice := dial(t, s1)
	alice.connect("alice", false)
	if code := alice.subscribe("news/#", 1); code != 1 {
		t.Fatalf("SUBACK %d", code)
	}
	bob := dial(t, s1)
	bob.connect("bob", false)
	for i := range 5 {
		alice.publishAcked("u/bob/m"+string(rune('0'+i)), "hi")
	}
	var inflight []pkt
	for range 3 {
		inflight = append(inflight, bob.expect(mqtt.TypePublish))
	}
	carol := dial(t, s1)
	carol.connect("carol", false)
	half := mqtt.AppendPublish(nil, "news/x", []byte("split across the handoff"), 1, false, false, 7)
	carol.send(half[:5])
	waitFor(t, "carol's partial packet held", func() bool { return s1.eng.PartialBytes() > 0 })

	h, err := s1.Freeze()
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Conns) != 3 {
		t.Fatalf("exported %d connections, want 3", len(h.Conns))
	}
	h2 := dupHandoff(t, h)
	s2 := startServer(t, func(c *Config) { c.DataDir, c.Inflight, c.Handoff, c.AdminAddr = dir, 3, h2, "" })
	if err := s1.Finish(); err != nil {
		t.Fatal(err)
	}
	if n := s2.Connections(); n != 3 {
		t.Fatalf("new server holds %d connections, want 3", n)
	}
	for _, p := range inflight {
		bob.puback(p.ID) // the old packet ids
	}
	for i := 3; i < 5; i++ {
		p := bob.expect(mqtt.TypePublish)
		if p.Topic != "u/bob/m/alice/m"+string(rune('0'+i)) || p.Dup {
			t.Fatalf("after the handoff bob got %s dup %v, want m%d", p.Topic, p.Dup, i)
		}
		bob.puback(p.ID)
	}
	carol.send(half[5:])
	if p := carol.expect(mqtt.TypePuback); p.ID != 7 {
		t.Fatalf("carol's split PUBLISH: PUBACK %d", p.ID)
	}
	got := map[string]bool{}
	for range 6 { // five receipts and carol's news/x
		p := alice.expect(mqtt.TypePublish)
		got[p.Topic] = true
		alice.puback(p.ID)
	}
	if !got["news/x"] || !got["u/alice/d/bob/m0"] || !got["u/alice/d/bob/m4"] {
		t.Fatalf("alice after the handoff got %v", got)
	}
	dave := dial(t, s2)
	dave.connect("dave", false)
	dave.publishAcked("u/bob/late", "new connection, new server")
	if p := bob.expect(mqtt.TypePublish); p.Topic != "u/bob/m/dave/late" {
		t.Fatalf("bob got %s, want dave's message", p.Topic)
	}
}

// TestHandoffCarriesTLS: TLS 1.2 and 1.3 sessions go to the new server
// with their record state: the clients' crypto/tls connections go on
// (sequence numbers, keys and a KeyUpdate after the handoff all agree), a
// PUBLISH split across the handoff completes (its first part was
// unwrapped payload already), and a ticket issued before the handoff
// resumes a session after it.
func TestHandoffCarriesTLS(t *testing.T) {
	files := testenv.MakeTLSFiles(t)
	s1 := startTLSServer(t, nil, files)
	cache := tls.NewLRUClientSessionCache(4)
	cfg13 := s1.clientConfig(tls.VersionTLS13)
	cfg13.ClientSessionCache = cache
	alice, _ := dialTLS(t, s1, cfg13)
	alice.connect("alice", false)
	bob, _ := dialTLS(t, s1, s1.clientConfig(tls.VersionTLS12))
	bob.connect("bob", false)
	alice.publishAcked("u/bob/m1", "before")
	if p := bob.expect(mqtt.TypePublish); p.Topic != "u/bob/m/alice/m1" {
		t.Fatalf("bob got %s", p.Topic)
	} else {
		bob.puback(p.ID)
	}
	receipt := func(mid string) {
		t.Helper()
		if p := alice.expect(mqtt.TypePublish); p.Topic != "u/alice/d/bob/"+mid {
			t.Fatalf("alice got %s, want the receipt for %s", p.Topic, mid)
		} else {
			alice.puback(p.ID)
		}
	}
	receipt("m1")
	half := mqtt.AppendPublish(nil, "u/bob/m2", []byte("split across the handoff"), 1, false, false, 9)
	alice.send(half[:6]) // one record: its payload is unwrapped and waits for the rest
	waitFor(t, "alice's partial packet held", func() bool { return s1.eng.PartialBytes() > 0 })

	h, err := s1.Freeze()
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Conns) != 2 {
		t.Fatalf("exported %d connections, want both TLS sessions", len(h.Conns))
	}
	h2 := dupHandoff(t, h)
	ts2, err := edgetls.New(edgetls.Config{CertFile: files.ECDSACert, KeyFile: files.ECDSAKey, KeyUpdateAfter: 4})
	if err != nil {
		t.Fatal(err)
	}
	s2 := startServer(t, func(c *Config) {
		c.TLS, c.TLSGroups, c.ExtraAddrs, c.Handoff, c.AdminAddr = ts2, []int{0}, []string{"127.0.0.1:0"}, h2, ""
	})
	if err := s1.Finish(); err != nil {
		t.Fatal(err)
	}
	if n := s2.Connections(); n != 2 {
		t.Fatalf("new server holds %d connections, want 2", n)
	}
	alice.send(half[6:])
	if p := alice.expect(mqtt.TypePuback); p.ID != 9 {
		t.Fatalf("alice's split PUBLISH: PUBACK %d", p.ID)
	}
	if p := bob.expect(mqtt.TypePublish); p.Topic != "u/bob/m/alice/m2" || p.Payload != "split across the handoff" {
		t.Fatalf("bob got %s %q", p.Topic, p.Payload)
	} else {
		bob.puback(p.ID)
	}
	receipt("m2")
	// The new server's KeyUpdateAfter is 4 records: alice's direction
	// gets new keys within these round trips (TLS 1.3 only).
	for i := range 6 {
		roundTrip(t, alice, fmt.Sprintf("t/alice/%d", i), 20000)
		roundTrip(t, bob, fmt.Sprintf("t/bob/%d", i), 100)
	}
	if st := ts2.Stats(); st.KeyUpdates == 0 {
		t.Fatalf("no KeyUpdate on the carried TLS 1.3 session: %+v", st)
	}
	tc, err := tls.Dial("tcp", s2.Addr().String(), cfg13)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if !tc.ConnectionState().DidResume {
		t.Fatal("a ticket from before the handoff did not resume a session after it")
	}
}
