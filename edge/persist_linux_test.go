package edge

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/internal/testenv"
	"github.com/edgedhq/edged/internal/wal"
)

// TestDurableDiskFull runs the store on a 2 MiB tmpfs that fills up: the
// PUBACK of the message whose write failed is held (it is not on disk), a
// new QoS 1 PUBLISH is refused (store_unavailable, no PUBACK), deliveries
// to a connected user go on, and once space returns the held PUBACK goes
// out, publishing works again, and a restart finds the message.
func TestDurableDiskFull(t *testing.T) {
	testenv.RequirePriv(t, "mounting a small tmpfs")
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=2m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, 1536<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(mnt, "data")
	s := startDurable(t, dir, func(c *Config) { c.Fsync = wal.SyncNever })
	bob := dial(t, s)
	bob.connect("bob", false)
	alice := dial(t, s)
	alice.connect("alice", false)
	payload := strings.Repeat("z", 32<<10)
	// pubacked waits for id's PUBACK, acknowledging receipts on the way;
	// false after a second without it.
	pubacked := func(id uint16) bool {
		for {
			p, err := alice.tryRead(time.Second)
			switch {
			case err != nil:
				return false
			case p.Type == mqtt.TypePublish: // a delivered receipt
				alice.puback(p.ID)
			case p.Type == mqtt.TypePuback && p.ID == id:
				return true
			default:
				t.Fatalf("got %v %d, want PUBACK %d", p.Type, p.ID, id)
			}
		}
	}
	var held uint16
	for i := 0; i < 64 && held == 0; i++ {
		id := alice.publish("u/bob/m", payload, 1)
		p := bob.expect(mqtt.TypePublish) // delivered whether or not it is on disk yet
		bob.puback(p.ID)
		if !pubacked(id) {
			held = id
		}
	}
	if held == 0 {
		t.Fatal("64 x 32 KiB never filled a 2 MiB tmpfs holding 1.5 MiB")
	}
	if d := s.Stats().Disk; d == nil || !d.Failing || d.WriteErrors == 0 {
		t.Fatalf("a PUBACK was held but the stats do not report failing writes: %+v", d)
	}
	// A new publisher is refused: not stored, not acknowledged.
	carol := dial(t, s)
	carol.connect("carol", false)
	carol.publish("u/bob/c1", "refused", 1)
	carol.expectClosed()
	if n := s.CloseCount(ReasonStoreUnavailable); n != 1 {
		t.Fatalf("store_unavailable closes: %d, want 1", n)
	}
	// QoS 0 traffic that needs no disk is still served.
	bob.subscribe("live/#", 0)
	dave := dial(t, s)
	dave.connect("dave", false)
	dave.publish("live/x", "no disk needed", 0)
	for {
		p := bob.expect(mqtt.TypePublish)
		if p.Topic == "live/x" {
			break
		}
	}
	os.Remove(filler)
	// The store retries; the held PUBACK follows.
	if !pubacked(held) {
		t.Fatalf("held PUBACK %d not sent a second after space returned", held)
	}
	waitFor(t, "the store writing again", func() bool { return !s.wal.Failed() })
	alice.publishAcked("u/carol/after", "space is back")
	for _, c := range []*rawClient{alice, bob, dave} {
		c.conn.Close()
	}
	waitFor(t, "all offline", func() bool { return s.Connections() == 0 })
	s.Close()
	s = startDurable(t, dir, nil)
	if n := s.InboxLen("carol"); n != 1 {
		t.Fatalf("after restart carol holds %d, want the message acknowledged after space returned", n)
	}
}
