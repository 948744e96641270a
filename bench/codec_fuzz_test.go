package bench

import (
	"bytes"
	"errors"
	"testing"

	"github.com/edgedhq/edged/edge/mqtt"
)

// The load engine carries its own small MQTT client codec (mqtt.go) while
// the server's is edge/mqtt. These targets hold the two to one another, so
// that a measurement can never rest on a codec disagreement: every packet
// the server's strict decoder accepts, the engine's lenient one reads the
// same, and every packet the engine sends, the server's decoder accepts
// with the same fields. `go test` runs the seeds; `go test -fuzz` explores.

// FuzzParseAgreesWithServerCodec: if edge/mqtt decodes a packet, the
// engine's parsePacket consumes the same bytes and, for the packet types the
// engine interprets, reports the same fields.
func FuzzParseAgreesWithServerCodec(f *testing.F) {
	f.Add([]byte{0x20, 2, 1, 0})
	f.Add([]byte{0x20, 2, 0, 5})
	f.Add(mqtt.AppendPublish(nil, "t/1", []byte("hi"), 1, false, false, 7))
	f.Add(mqtt.AppendPublish(nil, "u/a/m/b/1", bytes.Repeat([]byte{'z'}, 300), 0, true, false, 0))
	f.Add(mqtt.AppendPuback(nil, 9))
	f.Add(mqtt.AppendPubrec(nil, 9))
	f.Add(mqtt.AppendSuback(nil, 3, []byte{1, 0x80}))
	f.Add(mqtt.AppendPingresp(nil))
	f.Add(mqtt.AppendUnsuback(nil, 4))
	f.Add([]byte{0x30, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, b []byte) {
		var sp mqtt.Packet
		n2, err2 := mqtt.Decode(b, 0, &sp)
		n1, p, err1 := parsePacket(b)
		if err2 != nil || n2 == 0 {
			return // the engine may be more lenient than the server; never stricter
		}
		if errors.Is(err1, ErrTooLarge) && n2-2 > MaxPacket {
			return // the engine's own size cap, below the protocol's
		}
		if err1 != nil || n1 != n2 {
			t.Fatalf("server decodes % x as %v (%d bytes); engine: %d bytes, %v", b, sp.Type, n2, n1, err1)
		}
		if p.Type != byte(sp.Type) || p.Flags != sp.Flags {
			t.Fatalf("type/flags: engine %d/%x, server %d/%x", p.Type, p.Flags, sp.Type, sp.Flags)
		}
		switch sp.Type {
		case mqtt.TypeConnack:
			if p.Code != sp.ReturnCode || p.Present != sp.SessionPresent {
				t.Fatalf("connack: engine code %d present %v, server %d %v", p.Code, p.Present, sp.ReturnCode, sp.SessionPresent)
			}
		case mqtt.TypePublish:
			if !bytes.Equal(p.Topic, sp.Topic) || !bytes.Equal(p.Payload, sp.Payload) || p.PID != sp.PacketID {
				t.Fatalf("publish: engine %q %q %d, server %q %q %d", p.Topic, p.Payload, p.PID, sp.Topic, sp.Payload, sp.PacketID)
			}
		case mqtt.TypePuback:
			if p.PID != sp.PacketID {
				t.Fatalf("puback id: engine %d, server %d", p.PID, sp.PacketID)
			}
		case mqtt.TypeSuback:
			if p.PID != sp.PacketID || p.Code != sp.ReturnCodes[0] {
				t.Fatalf("suback: engine %d code %d, server %d codes % x", p.PID, p.Code, sp.PacketID, sp.ReturnCodes)
			}
		}
	})
}

// FuzzEngineEncodersDecodeOnServer: what the engine sends (CONNECT,
// PUBLISH, SUBSCRIBE, PUBACK, PINGREQ, DISCONNECT), edge/mqtt decodes with
// the same fields, back to back in one buffer.
func FuzzEngineEncodersDecodeOnServer(f *testing.F) {
	f.Add("alice", "u/bob/m1", []byte("hi"), byte(1), uint16(1), uint16(60), true)
	f.Add("w0-c17", "bench/0/17", bytes.Repeat([]byte{'x'}, 200), byte(0), uint16(65535), uint16(0), false)
	f.Fuzz(func(t *testing.T, id, topic string, payload []byte, qos byte, pid, keepalive uint16, clean bool) {
		qos %= 2 // the engine publishes QoS 0 and 1
		if pid == 0 || !mqtt.ValidUTF8(id) || len(id) > 1000 || mqtt.ValidTopicName([]byte(topic)) != nil ||
			mqtt.ValidTopicFilter([]byte(topic)) != nil || len(payload) > 4096 {
			return // outside what the engine is ever asked to send
		}
		cp := connectPacket{ClientID: id, Keepalive: keepalive, Clean: clean}
		if id != "" {
			cp.Username, cp.Password = id, "v1.1.x"
		}
		var b []byte
		b = appendConnect(b, cp)
		b = appendPublish(b, []byte(topic), qos, pid, payload)
		b = appendSubscribe(b, pid, topic, qos)
		b = appendPuback(b, pid)
		b = appendPingreq(b)
		b = appendDisconnect(b)
		want := []mqtt.Type{mqtt.TypeConnect, mqtt.TypePublish, mqtt.TypeSubscribe, mqtt.TypePuback, mqtt.TypePingreq, mqtt.TypeDisconnect}
		var p mqtt.Packet
		for i, wt := range want {
			n, err := mqtt.Decode(b, 0, &p)
			if err != nil || n == 0 || p.Type != wt {
				t.Fatalf("packet %d (%v): decoded %v, %d bytes, %v", i, wt, p.Type, n, err)
			}
			switch wt {
			case mqtt.TypeConnect:
				c := p.Connect
				if string(c.ClientID) != id || c.KeepAlive != keepalive || c.CleanSession != clean ||
					string(c.Username) != cp.Username || string(c.Password) != cp.Password {
					t.Fatalf("connect fields: %+v", c)
				}
			case mqtt.TypePublish:
				wantPID := pid
				if qos == 0 {
					wantPID = 0
				}
				if string(p.Topic) != topic || !bytes.Equal(p.Payload, payload) || p.QoS != qos || p.PacketID != wantPID {
					t.Fatalf("publish fields: %q %q qos %d id %d", p.Topic, p.Payload, p.QoS, p.PacketID)
				}
			case mqtt.TypeSubscribe:
				for f, q := range p.Filters() {
					if string(f) != topic || q != qos {
						t.Fatalf("subscribe: %q qos %d", f, q)
					}
				}
				if p.NumFilters != 1 || p.PacketID != pid {
					t.Fatalf("subscribe: %d filters, id %d", p.NumFilters, p.PacketID)
				}
			case mqtt.TypePuback:
				if p.PacketID != pid {
					t.Fatalf("puback id %d, want %d", p.PacketID, pid)
				}
			}
			b = b[n:]
		}
		if len(b) != 0 {
			t.Fatalf("%d bytes left over", len(b))
		}
	})
}
