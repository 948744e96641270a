package mqtt

import (
	"bytes"
	"testing"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

func BenchmarkDecode(b *testing.B) {
	cases := []struct {
		name string
		wire []byte
	}{
		{"publish_small", AppendPublish(nil, "u/14155550123/m1", []byte("hello, world"), 1, false, false, 7)},
		{"publish_1KiB", AppendPublish(nil, "u/14155550123/m1", bytes.Repeat([]byte{'x'}, 1024), 1, false, false, 7)},
		{"puback", AppendPuback(nil, 7)},
		{"pingreq", AppendPingreq(nil)},
		{"subscribe_2_filters", AppendSubscribe(nil, 1, Subscription{"a/+/c", 1}, Subscription{"u/14155550123/#", 1})},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			var p Packet
			for b.Loop() {
				if n, err := Decode(c.wire, 1<<18, &p); n != len(c.wire) || err != nil {
					b.Fatal(n, err)
				}
				if p.Type == TypeSubscribe {
					it := p.NewFilterIter()
					for _, _, ok := it.Next(); ok; _, _, ok = it.Next() {
					}
				}
			}
		})
	}
}

func BenchmarkEncode(b *testing.B) {
	small := []byte("hello, world")
	big := bytes.Repeat([]byte{'x'}, 1024)
	topic := []byte("u/14155550123/m/14155550124/m1")
	dst := make([]byte, 0, 2048)
	b.Run("publish_small", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			dst = AppendPublish(dst[:0], topic, small, 1, false, false, 7)
		}
	})
	b.Run("publish_1KiB", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			dst = AppendPublish(dst[:0], topic, big, 1, false, false, 7)
		}
	})
	b.Run("puback", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			dst = AppendPuback(dst[:0], 7)
		}
	})
	b.Run("pingresp", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			dst = AppendPingresp(dst[:0])
		}
	})
}

func BenchmarkMatchTopic(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if !MatchTopic("sport/+/player1/#", "sport/tennis/player1/score/wimbledon") {
			b.Fatal("no match")
		}
	}
}

// BenchmarkPahoBaseline is the same work done by Eclipse Paho's packets
// package (a stock Go MQTT codec that reads from an io.Reader and allocates a
// packet struct per read), measured in the same run as the baseline.
func BenchmarkPahoBaseline(b *testing.B) {
	small := AppendPublish(nil, "u/14155550123/m1", []byte("hello, world"), 1, false, false, 7)
	big := AppendPublish(nil, "u/14155550123/m1", bytes.Repeat([]byte{'x'}, 1024), 1, false, false, 7)
	for _, c := range []struct {
		name string
		wire []byte
	}{{"decode_publish_small", small}, {"decode_publish_1KiB", big}, {"decode_puback", AppendPuback(nil, 7)}, {"decode_pingreq", AppendPingreq(nil)}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			r := bytes.NewReader(c.wire)
			for b.Loop() {
				r.Reset(c.wire)
				if _, err := packets.ReadPacket(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("encode_publish_small", func(b *testing.B) {
		b.ReportAllocs()
		var w bytes.Buffer
		pp := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
		pp.TopicName, pp.Payload, pp.Qos, pp.MessageID = "u/14155550123/m/14155550124/m1", []byte("hello, world"), 1, 7
		for b.Loop() {
			w.Reset()
			if err := pp.Write(&w); err != nil {
				b.Fatal(err)
			}
		}
	})
}
