package edge

import (
	"fmt"
	"net"
	"runtime"
	"testing"

	"github.com/edgedhq/edged/edge/mqtt"
)

// BenchmarkIdleSessionV5 measures what an idle MQTT 5.0 session costs
// beside a 3.1.1 one, in one process: n real loopback connections of each
// version (each a distinct user that carries one direct message to itself
// and its receipt, then stays idle), heap in use after a forced GC before
// and after each batch, per session. A warm-up batch of each version goes
// first (not measured: the loops' one-off pools and chunks), and both
// orders are run. The 2 x (warm-up + n) connections hold 2 fds each in
// this process, under the machine's 20,000. The client ends of the sockets
// are in the same heap and the same for both versions, so the difference
// is the server's: conn5 plus its map slot.
func BenchmarkIdleSessionV5(b *testing.B) {
	const n, warm = 2000, 1000
	for _, order := range [][2]byte{{mqtt.Level311, mqtt.Level5}, {mqtt.Level5, mqtt.Level311}} {
		b.Run(fmt.Sprintf("first=v%d", order[0]), func(b *testing.B) {
			for b.Loop() {
				s := startServer(b, func(c *Config) { c.AdminAddr = "" })
				var conns []net.Conn
				heap := func() uint64 {
					var m runtime.MemStats
					runtime.GC()
					runtime.GC()
					runtime.ReadMemStats(&m)
					return m.HeapAlloc
				}
				for i := range warm {
					conns = append(conns, idleClient(b, s, fmt.Sprintf("w4-%d", i), mqtt.Level311),
						idleClient(b, s, fmt.Sprintf("w5-%d", i), mqtt.Level5))
				}
				per := map[byte]float64{}
				for bi, level := range order {
					h0 := heap()
					for i := range n {
						conns = append(conns, idleClient(b, s, fmt.Sprintf("u%d-%d", bi, i), level))
					}
					per[level] = float64(heap()-h0) / n
				}
				b.ReportMetric(per[mqtt.Level311], "v311-heap-B/session")
				b.ReportMetric(per[mqtt.Level5], "v5-heap-B/session")
				b.ReportMetric(per[mqtt.Level5]-per[mqtt.Level311], "v5-extra-B/session")
				for _, c := range conns {
					c.Close()
				}
				s.Close()
			}
		})
	}
}

// idleClient connects user id at the protocol level, sends itself a
// direct message, acknowledges it and its receipt, and leaves the
// connection idle.
func idleClient(b *testing.B, s *Server, id string, level byte) net.Conn {
	if level == mqtt.Level5 {
		c := dial5(b, s)
		c.login(id)
		c.publish("u/"+id+"/m1", "hi", 1, nil)
		for got := 0; got < 3; { // PUBACK, the message, its receipt
			p := c.read()
			switch p.Type {
			case mqtt.TypePuback:
				got++
			case mqtt.TypePublish:
				c.send(mqtt.AppendPuback(nil, p.ID))
				got++
			}
		}
		c.ping()
		return c.conn
	}
	c := dial(b, s)
	c.connect(id, false)
	c.publish("u/"+id+"/m1", "hi", 1)
	for got := 0; got < 3; {
		p := c.read()
		switch p.Type {
		case mqtt.TypePuback:
			got++
		case mqtt.TypePublish:
			c.puback(p.ID)
			got++
		}
	}
	c.send(mqtt.AppendPingreq(nil))
	c.expect(mqtt.TypePingresp)
	return c.conn
}
