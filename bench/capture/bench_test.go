package capture

import (
	"bytes"
	"testing"

	"github.com/edgedhq/edged/edge/mqtt"
)

// benchCapture crafts a capture of n sessions, each: handshake, CONNECT,
// CONNACK, 20 PUBLISH of 200 B with their PUBACKs, DISCONNECT, FIN.
func benchCapture(b *testing.B, n int) (data []byte, packets int) {
	var frames []frame
	for i := 0; i < n; i++ {
		c := newCrafter(b)
		c.cport = uint16(20000 + i)
		c.handshake()
		c.send(true, mqtt.AppendConnect(nil, &mqtt.Connect{CleanSession: true, KeepAlive: 60, ClientID: []byte("bench0001")}))
		c.send(false, mqtt.AppendConnack(nil, false, 0))
		for j := 1; j <= 20; j++ {
			c.send(true, mqtt.AppendPublish(nil, "u/peer0001/m", make([]byte, 200), 1, false, false, uint16(j)))
			c.send(false, mqtt.AppendPuback(nil, uint16(j)))
		}
		c.send(true, mqtt.AppendDisconnect(nil))
		c.add(c.tcp(true, "FA", c.cseq, nil))
		frames = append(frames, c.frames...)
	}
	return pcapBytes(b, frames), len(frames)
}

// BenchmarkRead measures Load's work per capture: pcap parsing, layer
// decoding, TCP reassembly and MQTT decoding of 100 sessions.
func BenchmarkRead(b *testing.B) {
	data, packets := benchCapture(b, 100)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		w, err := Read(bytes.NewReader(data), 1883)
		if err != nil || len(w.Sessions) != 100 {
			b.Fatalf("Read: %v", err)
		}
	}
	b.ReportMetric(float64(packets)*float64(b.N)/b.Elapsed().Seconds(), "packets/s")
}
