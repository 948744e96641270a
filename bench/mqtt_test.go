package bench

import (
	"bytes"
	"errors"
	"testing"
)

func TestEncodeKnownBytes(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  []byte
		want []byte
	}{
		{"connect", appendConnect(nil, connectPacket{ClientID: "a", Keepalive: 60, Clean: true}),
			[]byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, 1, 'a'}},
		{"connect user pass persistent", appendConnect(nil, connectPacket{ClientID: "a", Username: "u", Password: "p", Keepalive: 1}),
			[]byte{0x10, 19, 0, 4, 'M', 'Q', 'T', 'T', 4, 0xc0, 0, 1, 0, 1, 'a', 0, 1, 'u', 0, 1, 'p'}},
		{"publish qos0", appendPublish(nil, []byte("t"), 0, 7, []byte("x")), []byte{0x30, 4, 0, 1, 't', 'x'}},
		{"publish qos1", appendPublish(nil, []byte("t"), 1, 0x0102, []byte("x")), []byte{0x32, 6, 0, 1, 't', 1, 2, 'x'}},
		{"puback", appendPuback(nil, 0x0102), []byte{0x40, 2, 1, 2}},
		{"subscribe", appendSubscribe(nil, 1, "a/b", 1), []byte{0x82, 8, 0, 1, 0, 3, 'a', '/', 'b', 1}},
		{"pingreq", appendPingreq(nil), []byte{0xc0, 0}},
		{"disconnect", appendDisconnect(nil), []byte{0xe0, 0}},
		{"varint 128", appendVarint(nil, 128), []byte{0x80, 1}},
		{"varint max", appendVarint(nil, maxRemaining), []byte{0xff, 0xff, 0xff, 0x7f}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !bytes.Equal(tc.got, tc.want) {
				t.Errorf("got % x, want % x", tc.got, tc.want)
			}
		})
	}
}

func TestParsePacket(t *testing.T) {
	big := appendPublish(nil, []byte("topic/x"), 1, 9, bytes.Repeat([]byte{'z'}, 300))
	for _, tc := range []struct {
		name    string
		in      []byte
		n       int
		typ     byte
		pid     uint16
		code    byte
		payload string
		err     error
	}{
		{"connack ok", []byte{0x20, 2, 1, 0}, 4, pktConnack, 0, 0, "", nil},
		{"connack refused", []byte{0x20, 2, 0, 5}, 4, pktConnack, 0, 5, "", nil},
		{"publish qos1", appendPublish(nil, []byte("t"), 1, 9, []byte("hi")), 9, pktPublish, 9, 0, "hi", nil},
		{"publish big", big, len(big), pktPublish, 9, 0, string(bytes.Repeat([]byte{'z'}, 300)), nil},
		{"puback", []byte{0x40, 2, 0, 7, 0xff}, 4, pktPuback, 7, 0, "", nil},
		{"suback refused", []byte{0x90, 3, 0, 1, 0x80}, 5, pktSuback, 1, 0x80, "", nil},
		{"pingresp", []byte{0xd0, 0}, 2, pktPingresp, 0, 0, "", nil},
		{"partial header", []byte{0x30}, 0, 0, 0, 0, "", nil},
		{"partial varint", []byte{0x30, 0x80}, 0, 0, 0, 0, "", nil},
		{"partial body", big[:len(big)-1], 0, 0, 0, 0, "", nil},
		{"varint too long", []byte{0x30, 0xff, 0xff, 0xff, 0xff, 1}, 0, 0, 0, 0, "", ErrMalformed},
		{"too large", []byte{0x30, 0xff, 0xff, 0xff, 0x7f}, 0, 0, 0, 0, "", ErrTooLarge},
		{"bad connack", []byte{0x20, 1, 0}, 0, 0, 0, 0, "", ErrMalformed},
		{"publish qos3", []byte{0x36, 3, 0, 1, 't'}, 0, 0, 0, 0, "", ErrMalformed},
		{"publish topic overruns", []byte{0x30, 3, 0, 9, 't'}, 0, 0, 0, 0, "", ErrMalformed},
		{"puback long", []byte{0x40, 3, 0, 1, 0}, 0, 0, 0, 0, "", ErrMalformed},
		{"suback no codes", []byte{0x90, 2, 0, 1}, 0, 0, 0, 0, "", ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, p, err := parsePacket(tc.in)
			if !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if n != tc.n {
				t.Fatalf("consumed %d, want %d", n, tc.n)
			}
			if n == 0 {
				return
			}
			if p.Type != tc.typ || p.PID != tc.pid || p.Code != tc.code || string(p.Payload) != tc.payload {
				t.Errorf("got type %d pid %d code %d payload %q", p.Type, p.PID, p.Code, p.Payload)
			}
		})
	}
}

func TestPayloadHeader(t *testing.T) {
	b := make([]byte, 40)
	putHeader(b, kindMsg, 1234567890123, 42, 7)
	kind, ts, seq, idx, ok := getHeader(b)
	if !ok || kind != kindMsg || ts != 1234567890123 || seq != 42 || idx != 7 {
		t.Errorf("round trip: %d %d %d %d %v", kind, ts, seq, idx, ok)
	}
	for _, bad := range [][]byte{nil, b[:payloadHeader-1], []byte("XB" + string(b[2:]))} {
		if _, _, _, _, ok := getHeader(bad); ok {
			t.Errorf("header accepted from % x", bad)
		}
	}
}

func FuzzParsePacket(f *testing.F) {
	f.Add([]byte{0x20, 2, 0, 0})
	f.Add(appendPublish(nil, []byte("a/b"), 1, 3, []byte("payload")))
	f.Add([]byte{0x90, 3, 0, 1, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		for len(b) > 0 {
			n, p, err := parsePacket(b)
			if err != nil || n == 0 {
				return
			}
			if n > len(b) || len(p.Topic)+len(p.Payload) > n {
				t.Fatalf("consumed %d of %d, topic %d payload %d", n, len(b), len(p.Topic), len(p.Payload))
			}
			b = b[n:]
		}
	})
}

func BenchmarkEncodePublish(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, 256)
	topic := []byte("u/eb1234.0.17/m123")
	payload := make([]byte, 64)
	for b.Loop() {
		buf = appendPublish(buf[:0], topic, 1, 17, payload)
	}
}

func BenchmarkParsePublish(b *testing.B) {
	b.ReportAllocs()
	pkt := appendPublish(nil, []byte("u/eb1234.0.17/m/eb1234.0.18/123"), 1, 17, make([]byte, 64))
	for b.Loop() {
		if n, _, err := parsePacket(pkt); n != len(pkt) || err != nil {
			b.Fatal(n, err)
		}
	}
}
