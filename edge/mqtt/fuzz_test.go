package mqtt

import (
	"bytes"
	"reflect"
	"testing"
)

// FuzzDecode decodes arbitrary bytes as a stream of packets. Decode must
// never panic; every packet it accepts must re-encode with AppendPacket and
// decode again to the same value. The seed corpus lives in
// testdata/fuzz/FuzzDecode. The same bytes also go through Decode5 (the
// MQTT 5.0 decoder) with the same properties (fuzzDecode5).
func FuzzDecode(f *testing.F) {
	for _, g := range goldens() {
		f.Add(g.wire)
	}
	for _, g := range goldens5() {
		f.Add(g.wire)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzDecode5(t, data)
		buf := data
		for range 64 {
			var p Packet
			n, err := Decode(buf, 0, &p)
			if err != nil || n == 0 {
				if n != 0 {
					t.Fatalf("Decode returned n=%d with error %v", n, err)
				}
				if err == nil {
					// Partial: the fixed header says how much is missing.
					if tl, herr := PacketLen(buf, 0); herr != nil || (tl != 0 && tl <= len(buf)) {
						t.Fatalf("partial packet but PacketLen = %d, %v (have %d bytes)", tl, herr, len(buf))
					}
				}
				return
			}
			if n > len(buf) {
				t.Fatalf("n = %d > len(buf) = %d", n, len(buf))
			}
			if tl, err := PacketLen(buf, 0); tl != n || err != nil {
				t.Fatalf("PacketLen = %d, %v; Decode consumed %d", tl, err, n)
			}
			if _, err := Decode(buf, n-1, new(Packet)); err != ErrPacketTooLarge {
				t.Fatalf("Decode(max=n-1) err = %v; want ErrPacketTooLarge", err)
			}
			got := norm(p)
			enc, err := AppendPacket(nil, &p)
			if err != nil {
				t.Fatalf("AppendPacket(%+v): %v", got, err)
			}
			if len(enc) > n {
				t.Fatalf("re-encoding grew from %d to %d bytes", n, len(enc))
			}
			var q Packet
			if m, err := Decode(enc, 0, &q); m != len(enc) || err != nil {
				t.Fatalf("re-decode = %d, %v", m, err)
			}
			if !reflect.DeepEqual(norm(q), got) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", norm(q), got)
			}
			if len(enc) == n && !bytes.Equal(enc, buf[:n]) {
				// Same length means the input used the minimal remaining
				// length encoding too, so the bytes must be identical.
				t.Fatalf("re-encoding differs:\n got % x\nwant % x", enc, buf[:n])
			}
			count := 0
			it := p.NewFilterIter()
			for fl, qos, ok := it.Next(); ok; fl, qos, ok = it.Next() {
				if ValidTopicFilter(fl) != nil || qos > 2 {
					t.Fatalf("iterator yielded invalid filter %q qos %d", fl, qos)
				}
				count++
			}
			if count != p.NumFilters {
				t.Fatalf("iterator yielded %d filters; NumFilters = %d", count, p.NumFilters)
			}
			if p.Type == TypePublish && ValidTopicName(p.Topic) != nil {
				t.Fatalf("accepted invalid topic %q", p.Topic)
			}
			buf = buf[n:]
		}
	})
}

// fuzzDecode5 decodes data as a stream of v5 packets: Decode5 must never
// panic, every error must map to a failure reason code, and every packet
// it accepts must re-encode with AppendPacket5 to an equal packet.
func fuzzDecode5(t *testing.T, data []byte) {
	buf := data
	for range 64 {
		var p Packet
		n, err := Decode5(buf, 0, &p)
		if err != nil || n == 0 {
			if n != 0 {
				t.Fatalf("Decode5 returned n=%d with error %v", n, err)
			}
			if err != nil && ReasonCode(err) < 0x80 {
				t.Fatalf("ReasonCode(%v) = %#x: not a failure", err, ReasonCode(err))
			}
			if err == nil {
				if tl, herr := PacketLen5(buf, 0); herr != nil || (tl != 0 && tl <= len(buf)) {
					t.Fatalf("partial packet but PacketLen5 = %d, %v (have %d bytes)", tl, herr, len(buf))
				}
			}
			return
		}
		if tl, err := PacketLen5(buf, 0); tl != n || err != nil {
			t.Fatalf("PacketLen5 = %d, %v; Decode5 consumed %d", tl, err, n)
		}
		got := norm5(p)
		enc, err := AppendPacket5(nil, &p)
		if err != nil {
			t.Fatalf("AppendPacket5(%+v): %v", got, err)
		}
		if len(enc) > n {
			t.Fatalf("re-encoding grew from %d to %d bytes", n, len(enc))
		}
		var q Packet
		if m, err := Decode5(enc, 0, &q); m != len(enc) || err != nil {
			t.Fatalf("re-decode = %d, %v", m, err)
		}
		if !reflect.DeepEqual(norm5(q), got) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", norm5(q), got)
		}
		it := p.NewFilterIter()
		for fl, o, ok := it.NextOptions(); ok; fl, o, ok = it.NextOptions() {
			if _, _, shared := SplitShared(fl); !shared && ValidTopicFilter(fl) != nil || o&3 > 2 || RetainHandling(o) > 2 {
				t.Fatalf("iterator yielded invalid filter %q options %#x", fl, o)
			}
		}
		for range UserProps(p.Props.Raw) {
		}
		if p.Type == TypePublish && len(p.Topic) > 0 && ValidTopicName(p.Topic) != nil {
			t.Fatalf("accepted invalid topic %q", p.Topic)
		}
		buf = buf[n:]
	}
}
