package edge

import (
	"net"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
)

// FuzzSession sends arbitrary bytes after a valid CONNECT to a live server
// (real sockets) and checks that the server survives and keeps serving
// other clients. Run: go test -run='^$' -fuzz=FuzzSession ./edge/
func FuzzSession(f *testing.F) {
	for _, seed := range [][]byte{
		mqtt.AppendPublish(nil, "u/bob/m1", []byte("x"), 1, false, false, 1),
		mqtt.AppendPublish(nil, "a/b", []byte("x"), 2, true, false, 9),
		mqtt.AppendSubscribe(nil, 1, mqtt.Subscription{Filter: "#", QoS: 2}),
		mqtt.AppendPubrel(nil, 3),
		{0x30, 0xFF, 0xFF, 0xFF, 0x7F},
		{0x82, 5, 0, 1, 0, 1, '#'},
		{0xE0, 0},
	} {
		f.Add(seed)
	}
	s := startServer(f, func(c *Config) { c.Loops = 1; c.MaxPacketSize = 4096; c.AdminAddr = "" })
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: []byte("MQTT"), ProtocolLevel: 4, ClientID: []byte("fuzz"), CleanSession: true, KeepAlive: 30}))
		c.Write(data)
		// Drain whatever comes back until the server closes or goes quiet.
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		buf := make([]byte, 4096)
		for {
			if _, err := c.Read(buf); err != nil {
				break
			}
		}
		// The server still serves a fresh client.
		p := dial(t, s)
		p.connect("probe", false)
		p.send(mqtt.AppendPingreq(nil))
		p.expect(mqtt.TypePingresp)
	})
}
