package edge

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
)

// TestCrossLoopStress runs users on four loops sending direct messages to
// each other concurrently (bounded count and time) and checks that every
// message is delivered exactly once, in order per sender, and that every
// sender gets every receipt.
func TestCrossLoopStress(t *testing.T) {
	const users, perUser = 24, 60
	s := startServer(t, func(c *Config) { c.Loops = 4; c.Inflight = 8 })
	type user struct {
		id   string
		conn net.Conn
		wmu  sync.Mutex
		got  map[string][]int // sender -> sequence numbers received
		rcpt int
		acks int
	}
	us := make([]*user, users)
	for i := range us {
		rc := dial(t, s)
		rc.connect(fmt.Sprint("s", i), false)
		us[i] = &user{id: fmt.Sprint("s", i), conn: rc.conn, got: map[string][]int{}}
	}
	write := func(u *user, b []byte) error {
		u.wmu.Lock()
		defer u.wmu.Unlock()
		_, err := u.conn.Write(b)
		return err
	}
	plan := make([][]int, users) // plan[i][k] = recipient of user i's k-th message
	rng := rand.New(rand.NewPCG(7, 7))
	for i := range plan {
		for range perUser {
			to := rng.IntN(users - 1)
			if to >= i {
				to++
			}
			plan[i] = append(plan[i], to)
		}
	}
	expected := map[string]int{} // messages each user must receive
	for i := range us {
		for _, to := range plan[i] {
			expected[us[to].id]++
		}
	}
	errs := make(chan error, 2*users)
	var readers, writers sync.WaitGroup
	deadline := time.Now().Add(30 * time.Second)
	for _, u := range us {
		readers.Add(1)
		go func() { // reader: acknowledge and record
			defer readers.Done()
			u.conn.SetReadDeadline(deadline)
			var buf []byte
			tmp := make([]byte, 8192)
			for u.acks < perUser || u.rcpt < perUser || countAll(u.got) < expected[u.id] {
				var p mqtt.Packet
				n, err := mqtt.Decode(buf, 0, &p)
				if err != nil {
					errs <- err
					return
				}
				if n == 0 {
					k, err := u.conn.Read(tmp)
					if err != nil {
						errs <- fmt.Errorf("%s: read: %w (acks %d, receipts %d, got %d)", u.id, err, u.acks, u.rcpt, countAll(u.got))
						return
					}
					buf = append(buf, tmp[:k]...)
					continue
				}
				switch p.Type {
				case mqtt.TypePuback:
					u.acks++
				case mqtt.TypePublish:
					parts := strings.Split(string(p.Topic), "/")
					switch parts[2] {
					case "m":
						var seq int
						fmt.Sscan(string(p.Payload), &seq)
						u.got[parts[3]] = append(u.got[parts[3]], seq)
					case "d":
						u.rcpt++
					}
					if err := write(u, mqtt.AppendPuback(nil, p.PacketID)); err != nil {
						errs <- err
						return
					}
				}
				buf = buf[n:]
			}
		}()
	}
	for i, u := range us {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for k, to := range plan[i] {
				msg := mqtt.AppendPublish(nil, fmt.Sprint("u/", us[to].id, "/x", k), []byte(fmt.Sprint(k)), 1, false, false, uint16(k+1))
				if err := write(u, msg); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	writers.Wait()
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, u := range us {
		for from, seqs := range u.got {
			for j := 1; j < len(seqs); j++ {
				if seqs[j] <= seqs[j-1] {
					t.Fatalf("%s from %s: %v not in order or duplicated", u.id, from, seqs)
				}
			}
		}
		if u.rcpt != perUser || u.acks != perUser {
			t.Fatalf("%s: %d receipts, %d acks; want %d", u.id, u.rcpt, u.acks, perUser)
		}
	}
	waitFor(t, "all inboxes empty", func() bool {
		for _, u := range us {
			if s.InboxLen(u.id) != 0 {
				return false
			}
		}
		return true
	})
}

func countAll(m map[string][]int) int {
	n := 0
	for _, v := range m {
		n += len(v)
	}
	return n
}

// TestKillRecipientMidDelivery keeps a sender publishing while the
// recipient's connection is killed again and again mid-delivery: every
// message arrives, none arrives again once acknowledged, and the order per
// sender holds (redeliveries, marked DUP, come first).
func TestKillRecipientMidDelivery(t *testing.T) {
	const total = 400
	s := startServer(t, func(c *Config) { c.Inflight = 16 })
	a := dial(t, s)
	a.connect("sender", false)
	done := make(chan error, 1)
	go func() { // the sender, on its own connection
		var b []byte
		for i := range total {
			b = mqtt.AppendPublish(b[:0], fmt.Sprint("u/victim/k", i), []byte(fmt.Sprint(i)), 1, false, false, uint16(i+1))
			if _, err := a.conn.Write(b); err != nil {
				done <- err
				return
			}
			if i%50 == 0 {
				time.Sleep(2 * time.Millisecond)
			}
		}
		done <- nil
	}()
	acked := map[int]bool{}
	last := -1
	for round := 0; len(acked) < total; round++ {
		if round > 200 {
			t.Fatalf("only %d of %d acknowledged after %d connections", len(acked), total, round)
		}
		v := dial(t, s)
		v.connect("victim", false)
		// Take up to 37 messages, acknowledge all but the last few, then
		// kill the connection without a DISCONNECT.
		for k := 0; k < 37 && len(acked) < total; k++ {
			p, err := v.tryRead(2 * time.Second)
			if err != nil {
				break
			}
			if p.Type != mqtt.TypePublish {
				continue
			}
			var seq int
			fmt.Sscan(p.Payload, &seq)
			if acked[seq] {
				t.Fatalf("message %d delivered again after its PUBACK", seq)
			}
			if seq < last && !p.Dup {
				t.Fatalf("message %d after %d without DUP: order broken", seq, last)
			}
			last = max(last, seq)
			if k < 30 {
				v.puback(p.ID)
				acked[seq] = true
			}
		}
		// A PINGREQ round trip: the server handles a connection's packets in
		// order, so once PINGRESP is back every PUBACK above was processed
		// (closing with unread data resets the connection, which could
		// otherwise drop the last acknowledgements in flight).
		v.send(mqtt.AppendPingreq(nil))
		for {
			p, err := v.tryRead(10 * time.Second)
			if err != nil {
				t.Fatalf("waiting for PINGRESP: %v", err)
			}
			if p.Type == mqtt.TypePingresp {
				break
			}
		}
		v.conn.Close()
		waitFor(t, "victim offline", func() bool { return s.Connections() == 1 })
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitFor(t, "victim's inbox empty", func() bool { return s.InboxLen("victim") == 0 })
}
