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

// newBenchConn5 logs in as id with MQTT 5.0 and the CONNECT properties
// props; the connection then decodes v5 packets.
func newBenchConn5(b *testing.B, s *Server, id string, props []byte) *benchConn {
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	bc := &benchConn{c: c, buf: make([]byte, 64<<10), out: make([]byte, 0, 256), v5: true}
	bc.write(mqtt.AppendConnect5(bc.out[:0], &mqtt.Connect{ClientID: []byte(id), CleanSession: true, KeepAlive: 60}, props))
	if bc.next().Type != mqtt.TypeConnack || bc.p.ReasonCode != 0 {
		b.Fatalf("connect %s failed", id)
	}
	return bc
}

// BenchmarkGenericV5 measures a generic QoS 1 message between two MQTT 5.0
// clients over real loopback sockets: the publisher's PUBLISH on
// bench/sensors/temperature, its PUBACK, the delivery to the subscriber
// and the subscriber's PUBACK. alias=on: the subscriber's CONNECT has a
// Topic Alias Maximum, so each delivery but the first carries the alias
// instead of the topic (send5, outAlias). The client side is
// allocation-free, so allocs/op are the server's.
func BenchmarkGenericV5(b *testing.B) {
	for _, alias := range []bool{false, true} {
		b.Run(fmt.Sprintf("alias=%v", map[bool]string{false: "off", true: "on"}[alias]), func(b *testing.B) {
			s := startServer(b, func(c *Config) { c.PublishRate = -1; c.AdminAddr = "" })
			var props []byte
			if alias {
				props = mqtt.AppendU16Prop(nil, mqtt.PropTopicAliasMaximum, 4)
			}
			sub := newBenchConn5(b, s, "sub", props)
			sub.write(mqtt.AppendSubscribe5(nil, 1, nil, mqtt.Subscription5{Filter: "bench/sensors/#", QoS: 1}))
			if sub.next().Type != mqtt.TypeSuback {
				b.Fatal("no SUBACK")
			}
			pub := newBenchConn5(b, s, "pub", nil)
			topic := "bench/sensors/temperature"
			payload := make([]byte, 16)
			var pid uint16
			b.ReportAllocs()
			for b.Loop() {
				pid++
				if pid == 0 {
					pid = 1
				}
				pub.write(mqtt.AppendPublish5(pub.out[:0], topic, payload, 1, false, false, pid, nil))
				if p := pub.next(); p.Type != mqtt.TypePuback {
					b.Fatalf("publisher got %v", p.Type)
				}
				p := sub.next()
				if p.Type != mqtt.TypePublish || alias && p.Props.TopicAlias == 0 {
					b.Fatalf("subscriber got %v alias %d", p.Type, p.Props.TopicAlias)
				}
				sub.write(mqtt.AppendAck5(sub.out[:0], mqtt.TypePuback, p.PacketID, 0, nil))
			}
		})
	}
}
