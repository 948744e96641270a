package edge

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/edgedhq/edged/edge/mqtt"
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
