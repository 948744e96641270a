package edge

import (
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
)

// subscribeMany sends one SUBSCRIBE with filters at qos and returns the
// SUBACK's return codes; the SUBACK must be the next packet.
func (c *rawClient) subscribeMany(qos byte, filters ...string) []byte {
	c.t.Helper()
	subs := make([]mqtt.Subscription, len(filters))
	for i, f := range filters {
		subs[i] = mqtt.Subscription{Filter: f, QoS: qos}
	}
	c.send(mqtt.AppendSubscribe(nil, c.nextID(), subs...))
	return c.expect(mqtt.TypeSuback).SubCodes
}

func (c *rawClient) unsubscribeMany(filters ...string) {
	c.t.Helper()
	c.send(mqtt.AppendUnsubscribe(nil, c.nextID(), filters...))
	c.expect(mqtt.TypeUnsuback)
}

// canary is a QoS 1 round trip repeated until stop closes: a publishes on
// topic, b receives and acknowledges it, a gets its PUBACK.
type canary struct {
	rounds, lost int
	worst        time.Duration
	err          error
}

func runCanary(a, b *rawClient, topic string, stop <-chan struct{}) *canary {
	res := &canary{}
	for i := 1; i <= 100_000; i++ { // bounded; stop ends it much sooner
		select {
		case <-stop:
			return res
		default:
		}
		id := uint16(i%60000 + 1)
		t0 := time.Now()
		payload := strconv.Itoa(i)
		if _, err := a.conn.Write(mqtt.AppendPublish(nil, topic, []byte(payload), 1, false, false, id)); err != nil {
			res.err = err
			return res
		}
		got := false
		for !got {
			p, err := b.tryRead(5 * time.Second)
			if err != nil {
				res.lost++
				res.err = fmt.Errorf("canary round %d: subscriber: %w", i, err)
				return res
			}
			if p.Type == mqtt.TypePublish {
				b.conn.Write(mqtt.AppendPuback(nil, p.ID))
				got = p.Payload == payload
			}
		}
		for {
			p, err := a.tryRead(5 * time.Second)
			if err != nil {
				res.err = fmt.Errorf("canary round %d: publisher: %w", i, err)
				return res
			}
			if p.Type == mqtt.TypePuback && p.ID == id {
				break
			}
		}
		res.rounds++
		res.worst = max(res.worst, time.Since(t0))
		time.Sleep(2 * time.Millisecond)
	}
	return res
}

// TestRetainedScanKeepsLoopResponsive: a SUBSCRIBE whose wildcard filters
// match many retained topics gets its SUBACK first and then exactly the
// matching retained messages (none of the reserved topics), while a canary
// pair on the same loop keeps its QoS 1 round trips.
func TestRetainedScanKeepsLoopResponsive(t *testing.T) {
	const groups, perGroup = 100, 500 // 50,000 retained topics
	s := startServer(t, func(c *Config) { c.Loops = 1; c.PublishRate = -1 })
	payload := []byte("retained-payload")
	for g := range groups {
		for i := range perGroup {
			if !s.tree.setRetained(fmt.Appendf(nil, "dev/%d/%d", g, i), payload, 1, s.cfg.MaxRetained) {
				t.Fatal("set retained: store full")
			}
		}
	}
	for _, reserved := range []string{"$SYS/load", "p/bob", "u/x", "r", "g/team/1"} {
		s.tree.setRetained([]byte(reserved), payload, 1, s.cfg.MaxRetained)
	}
	if n := s.tree.retainedCount(); n != groups*perGroup+5 {
		t.Fatalf("retained count %d, want %d", n, groups*perGroup+5)
	}

	ca, cb := dial(t, s), dial(t, s)
	ca.connect("canary-a", false)
	cb.connect("canary-b", false)
	cb.subscribe("canary/t", 1)
	// The machine's own noise (shared cores): the same canary for 1 s
	// with no scan.
	quiet := make(chan struct{})
	time.AfterFunc(time.Second, func() { close(quiet) })
	base := runCanary(ca, cb, "canary/t", quiet)
	if base.err != nil {
		t.Fatalf("canary before the SUBSCRIBE: %v", base.err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var res *canary
	wg.Add(1)
	go func() {
		defer wg.Done()
		res = runCanary(ca, cb, "canary/t", stop)
	}()
	time.Sleep(20 * time.Millisecond)

	sub := dial(t, s)
	sub.connect("sub", false)
	// Three filters that match, 97 that match nothing: the old store
	// walked every retained topic for each of them on the loop (about
	// 5 ms per filter per 50k topics: half a second here).
	filters := []string{"#", "dev/+/7", "dev/3/#"}
	for k := range 97 {
		filters = append(filters, fmt.Sprintf("none/%d/+", k))
	}
	want := map[string]int{}
	for g := range groups {
		for i := range perGroup {
			topic := fmt.Sprintf("dev/%d/%d", g, i)
			for _, f := range filters {
				if matchFilter(f, topic) {
					want[topic]++
				}
			}
		}
	}
	total := 0
	for _, n := range want {
		total += n
	}
	subs := make([]mqtt.Subscription, len(filters))
	granted := make([]byte, len(filters))
	for i, f := range filters {
		subs[i], granted[i] = mqtt.Subscription{Filter: f, QoS: 1}, 1
	}
	sub.send(mqtt.AppendSubscribe(nil, 1, subs...))
	if p := sub.read(); p.Type != mqtt.TypeSuback || !slices.Equal(p.SubCodes, granted) {
		t.Fatalf("first packet %v %+v, want SUBACK granting QoS 1 to all %d filters", p.Type, p, len(filters))
	}
	got := map[string]int{}
	start := time.Now()
	for n := 0; n < total; n++ {
		p := sub.read()
		if p.Type == mqtt.TypePublish && p.Topic == "canary/t" && !p.Retain {
			sub.puback(p.ID) // "#" matches the canary's live traffic too
			n--
			continue
		}
		if p.Type != mqtt.TypePublish || !p.Retain || p.QoS != 1 || p.Payload != string(payload) {
			t.Fatalf("message %d: %v %+v, want a retained QoS 1 PUBLISH", n, p.Type, p)
		}
		got[p.Topic]++
		sub.puback(p.ID)
	}
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	for {
		p, err := sub.tryRead(100 * time.Millisecond)
		if err != nil {
			break // silence: nothing more
		}
		if p.Topic != "canary/t" || p.Retain {
			t.Fatalf("extra message after all the retained ones: %v %+v", p.Type, p)
		}
	}
	for topic, n := range got {
		if want[topic] != n {
			t.Fatalf("topic %q delivered %d times, want %d", topic, n, want[topic])
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d topics delivered, want %d", len(got), len(want))
	}
	if res.err != nil || res.lost != 0 {
		t.Fatalf("canary: %d rounds, %d lost: %v", res.rounds, res.lost, res.err)
	}
	t.Logf("%d retained deliveries in %v, longest scan slice %v; canary %d rounds, worst round trip %v (%v with no scan)",
		total, elapsed, s.longestScanSlice(), res.rounds, res.worst, base.worst)
	if res.rounds < 10 {
		t.Fatalf("canary made only %d rounds during the delivery", res.rounds)
	}
	// 50 ms is loose: a loop stalled by the SUBSCRIBE (half a second with
	// the old store) blows well past it. On a loaded machine the canary's
	// round trips stall on their own; then the bound is twice that noise.
	if bound := max(50*time.Millisecond*raceSlowdown, 2*base.worst); res.worst > bound {
		t.Fatalf("canary worst round trip %v (%v with no scan), want under %v while the scan runs", res.worst, base.worst, bound)
	}
}
