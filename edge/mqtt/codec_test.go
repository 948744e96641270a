package mqtt

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// b is shorthand for a byte slice literal built from strings and bytes.
func b(parts ...any) []byte {
	var out []byte
	for _, p := range parts {
		switch v := p.(type) {
		case string:
			out = append(out, v...)
		case int:
			out = append(out, byte(v))
		case []byte:
			out = append(out, v...)
		default:
			panic("b: bad part")
		}
	}
	return out
}

// norm makes empty slices nil so that packets compare by content.
func norm(p Packet) Packet {
	fix := func(s *[]byte) {
		if len(*s) == 0 {
			*s = nil
		}
	}
	for _, s := range []*[]byte{&p.Topic, &p.Payload, &p.RawFilters, &p.ReturnCodes,
		&p.Connect.ProtocolName, &p.Connect.ClientID, &p.Connect.WillTopic,
		&p.Connect.WillMessage, &p.Connect.Username, &p.Connect.Password} {
		fix(s)
	}
	return p
}

type golden struct {
	name string
	wire []byte // hand-computed from the 3.1.1 spec
	want Packet
	enc  func(dst []byte) []byte // the dedicated encoder producing wire
}

func goldens() []golden {
	payload321 := bytes.Repeat([]byte{'x'}, 321-2-3)
	return []golden{
		{"connect minimal", b(0x10, 0x0C, 0, 4, "MQTT", 4, 0x02, 0, 60, 0, 0),
			Packet{Type: TypeConnect, Connect: Connect{ProtocolName: []byte("MQTT"), ProtocolLevel: 4, CleanSession: true, KeepAlive: 60}},
			func(d []byte) []byte { return AppendConnect(d, &Connect{CleanSession: true, KeepAlive: 60}) }},
		// flags 0xEE = username|password|will retain|will QoS 1|will|clean
		{"connect full", b(0x10, 31, 0, 4, "MQTT", 4, 0xEE, 0x01, 0x2C, 0, 3, "cid", 0, 3, "w/t", 0, 2, "wm", 0, 1, "u", 0, 2, "pw"),
			Packet{Type: TypeConnect, Connect: Connect{ProtocolName: []byte("MQTT"), ProtocolLevel: 4, CleanSession: true, KeepAlive: 300,
				ClientID: []byte("cid"), WillFlag: true, WillQoS: 1, WillRetain: true, WillTopic: []byte("w/t"), WillMessage: []byte("wm"),
				UsernameFlag: true, Username: []byte("u"), PasswordFlag: true, Password: []byte("pw")}},
			func(d []byte) []byte {
				return AppendConnect(d, &Connect{CleanSession: true, KeepAlive: 300, ClientID: []byte("cid"), WillFlag: true, WillQoS: 1,
					WillRetain: true, WillTopic: []byte("w/t"), WillMessage: []byte("wm"), UsernameFlag: true, Username: []byte("u"),
					PasswordFlag: true, Password: []byte("pw")})
			}},
		{"connect mqisdp v3.1", b(0x10, 17, 0, 6, "MQIsdp", 3, 0x00, 0, 10, 0, 3, "abc"),
			Packet{Type: TypeConnect, Connect: Connect{ProtocolName: []byte("MQIsdp"), ProtocolLevel: 3, KeepAlive: 10, ClientID: []byte("abc")}},
			func(d []byte) []byte {
				return AppendConnect(d, &Connect{ProtocolName: []byte("MQIsdp"), ProtocolLevel: 3, KeepAlive: 10, ClientID: []byte("abc")})
			}},
		{"connack accepted", b(0x20, 2, 0, 0), Packet{Type: TypeConnack},
			func(d []byte) []byte { return AppendConnack(d, false, ConnAccepted) }},
		{"connack session present", b(0x20, 2, 1, 0), Packet{Type: TypeConnack, SessionPresent: true},
			func(d []byte) []byte { return AppendConnack(d, true, ConnAccepted) }},
		{"connack not authorized", b(0x20, 2, 0, 5), Packet{Type: TypeConnack, ReturnCode: ConnRefusedNotAuthorized},
			func(d []byte) []byte { return AppendConnack(d, true, ConnRefusedNotAuthorized) }},
		{"publish qos0", b(0x30, 7, 0, 3, "a/b", "hi"), Packet{Type: TypePublish, Topic: []byte("a/b"), Payload: []byte("hi")},
			func(d []byte) []byte { return AppendPublish(d, "a/b", []byte("hi"), 0, false, false, 0) }},
		{"publish qos0 empty payload retain", b(0x31, 5, 0, 3, "a/b"), Packet{Type: TypePublish, Flags: 1, Retain: true, Topic: []byte("a/b")},
			func(d []byte) []byte { return AppendPublish(d, "a/b", nil, 0, true, false, 0) }},
		{"publish qos1", b(0x32, 9, 0, 3, "a/b", 0, 10, "hi"), Packet{Type: TypePublish, Flags: 2, QoS: 1, Topic: []byte("a/b"), PacketID: 10, Payload: []byte("hi")},
			func(d []byte) []byte { return AppendPublish(d, []byte("a/b"), []byte("hi"), 1, false, false, 10) }},
		{"publish qos2 dup", b(0x3C, 7, 0, 3, "a/b", 0xFF, 0xFF), Packet{Type: TypePublish, Flags: 0xC, Dup: true, QoS: 2, Topic: []byte("a/b"), PacketID: 65535},
			func(d []byte) []byte { return AppendPublish(d, "a/b", nil, 2, false, true, 65535) }},
		// Remaining length 321 encodes as 0xC1 0x02 (spec 2.2.3 example).
		{"publish rl 321", b(0x30, 0xC1, 0x02, 0, 3, "a/b", payload321), Packet{Type: TypePublish, Topic: []byte("a/b"), Payload: payload321},
			func(d []byte) []byte { return AppendPublish(d, "a/b", payload321, 0, false, false, 0) }},
		{"puback", b(0x40, 2, 0, 10), Packet{Type: TypePuback, PacketID: 10}, func(d []byte) []byte { return AppendPuback(d, 10) }},
		{"pubrec", b(0x50, 2, 1, 0), Packet{Type: TypePubrec, PacketID: 256}, func(d []byte) []byte { return AppendPubrec(d, 256) }},
		{"pubrel", b(0x62, 2, 0, 1), Packet{Type: TypePubrel, Flags: 2, PacketID: 1}, func(d []byte) []byte { return AppendPubrel(d, 1) }},
		{"pubcomp", b(0x70, 2, 0, 1), Packet{Type: TypePubcomp, PacketID: 1}, func(d []byte) []byte { return AppendPubcomp(d, 1) }},
		{"subscribe", b(0x82, 16, 0, 1, 0, 3, "a/b", 1, 0, 5, "+/x/#", 2), Packet{Type: TypeSubscribe, Flags: 2, PacketID: 1,
			RawFilters: b(0, 3, "a/b", 1, 0, 5, "+/x/#", 2), NumFilters: 2},
			func(d []byte) []byte { return AppendSubscribe(d, 1, Subscription{"a/b", 1}, Subscription{"+/x/#", 2}) }},
		{"suback", b(0x90, 5, 0, 1, 0, 2, 0x80), Packet{Type: TypeSuback, PacketID: 1, ReturnCodes: b(0, 2, 0x80)},
			func(d []byte) []byte { return AppendSuback(d, 1, b(0, 2, 0x80)) }},
		{"unsubscribe", b(0xA2, 10, 0, 2, 0, 3, "a/b", 0, 1, "#"), Packet{Type: TypeUnsubscribe, Flags: 2, PacketID: 2,
			RawFilters: b(0, 3, "a/b", 0, 1, "#"), NumFilters: 2},
			func(d []byte) []byte { return AppendUnsubscribe(d, 2, "a/b", "#") }},
		{"unsuback", b(0xB0, 2, 0, 2), Packet{Type: TypeUnsuback, PacketID: 2}, func(d []byte) []byte { return AppendUnsuback(d, 2) }},
		{"pingreq", b(0xC0, 0), Packet{Type: TypePingreq}, AppendPingreq},
		{"pingresp", b(0xD0, 0), Packet{Type: TypePingresp}, AppendPingresp},
		{"disconnect", b(0xE0, 0), Packet{Type: TypeDisconnect}, AppendDisconnect},
	}
}

func TestGolden(t *testing.T) {
	for _, g := range goldens() {
		t.Run(g.name, func(t *testing.T) {
			var p Packet
			n, err := Decode(g.wire, 0, &p)
			if err != nil || n != len(g.wire) {
				t.Fatalf("Decode = %d, %v; want %d, nil", n, err, len(g.wire))
			}
			if got, want := norm(p), norm(g.want); !reflect.DeepEqual(got, want) {
				t.Fatalf("Decode:\n got %+v\nwant %+v", got, want)
			}
			if got := g.enc([]byte("prefix")); !bytes.Equal(got, b("prefix", g.wire)) {
				t.Fatalf("encoder:\n got % x\nwant % x", got, b("prefix", g.wire))
			}
			re, err := AppendPacket([]byte("pre"), &p)
			if err != nil || !bytes.Equal(re, b("pre", g.wire)) {
				t.Fatalf("AppendPacket = % x, %v; want % x", re, err, g.wire)
			}
			if tl, err := PacketLen(g.wire, 0); tl != len(g.wire) || err != nil {
				t.Fatalf("PacketLen = %d, %v", tl, err)
			}
			// Every strict prefix is a partial packet.
			for k := range len(g.wire) {
				if n, err := Decode(g.wire[:k], 0, &p); n != 0 || err != nil {
					t.Fatalf("Decode(prefix %d) = %d, %v; want 0, nil", k, n, err)
				}
			}
			// A limit of exactly the packet size is accepted, one less refused.
			if n, err := Decode(g.wire, len(g.wire), &p); n != len(g.wire) || err != nil {
				t.Fatalf("Decode(max=len) = %d, %v", n, err)
			}
			if _, err := Decode(g.wire, len(g.wire)-1, &p); err != ErrPacketTooLarge {
				t.Fatalf("Decode(max=len-1) err = %v; want ErrPacketTooLarge", err)
			}
		})
	}
}

// TestStreamSplits feeds a stream of all golden packets split at every
// point, as an event loop would see it across two reads.
func TestStreamSplits(t *testing.T) {
	gs := goldens()
	var stream []byte
	for _, g := range gs {
		stream = append(stream, g.wire...)
	}
	decodeAll := func(buf []byte, got *[]Packet) (consumed int) {
		for {
			var p Packet
			n, err := Decode(buf[consumed:], 0, &p)
			if err != nil {
				t.Fatalf("Decode at %d: %v", consumed, err)
			}
			if n == 0 {
				return consumed
			}
			*got = append(*got, norm(p))
			consumed += n
		}
	}
	for k := 0; k <= len(stream); k++ {
		var got []Packet
		// First read: stream[:k]; the loop copies the partial tail out and
		// appends the second read.
		c := decodeAll(stream[:k], &got)
		rest := append(append([]byte(nil), stream[c:k]...), stream[k:]...)
		if c2 := decodeAll(rest, &got); c2 != len(rest) {
			t.Fatalf("split %d: %d bytes left undecoded", k, len(rest)-c2)
		}
		if len(got) != len(gs) {
			t.Fatalf("split %d: decoded %d packets, want %d", k, len(got), len(gs))
		}
		for i, g := range gs {
			if !reflect.DeepEqual(got[i], norm(g.want)) {
				t.Fatalf("split %d packet %d (%s):\n got %+v\nwant %+v", k, i, g.name, got[i], norm(g.want))
			}
		}
	}
}

func TestFilterIter(t *testing.T) {
	var p Packet
	if _, err := Decode(b(0x82, 16, 0, 1, 0, 3, "a/b", 1, 0, 5, "+/x/#", 2), 0, &p); err != nil {
		t.Fatal(err)
	}
	type fq struct {
		f string
		q byte
	}
	var got []fq
	for f, q := range p.Filters() {
		got = append(got, fq{string(f), q})
	}
	want := []fq{{"a/b", 1}, {"+/x/#", 2}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Filters = %v; want %v", got, want)
	}
	// Early break works.
	for range p.Filters() {
		break
	}
	got = got[:0]
	it := p.NewFilterIter()
	for f, q, ok := it.Next(); ok; f, q, ok = it.Next() {
		got = append(got, fq{string(f), q})
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("FilterIter = %v; want %v", got, want)
	}
	// Aliases are capacity-limited: appending to one does not touch buf.
	it = p.NewFilterIter()
	f, _, _ := it.Next()
	_ = append(f, 'Z')
	if p.RawFilters[5] != 1 {
		t.Fatal("append to an aliased filter overwrote the buffer")
	}
	// Iterators of other packet types yield nothing.
	var q Packet
	if _, err := Decode(b(0xC0, 0), 0, &q); err != nil {
		t.Fatal(err)
	}
	for range q.Filters() {
		t.Fatal("PINGREQ yielded a filter")
	}
}

func TestDecodeErrors(t *testing.T) {
	long := strings.Repeat("a", 200)
	tests := []struct {
		name string
		wire []byte
		max  int
		err  error
	}{
		{"reserved type 0", b(0x00, 0), 0, ErrPacketType},
		{"reserved type 15", b(0xF0, 0), 0, ErrPacketType},
		{"type checked from first byte alone", b(0xF0), 0, ErrPacketType},
		{"remaining length 5 bytes", b(0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01), 0, ErrRemainingLength},
		{"remaining length 4 continuation bytes before body", b(0x30, 0x80, 0x80, 0x80, 0x80), 0, ErrRemainingLength},
		{"too large from header alone", b(0x30, 0xC1, 0x02), 100, ErrPacketTooLarge},
		{"too large max remaining length", b(0x30, 0xFF, 0xFF, 0xFF, 0x7F), 1 << 20, ErrPacketTooLarge},
		{"connack flags", b(0x21, 2, 0, 0), 0, ErrFlags},
		{"puback flags", b(0x42, 2, 0, 1), 0, ErrFlags},
		{"pubrel flags 0", b(0x60, 2, 0, 1), 0, ErrFlags},
		{"subscribe flags 0", b(0x80, 8, 0, 1, 0, 3, "a/b", 1), 0, ErrFlags},
		{"unsubscribe flags 0", b(0xA0, 7, 0, 1, 0, 3, "a/b"), 0, ErrFlags},
		{"pingreq flags", b(0xC1, 0), 0, ErrFlags},
		{"disconnect flags", b(0xE8, 0), 0, ErrFlags},
		{"connect flags", b(0x11, 0), 0, ErrFlags},
		{"publish qos3", b(0x36, 5, 0, 3, "a/b"), 0, ErrQoS},
		{"publish dup qos0", b(0x38, 5, 0, 3, "a/b"), 0, ErrDupQoS0},
		{"publish empty topic", b(0x30, 2, 0, 0), 0, ErrEmptyTopic},
		{"publish wildcard +", b(0x30, 5, 0, 3, "a/+"), 0, ErrTopicName},
		{"publish wildcard #", b(0x30, 3, 0, 1, "#"), 0, ErrTopicName},
		{"publish topic NUL", b(0x30, 5, 0, 3, "a", 0, "b"), 0, ErrUTF8},
		{"publish topic bad utf8", b(0x30, 5, 0, 3, "a", 0xFF, "b"), 0, ErrUTF8},
		{"publish topic surrogate", b(0x30, 5, 0, 3, 0xED, 0xA0, 0x80), 0, ErrUTF8},
		{"publish topic overlong", b(0x30, 4, 0, 2, 0xC0, 0xAF), 0, ErrUTF8},
		{"publish topic past rl", b(0x30, 3, 0, 5, "a"), 0, ErrMalformed},
		{"publish no topic length", b(0x30, 1, 0), 0, ErrMalformed},
		{"publish qos1 no id", b(0x32, 5, 0, 3, "a/b"), 0, ErrMalformed},
		{"publish qos1 half id", b(0x32, 6, 0, 3, "a/b", 0), 0, ErrMalformed},
		{"publish qos1 id 0", b(0x32, 7, 0, 3, "a/b", 0, 0), 0, ErrPacketID},
		{"puback id 0", b(0x40, 2, 0, 0), 0, ErrPacketID},
		{"puback short", b(0x40, 1, 0), 0, ErrMalformed},
		{"puback trailing", b(0x40, 3, 0, 1, 0), 0, ErrMalformed},
		{"pubrec id 0", b(0x50, 2, 0, 0), 0, ErrPacketID},
		{"pubrel id 0", b(0x62, 2, 0, 0), 0, ErrPacketID},
		{"pubcomp id 0", b(0x70, 2, 0, 0), 0, ErrPacketID},
		{"unsuback id 0", b(0xB0, 2, 0, 0), 0, ErrPacketID},
		{"pingreq trailing", b(0xC0, 1, 0), 0, ErrMalformed},
		{"pingresp trailing", b(0xD0, 1, 0), 0, ErrMalformed},
		{"disconnect trailing", b(0xE0, 1, 0), 0, ErrMalformed},
		{"connack short", b(0x20, 1, 0), 0, ErrMalformed},
		{"connack reserved ack flags", b(0x20, 2, 2, 0), 0, ErrMalformed},
		{"connack reserved code", b(0x20, 2, 0, 6), 0, ErrMalformed},
		{"connack session present with refusal", b(0x20, 2, 1, 5), 0, ErrMalformed},
		{"connect protocol name", b(0x10, 12, 0, 4, "MQTX", 4, 2, 0, 60, 0, 0), 0, ErrProtocolName},
		{"connect protocol level 5", b(0x10, 12, 0, 4, "MQTT", 5, 2, 0, 60, 0, 0), 0, ErrProtocolLevel},
		{"connect protocol level 3 with MQTT", b(0x10, 12, 0, 4, "MQTT", 3, 2, 0, 60, 0, 0), 0, ErrProtocolLevel},
		{"connect MQIsdp level 4", b(0x10, 14, 0, 6, "MQIsdp", 4, 2, 0, 60, 0, 0), 0, ErrProtocolLevel},
		{"connect reserved flag", b(0x10, 12, 0, 4, "MQTT", 4, 3, 0, 60, 0, 0), 0, ErrConnectFlags},
		{"connect will qos without will", b(0x10, 12, 0, 4, "MQTT", 4, 0x0A, 0, 60, 0, 0), 0, ErrWillFlags},
		{"connect will retain without will", b(0x10, 12, 0, 4, "MQTT", 4, 0x22, 0, 60, 0, 0), 0, ErrWillFlags},
		{"connect will qos 3", b(0x10, 18, 0, 4, "MQTT", 4, 0x1E, 0, 60, 0, 0, 0, 1, "t", 0, 1, "m"), 0, ErrQoS},
		{"connect password without username", b(0x10, 14, 0, 4, "MQTT", 4, 0x42, 0, 60, 0, 0, 0, 0), 0, ErrPasswordWithoutUsername},
		{"connect client id bad utf8", b(0x10, 13, 0, 4, "MQTT", 4, 2, 0, 60, 0, 1, 0xC3), 0, ErrUTF8},
		{"connect client id NUL", b(0x10, 13, 0, 4, "MQTT", 4, 2, 0, 60, 0, 1, 0), 0, ErrUTF8},
		{"connect username bad utf8", b(0x10, 15, 0, 4, "MQTT", 4, 0x82, 0, 60, 0, 0, 0, 1, 0xFF), 0, ErrUTF8},
		{"connect will topic wildcard", b(0x10, 18, 0, 4, "MQTT", 4, 0x06, 0, 60, 0, 0, 0, 1, "#", 0, 1, "m"), 0, ErrTopicName},
		{"connect will topic empty", b(0x10, 17, 0, 4, "MQTT", 4, 0x06, 0, 60, 0, 0, 0, 0, 0, 1, "m"), 0, ErrEmptyTopic},
		{"connect will topic past rl", b(0x10, 14, 0, 4, "MQTT", 4, 0x06, 0, 60, 0, 0, 0, 9), 0, ErrMalformed},
		{"connect missing will message", b(0x10, 15, 0, 4, "MQTT", 4, 0x06, 0, 60, 0, 0, 0, 1, "t"), 0, ErrMalformed},
		{"connect missing username", b(0x10, 12, 0, 4, "MQTT", 4, 0x82, 0, 60, 0, 0), 0, ErrMalformed},
		{"connect missing password", b(0x10, 14, 0, 4, "MQTT", 4, 0xC2, 0, 60, 0, 0, 0, 0), 0, ErrMalformed},
		{"connect trailing", b(0x10, 13, 0, 4, "MQTT", 4, 2, 0, 60, 0, 0, 9), 0, ErrMalformed},
		{"connect short header", b(0x10, 8, 0, 4, "MQTT", 4, 2), 0, ErrMalformed},
		{"connect client id past rl", b(0x10, 12, 0, 4, "MQTT", 4, 2, 0, 60, 0, 5), 0, ErrMalformed},
		{"connect empty body", b(0x10, 0), 0, ErrMalformed},
		{"subscribe no filters", b(0x82, 2, 0, 1), 0, ErrNoFilters},
		{"subscribe id 0", b(0x82, 8, 0, 0, 0, 3, "a/b", 1), 0, ErrPacketID},
		{"subscribe short", b(0x82, 1, 0), 0, ErrMalformed},
		{"subscribe missing qos", b(0x82, 7, 0, 1, 0, 3, "a/b"), 0, ErrMalformed},
		{"subscribe qos 3", b(0x82, 8, 0, 1, 0, 3, "a/b", 3), 0, ErrQoS},
		{"subscribe reserved option bits", b(0x82, 8, 0, 1, 0, 3, "a/b", 0x04), 0, ErrMalformed},
		{"subscribe filter past rl", b(0x82, 6, 0, 1, 0, 9, "a/"), 0, ErrMalformed},
		{"subscribe empty filter", b(0x82, 5, 0, 1, 0, 0, 1), 0, ErrEmptyTopic},
		{"subscribe # not last", b(0x82, 8, 0, 1, 0, 3, "#/a", 0), 0, ErrTopicFilter},
		{"subscribe # not alone", b(0x82, 7, 0, 1, 0, 2, "a#", 0), 0, ErrTopicFilter},
		{"subscribe + not alone", b(0x82, 8, 0, 1, 0, 3, "a+/", 0), 0, ErrTopicFilter},
		{"subscribe filter bad utf8", b(0x82, 6, 0, 1, 0, 1, 0x80, 0), 0, ErrUTF8},
		{"subscribe second filter bad", b(0x82, 11, 0, 1, 0, 1, "a", 0, 0, 2, "+a", 0), 0, ErrTopicFilter},
		{"unsubscribe no filters", b(0xA2, 2, 0, 1), 0, ErrNoFilters},
		{"unsubscribe id 0", b(0xA2, 5, 0, 0, 0, 1, "a"), 0, ErrPacketID},
		{"unsubscribe bad filter", b(0xA2, 6, 0, 1, 0, 2, "#a"), 0, ErrTopicFilter},
		{"unsubscribe truncated filter", b(0xA2, 3, 0, 1, 0), 0, ErrMalformed},
		{"suback no codes", b(0x90, 2, 0, 1), 0, ErrMalformed},
		{"suback id 0", b(0x90, 3, 0, 0, 0), 0, ErrPacketID},
		{"suback bad code", b(0x90, 3, 0, 1, 3), 0, ErrMalformed},
		{"publish topic longer than body", b(0x30, 4, 0, 200, long[:2]), 0, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p Packet
			n, err := Decode(tt.wire, tt.max, &p)
			if !errors.Is(err, tt.err) || n != 0 {
				t.Fatalf("Decode(% x) = %d, %v; want 0, %v", tt.wire, n, err, tt.err)
			}
		})
	}
}

func TestPacketLenPartialHeader(t *testing.T) {
	for _, in := range [][]byte{nil, b(0x30), b(0x30, 0x80), b(0x30, 0x80, 0x80), b(0x30, 0x80, 0x80, 0x80)} {
		if n, err := PacketLen(in, 0); n != 0 || err != nil {
			t.Errorf("PacketLen(% x) = %d, %v; want 0, nil", in, n, err)
		}
	}
	// Non-minimal remaining length encodings are accepted (2.2.3 does not forbid them).
	var p Packet
	if n, err := Decode(b(0xC0, 0x80, 0x00), 0, &p); n != 3 || err != nil || p.Type != TypePingreq {
		t.Fatalf("non-minimal length: %d, %v, %v", n, err, p.Type)
	}
	if n, err := PacketLen(b(0x30, 0xFF, 0xFF, 0xFF, 0x7F), 0); n != 5+MaxRemainingLength || err != nil {
		t.Fatalf("PacketLen(max) = %d, %v", n, err)
	}
}

func TestAppendPacketErrors(t *testing.T) {
	tests := []struct {
		name string
		p    Packet
		err  error
	}{
		{"reserved type", Packet{Type: 15}, ErrPacketType},
		{"publish qos3", Packet{Type: TypePublish, QoS: 3, Topic: []byte("a")}, ErrQoS},
		{"publish dup qos0", Packet{Type: TypePublish, Dup: true, Topic: []byte("a")}, ErrDupQoS0},
		{"publish id 0", Packet{Type: TypePublish, QoS: 1, Topic: []byte("a")}, ErrPacketID},
		{"publish wildcard", Packet{Type: TypePublish, Topic: []byte("a/#")}, ErrTopicName},
		{"publish topic too long", Packet{Type: TypePublish, Topic: bytes.Repeat([]byte("a"), 70000)}, ErrMalformed},
		{"puback id 0", Packet{Type: TypePuback}, ErrPacketID},
		{"subscribe no filters", Packet{Type: TypeSubscribe, PacketID: 1}, ErrNoFilters},
		{"connect bad will", Packet{Type: TypeConnect, Connect: Connect{WillFlag: true, WillTopic: []byte("+")}}, ErrTopicName},
		{"connect v5", Packet{Type: TypeConnect, Connect: Connect{ProtocolName: []byte("MQTT"), ProtocolLevel: 5}}, ErrProtocolLevel},
		{"connack reserved code", Packet{Type: TypeConnack, ReturnCode: 9}, ErrMalformed},
		{"suback bad code", Packet{Type: TypeSuback, PacketID: 1, ReturnCodes: []byte{7}}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := []byte("keep")
			out, err := AppendPacket(dst, &tt.p)
			if !errors.Is(err, tt.err) || string(out) != "keep" {
				t.Fatalf("AppendPacket = %q, %v; want \"keep\", %v", out, err, tt.err)
			}
		})
	}
}

func TestEncoderPanics(t *testing.T) {
	tests := []struct {
		name string
		f    func()
	}{
		{"publish qos3", func() { AppendPublish(nil, "a", nil, 3, false, false, 1) }},
		{"publish qos1 id 0", func() { AppendPublish(nil, "a", nil, 1, false, false, 0) }},
		{"publish dup qos0", func() { AppendPublish(nil, "a", nil, 0, false, true, 0) }},
		{"publish topic too long", func() { AppendPublish(nil, strings.Repeat("a", 65536), nil, 0, false, false, 0) }},
		{"puback id 0", func() { AppendPuback(nil, 0) }},
		{"connack code", func() { AppendConnack(nil, false, 6) }},
		{"suback empty", func() { AppendSuback(nil, 1, nil) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			tt.f()
		})
	}
}

func TestZeroAllocs(t *testing.T) {
	pub := AppendPublish(nil, "u/14155550123/m1", bytes.Repeat([]byte{'x'}, 1024), 1, false, false, 7)
	sub := AppendSubscribe(nil, 1, Subscription{"a/+/c", 1}, Subscription{"d/#", 0})
	dst := make([]byte, 0, 4096)
	puback, pingreq := []byte{0x40, 2, 0, 1}, []byte{0xC0, 0}
	var p Packet
	tests := []struct {
		name string
		f    func()
	}{
		{"decode publish", func() { Decode(pub, 0, &p) }},
		{"decode puback", func() { Decode(puback, 0, &p) }},
		{"decode pingreq", func() { Decode(pingreq, 0, &p) }},
		{"decode subscribe and iterate", func() {
			Decode(sub, 0, &p)
			it := p.NewFilterIter()
			for _, _, ok := it.Next(); ok; _, _, ok = it.Next() {
			}
		}},
		{"range Filters", func() {
			for f := range p.Filters() {
				_ = f
			}
		}},
		{"append publish string topic", func() { AppendPublish(dst, "u/1/m/2/x", pub[:10], 1, false, false, 9) }},
		{"append publish byte topic", func() { AppendPublish(dst, pub[4:10], pub[:10], 0, false, false, 0) }},
		{"append puback", func() { AppendPuback(dst, 9) }},
		{"append pingresp", func() { AppendPingresp(dst) }},
		{"match topic", func() { MatchTopic("a/+/#", pub[4:20]) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if a := testing.AllocsPerRun(100, tt.f); a != 0 {
				t.Fatalf("%v allocs/op; want 0", a)
			}
		})
	}
}

func TestAliasing(t *testing.T) {
	buf := AppendPublish(nil, "a/b", []byte("payload"), 1, false, false, 3)
	buf = append(buf, 0xC0) // start of the next packet
	var p Packet
	n, err := Decode(buf, 0, &p)
	if err != nil || n != len(buf)-1 {
		t.Fatalf("Decode = %d, %v", n, err)
	}
	if &p.Topic[0] != &buf[4] || &p.Payload[0] != &buf[9] {
		t.Fatal("Topic or Payload is a copy; want an alias of buf")
	}
	if cap(p.Payload) != len(p.Payload) || cap(p.Topic) != len(p.Topic) {
		t.Fatalf("aliases not capacity-limited: cap(Topic)=%d cap(Payload)=%d", cap(p.Topic), cap(p.Payload))
	}
	_ = append(p.Payload, 'X')
	if buf[n] != 0xC0 {
		t.Fatal("append to Payload overwrote the next packet")
	}
	// Decode resets fields of the previous packet type.
	if _, err := Decode(b(0xD0, 0), 0, &p); err != nil || p.Topic != nil || p.PacketID != 0 {
		t.Fatalf("Decode did not reset the packet: %+v, %v", p, err)
	}
}

func TestTypeString(t *testing.T) {
	for typ, want := range map[Type]string{TypeConnect: "CONNECT", TypeDisconnect: "DISCONNECT", 0: "RESERVED0", 15: "RESERVED15", 16: "INVALID"} {
		if got := typ.String(); got != want {
			t.Errorf("Type(%d).String() = %q; want %q", typ, got, want)
		}
	}
}

func TestFilterIterMalformedRaw(t *testing.T) {
	// A hand-built packet with broken RawFilters yields nothing and never panics.
	for _, p := range []Packet{
		{Type: TypeSubscribe, RawFilters: b(0, 5, "a")},
		{Type: TypeSubscribe, RawFilters: b(0, 1, "a")},
		{Type: TypeUnsubscribe, RawFilters: b(0, 5, "a")},
		{Type: TypeUnsubscribe, RawFilters: b(0)},
	} {
		it := p.NewFilterIter()
		if f, q, ok := it.Next(); ok {
			t.Errorf("%v % x: yielded %q %d", p.Type, p.RawFilters, f, q)
		}
	}
}
