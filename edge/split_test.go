package edge

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
)

// TestSplitPackets sends a stream of PUBLISH packets (small ones and one
// close to the maximum packet size) cut at awkward places, so that the
// server sees partial packets next to complete ones in one read, and
// checks that every message is acknowledged and delivered exactly once, in
// order.
func TestSplitPackets(t *testing.T) {
	s := startServer(t, func(c *Config) { c.MaxPacketSize = 256 << 10 })
	sub := dial(t, s)
	sub.connect("sink", false)
	sub.subscribe("split/#", 1)
	pub := dial(t, s)
	pub.connect("source", false)
	var stream []byte
	const n = 60
	for i := range n {
		size := 10 + i*7
		if i == n/2 {
			size = 200 << 10
		}
		payload := bytes.Repeat([]byte{byte('a' + i%26)}, size)
		stream = mqtt.AppendPublish(stream, fmt.Sprint("split/", i), payload, 1, false, false, uint16(i+1))
	}
	cuts := []int{1, 2, 3, 5, 7, 11, 13, 17, 4000, 70000}
	go func() {
		for i, k := 0, 0; i < len(stream); k++ {
			step := cuts[k%len(cuts)]
			end := min(i+step, len(stream))
			pub.conn.Write(stream[i:end])
			i = end
			if k%3 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	for i := range n {
		p := pub.expect(mqtt.TypePuback)
		if p.ID != uint16(i+1) {
			t.Fatalf("PUBACK %d, want %d", p.ID, i+1)
		}
	}
	for i := range n {
		p := sub.expect(mqtt.TypePublish)
		if p.Topic != fmt.Sprint("split/", i) {
			t.Fatalf("delivery %d: topic %s", i, p.Topic)
		}
		sub.puback(p.ID)
	}
	sub.expectSilence(200 * time.Millisecond)
}
