package mqtt

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// norm5 is norm for v5 packets: it also makes the empty slices of the
// properties nil.
func norm5(p Packet) Packet {
	p = norm(p)
	for _, pr := range []*Properties{&p.Props, &p.Connect.WillProps} {
		for _, s := range []*[]byte{&pr.ContentType, &pr.ResponseTopic, &pr.CorrelationData,
			&pr.AssignedClientID, &pr.AuthMethod, &pr.AuthData, &pr.ResponseInfo,
			&pr.ServerReference, &pr.ReasonString, &pr.Raw} {
			if len(*s) == 0 {
				*s = nil
			}
		}
	}
	return p
}

// b5 is b that also takes byte parts (the Prop* constants).
func b5(parts ...any) []byte {
	for i, p := range parts {
		switch c := p.(type) {
		case byte:
			parts[i] = int(c)
		case rune:
			parts[i] = int(c)
		}
	}
	return b(parts...)
}

// v5props builds a property block.
func v5props(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

type golden5 struct {
	name  string
	wire  []byte // hand-computed from the 5.0 spec
	enc   []byte // the dedicated encoder's output (must equal wire)
	check func(t *testing.T, p *Packet)
}

func goldens5() []golden5 {
	pubProps := v5props(AppendByteProp(nil, PropPayloadFormat, 1), AppendU32Prop(nil, PropMessageExpiry, 60),
		AppendStringProp(nil, PropContentType, "text/plain"), AppendStringProp(nil, PropResponseTopic, "re/q"),
		AppendStringProp(nil, PropCorrelationData, []byte{1, 2}), AppendU16Prop(nil, PropTopicAlias, 3),
		AppendUserProp(nil, "k", "v"), AppendUserProp(nil, "k", "w"))
	connProps := v5props(AppendU32Prop(nil, PropSessionExpiry, 3600), AppendU16Prop(nil, PropReceiveMaximum, 10),
		AppendU32Prop(nil, PropMaximumPacketSize, 1000), AppendU16Prop(nil, PropTopicAliasMaximum, 5),
		AppendByteProp(nil, PropRequestProblemInfo, 0))
	willProps := v5props(AppendU32Prop(nil, PropWillDelay, 30), AppendByteProp(nil, PropPayloadFormat, 1))
	conn := Connect{ProtocolName: []byte("MQTT"), ProtocolLevel: 5, CleanSession: true, KeepAlive: 60,
		ClientID: []byte("cid"), WillFlag: true, WillQoS: 1, WillTopic: []byte("w/t"), WillMessage: []byte("bye"),
		PasswordFlag: true, Password: []byte("pw")}
	conn.WillProps.Raw = willProps
	connackProps := v5props(AppendU16Prop(nil, PropReceiveMaximum, 32), AppendStringProp(nil, PropAssignedClientID, "auto-1"),
		AppendByteProp(nil, PropSharedSubAvailable, 1))
	return []golden5{
		{"publish qos1 props", b5(0x32, 3+2+2+1+len(pubProps)+2, 0, 3, "a/b", 0, 7, len(pubProps), pubProps, "hi"),
			AppendPublish5(nil, "a/b", []byte("hi"), 1, false, false, 7, pubProps),
			func(t *testing.T, p *Packet) {
				pr := &p.Props
				if p.PacketID != 7 || string(p.Payload) != "hi" || pr.PayloadFormat != 1 || pr.MessageExpiry != 60 ||
					string(pr.ContentType) != "text/plain" || string(pr.ResponseTopic) != "re/q" || pr.TopicAlias != 3 ||
					!bytes.Equal(pr.CorrelationData, []byte{1, 2}) {
					t.Fatalf("props %+v", pr)
				}
				var kv []string
				for k, v := range UserProps(pr.Raw) {
					kv = append(kv, string(k)+"="+string(v))
				}
				if !reflect.DeepEqual(kv, []string{"k=v", "k=w"}) {
					t.Fatalf("user props %q", kv)
				}
			}},
		{"publish alias only", b5(0x30, 2+1+3+1, 0, 0, 3, PropTopicAlias, 0, 9, "x"),
			AppendPublish5(nil, "", []byte("x"), 0, false, false, 0, AppendU16Prop(nil, PropTopicAlias, 9)),
			func(t *testing.T, p *Packet) {
				if len(p.Topic) != 0 || p.Props.TopicAlias != 9 {
					t.Fatalf("%+v", p)
				}
			}},
		{"puback short", b5(0x40, 2, 0, 5), AppendAck5(nil, TypePuback, 5, 0, nil), nil},
		{"puback quota", b5(0x40, 3, 0, 5, 0x97), AppendAck5(nil, TypePuback, 5, RCQuotaExceeded, nil),
			func(t *testing.T, p *Packet) {
				if p.ReasonCode != RCQuotaExceeded {
					t.Fatal(p.ReasonCode)
				}
			}},
		{"pubrec reason string", b5(0x50, 3+1+5, 0, 5, 0x87, 5, PropReasonString, 0, 2, "no"),
			AppendAck5(nil, TypePubrec, 5, RCNotAuthorized, AppendStringProp(nil, PropReasonString, "no")), nil},
		{"pubrel", b5(0x62, 2, 0, 5), AppendAck5(nil, TypePubrel, 5, 0, nil), nil},
		{"pubcomp not found", b5(0x70, 3, 0, 5, 0x92), AppendAck5(nil, TypePubcomp, 5, RCPacketIDNotFound, nil), nil},
		{"connect", b5(0x10, 10+1+len(connProps)+5+1+len(willProps)+5+5+4, 0, 4, "MQTT", 5, 0x4E, 0, 60, len(connProps), connProps,
			0, 3, "cid", len(willProps), willProps, 0, 3, "w/t", 0, 3, "bye", 0, 2, "pw"),
			AppendConnect5(nil, &conn, connProps),
			func(t *testing.T, p *Packet) {
				c := &p.Connect
				if c.ProtocolLevel != 5 || p.Props.SessionExpiry != 3600 || p.Props.ReceiveMaximum != 10 ||
					p.Props.MaximumPacketSize != 1000 || p.Props.TopicAliasMaximum != 5 || !p.Props.HasProp(PropRequestProblemInfo) ||
					c.WillProps.WillDelay != 30 || c.WillProps.PayloadFormat != 1 || string(c.Password) != "pw" || c.UsernameFlag {
					t.Fatalf("%+v", p)
				}
			}},
		{"connack", b5(0x20, 3+len(connackProps), 1, 0, len(connackProps), connackProps),
			AppendConnack5(nil, true, 0, connackProps), nil},
		{"connack refused", b5(0x20, 3, 0, 0x87, 0), AppendConnack5(nil, false, RCNotAuthorized, nil), nil},
		{"subscribe opts and id", b5(0x82, 2+3+6+17, 0, 1, 2, PropSubscriptionID, 7, 0, 3, "a/b", 0x2D, 0, 14, "$share/g/x/+/y", 0x01),
			AppendSubscribe5(nil, 1, AppendVBIProp(nil, PropSubscriptionID, 7),
				Subscription5{Filter: "a/b", QoS: 1, NoLocal: true, RetainAsPublished: true, RetainHandling: 2},
				Subscription5{Filter: "$share/g/x/+/y", QoS: 1}),
			func(t *testing.T, p *Packet) {
				it := p.NewFilterIter()
				f, o, ok := it.NextOptions()
				if !ok || string(f) != "a/b" || o&3 != 1 || o&SubNoLocal == 0 || o&SubRetainAsPublished == 0 || RetainHandling(o) != 2 {
					t.Fatalf("%q %x", f, o)
				}
				if p.Props.SubscriptionID != 7 || p.NumFilters != 2 {
					t.Fatalf("%+v", p)
				}
				g, rest, ok := SplitShared([]byte("$share/g/x/+/y"))
				if !ok || string(g) != "g" || string(rest) != "x/+/y" {
					t.Fatal(string(g), string(rest))
				}
			}},
		{"suback", b5(0x90, 6, 0, 1, 0, 0x01, 0x87, 0x97), AppendSuback5(nil, 1, []byte{1, 0x87, 0x97}, nil), nil},
		{"unsubscribe", b5(0xA2, 2+1+5, 0, 2, 0, 0, 3, "a/b"), AppendUnsubscribe5(nil, 2, nil, "a/b"), nil},
		{"unsuback", b5(0xB0, 5, 0, 2, 0, 0x00, 0x11), AppendUnsuback5(nil, 2, []byte{0, 0x11}, nil), nil},
		{"disconnect normal", b5(0xE0, 0), AppendDisconnect5(nil, 0, nil), nil},
		{"disconnect with will", b5(0xE0, 1, 0x04), AppendDisconnect5(nil, RCDisconnectWithWill, nil), nil},
		{"disconnect session expiry", b5(0xE0, 7, 0, 5, PropSessionExpiry, 0, 0, 0, 9),
			AppendDisconnect5(nil, 0, AppendU32Prop(nil, PropSessionExpiry, 9)), nil},
		{"auth", b5(0xF0, 1+1+7, 0x18, 7, PropAuthMethod, 0, 4, "SCRA"),
			AppendAuth(nil, RCContinueAuth, AppendStringProp(nil, PropAuthMethod, "SCRA")), nil},
		{"pingreq", b5(0xC0, 0), AppendPingreq(nil), nil},
	}
}

func TestGolden5(t *testing.T) {
	for _, g := range goldens5() {
		t.Run(g.name, func(t *testing.T) {
			if !bytes.Equal(g.enc, g.wire) {
				t.Fatalf("encoder:\n got % x\nwant % x", g.enc, g.wire)
			}
			var p Packet
			n, err := Decode5(g.wire, 0, &p)
			if err != nil || n != len(g.wire) {
				t.Fatalf("Decode5 = %d, %v; want %d", n, err, len(g.wire))
			}
			if g.check != nil {
				g.check(t, &p)
			}
			re, err := AppendPacket5(nil, &p)
			if err != nil || !bytes.Equal(re, g.wire) {
				t.Fatalf("AppendPacket5 = % x, %v; want % x", re, err, g.wire)
			}
			if tl, err := PacketLen5(g.wire, 0); tl != len(g.wire) || err != nil {
				t.Fatalf("PacketLen5 = %d, %v", tl, err)
			}
			for k := range len(g.wire) {
				if n, err := Decode5(g.wire[:k], 0, &p); n != 0 || err != nil {
					t.Fatalf("Decode5(prefix %d) = %d, %v", k, n, err)
				}
			}
			if _, err := Decode5(g.wire, len(g.wire)-1, &p); err != ErrPacketTooLarge {
				t.Fatalf("Decode5(max=len-1) err = %v", err)
			}
		})
	}
}

// TestDecode5Errors: every bad v5 field has a defined error and reason code.
func TestDecode5Errors(t *testing.T) {
	pub := func(props ...byte) []byte { // QoS 0 PUBLISH a/b with props and payload "p"
		return b5(0x30, 5+1+len(props)+1, 0, 3, "a/b", len(props), props, "p")
	}
	tests := []struct {
		name string
		wire []byte
		want error
		code byte
	}{
		{"property twice", pub(PropMessageExpiry, 0, 0, 0, 1, PropMessageExpiry, 0, 0, 0, 2), ErrDuplicateProperty, RCProtocolError},
		{"unknown property", pub(0x05, 1), ErrUnknownProperty, RCMalformed},
		{"property id past table", pub(0x7F, 1), ErrUnknownProperty, RCMalformed},
		{"property not allowed in PUBLISH", pub(PropSessionExpiry, 0, 0, 0, 1), ErrPropertyNotAllowed, RCMalformed},
		{"truncated u32", pub(PropMessageExpiry, 0, 0), ErrMalformed, RCMalformed},
		{"props length past packet", b5(0x30, 7, 0, 3, "a/b", 9, 1), ErrMalformed, RCMalformed},
		{"payload format 2", pub(PropPayloadFormat, 2), ErrPropertyValue, RCProtocolError},
		{"payload not utf8", b5(0x30, 5+1+2+1, 0, 3, "a/b", 2, PropPayloadFormat, 1, 0xFF), ErrPayloadFormat, RCPayloadFormatInvalid},
		{"topic alias 0", pub(PropTopicAlias, 0, 0), ErrTopicAlias, RCTopicAliasInvalid},
		{"empty topic without alias", b5(0x30, 4, 0, 0, 0, "p"), ErrEmptyTopic, RCTopicNameInvalid},
		{"response topic wildcard", pub(PropResponseTopic, 0, 1, '#'), ErrPropertyValue, RCProtocolError},
		{"content type bad utf8", pub(PropContentType, 0, 1, 0xFF), ErrUTF8, RCMalformed},
		{"user property missing value", pub(PropUserProperty, 0, 1, 'k'), ErrMalformed, RCMalformed},
		{"subscription id 0", b5(0x82, 2+3+4, 0, 1, 2, PropSubscriptionID, 0, 0, 1, "a", 0), ErrPropertyValue, RCProtocolError},
		{"subscription id twice in SUBSCRIBE", b5(0x82, 2+5+4, 0, 1, 4, PropSubscriptionID, 1, PropSubscriptionID, 2, 0, 1, "a", 0), ErrDuplicateProperty, RCProtocolError},
		{"receive maximum 0", b5(0x10, 10+1+3+2, 0, 4, "MQTT", 5, 2, 0, 0, 3, PropReceiveMaximum, 0, 0, 0, 0), ErrPropertyValue, RCProtocolError},
		{"maximum packet size 0", b5(0x10, 10+1+5+2, 0, 4, "MQTT", 5, 2, 0, 0, 5, PropMaximumPacketSize, 0, 0, 0, 0, 0, 0), ErrPropertyValue, RCProtocolError},
		{"auth data without method", b5(0x10, 10+1+4+2, 0, 4, "MQTT", 5, 2, 0, 0, 4, PropAuthData, 0, 1, 'x', 0, 0), ErrPropertyValue, RCProtocolError},
		{"will property not allowed", b5(0x10, 10+1+2+1+2+3+2, 0, 4, "MQTT", 5, 0x06, 0, 0, 0, 0, 0, 2, PropTopicAlias, 1, 0, 1, "w", 0, 0), ErrPropertyNotAllowed, RCMalformed},
		{"connect level 4 on Decode5", b5(0x10, 12, 0, 4, "MQTT", 4, 2, 0, 60, 0, 0), ErrProtocolLevel, RCUnsupportedProtocolVersion},
		{"puback bad reason", b5(0x40, 3, 0, 1, 0x05), ErrReasonCode, RCMalformed},
		{"pubrel bad reason", b5(0x62, 3, 0, 1, 0x10), ErrReasonCode, RCMalformed},
		{"puback trailing bytes", b5(0x40, 6, 0, 1, 0, 0, 0, 0), ErrMalformed, RCMalformed},
		{"subscribe reserved option bits", b5(0x82, 2+1+4, 0, 1, 0, 0, 1, "a", 0x40), ErrSubOptions, RCMalformed},
		{"subscribe retain handling 3", b5(0x82, 2+1+4, 0, 1, 0, 0, 1, "a", 0x30), ErrRetainHandling, RCProtocolError},
		{"shared no local", b5(0x82, 2+1+13, 0, 1, 0, 0, 10, "$share/g/a", 0x04), ErrSharedNoLocal, RCProtocolError},
		{"shared no group", b5(0x82, 2+1+13, 0, 1, 0, 0, 10, "$share//ab", 0x00), ErrSharedFilter, RCTopicFilterInvalid},
		{"shared wildcard group", b5(0x82, 2+1+13, 0, 1, 0, 0, 10, "$share/+/a", 0x00), ErrSharedFilter, RCTopicFilterInvalid},
		{"shared no filter", b5(0x82, 2+1+11, 0, 1, 0, 0, 8, "$share/g", 0x00), ErrSharedFilter, RCTopicFilterInvalid},
		{"subscribe no filters", b5(0x82, 3, 0, 1, 0), ErrNoFilters, RCProtocolError},
		{"disconnect bad reason", b5(0xE0, 1, 0x01), ErrReasonCode, RCMalformed},
		{"auth bad reason", b5(0xF0, 1, 0x87), ErrReasonCode, RCMalformed},
		{"auth flags", b5(0xF1, 0), ErrFlags, RCMalformed},
		{"too large", b5(0x30, 0x80, 1), ErrPacketTooLarge, RCPacketTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p Packet
			max := 0
			if tt.want == ErrPacketTooLarge {
				max = 100
			}
			n, err := Decode5(tt.wire, max, &p)
			if n != 0 || err != tt.want {
				t.Fatalf("Decode5 = %d, %v; want %v", n, err, tt.want)
			}
			if c := ReasonCode(err); c != tt.code {
				t.Fatalf("ReasonCode = %#x; want %#x", c, tt.code)
			}
			var e *Error
			if tt.code == RCProtocolError && !errors.As(err, &e) && err != ErrNoFilters {
				t.Fatalf("%v is not an *Error", err)
			}
		})
	}
}

// TestV5OnV311: v5 forms are errors on a 3.1.1 connection, and a 3.1.1
// Decode of a level-5 CONNECT still says ErrProtocolLevel (so a server
// can try Decode5).
func TestV5OnV311(t *testing.T) {
	for name, wire := range map[string][]byte{
		"puback with reason": AppendAck5(nil, TypePuback, 1, RCQuotaExceeded, nil),
		"auth":               AppendAuth(nil, RCContinueAuth, nil),
		"disconnect reason":  AppendDisconnect5(nil, RCDisconnectWithWill, nil),
	} {
		if _, err := Decode(wire, 0, new(Packet)); err == nil {
			t.Errorf("%s: Decode accepted a v5 packet", name)
		}
	}
	c := AppendConnect5(nil, &Connect{ClientID: []byte("a")}, nil)
	if _, err := Decode(c, 0, new(Packet)); err != ErrProtocolLevel {
		t.Fatalf("Decode(v5 CONNECT) = %v", err)
	}
}

// TestZeroAllocs5: the v5 hot path (PUBLISH with properties, PUBACK with a
// reason code) decodes and encodes without allocating.
func TestZeroAllocs5(t *testing.T) {
	props := v5props(AppendU32Prop(nil, PropMessageExpiry, 60), AppendU16Prop(nil, PropTopicAlias, 3), AppendUserProp(nil, "k", "v"))
	pub := AppendPublish5(nil, "u/bob/m1", []byte("hello"), 1, false, false, 9, props)
	ack := AppendAck5(nil, TypePuback, 9, RCQuotaExceeded, nil)
	var p Packet
	dst := make([]byte, 0, 256)
	for name, f := range map[string]func(){
		"decode publish": func() { Decode5(pub, 0, &p) },
		"decode puback":  func() { Decode5(ack, 0, &p) },
		"encode publish": func() { dst = AppendPublish5(dst[:0], "u/bob/m1", []byte("hello"), 1, false, false, 9, props) },
		"encode puback":  func() { dst = AppendAck5(dst[:0], TypePuback, 9, RCQuotaExceeded, nil) },
		"user props": func() {
			for range UserProps(props) {
			}
		},
	} {
		if a := testing.AllocsPerRun(100, f); a != 0 {
			t.Errorf("%s: %v allocs/op; want 0", name, a)
		}
	}
}

func BenchmarkDecode5(b *testing.B) {
	props := v5props(AppendU32Prop(nil, PropMessageExpiry, 60), AppendUserProp(nil, "k", "v"))
	for name, wire := range map[string][]byte{
		"publish_small_props": AppendPublish5(nil, "u/14155550123/m1", []byte("hello, world"), 1, false, false, 7, props),
		"puback_reason":       AppendAck5(nil, TypePuback, 7, RCQuotaExceeded, nil),
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			var p Packet
			for b.Loop() {
				if n, err := Decode5(wire, 1<<18, &p); n != len(wire) || err != nil {
					b.Fatal(n, err)
				}
			}
		})
	}
}

func BenchmarkEncode5(b *testing.B) {
	props := v5props(AppendU32Prop(nil, PropMessageExpiry, 60), AppendUserProp(nil, "k", "v"))
	payload := []byte("hello, world")
	dst := make([]byte, 0, 256)
	b.Run("publish_small_props", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			dst = AppendPublish5(dst[:0], "u/14155550123/m/14155550124/m1", payload, 1, false, false, 7, props)
		}
	})
	b.Run("puback_reason", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			dst = AppendAck5(dst[:0], TypePuback, 7, RCQuotaExceeded, nil)
		}
	})
}

// TestWriteSeeds5 writes the v5 goldens into the fuzz corpus with -update.
func TestWriteSeeds5(t *testing.T) {
	if !*updateSeeds {
		t.Skip("run with -update-seeds to rewrite testdata/fuzz/FuzzDecode/seed5_*")
	}
	for _, g := range goldens5() {
		name := "testdata/fuzz/FuzzDecode/seed5_" + strings.ReplaceAll(g.name, " ", "_")
		if err := os.WriteFile(name, []byte("go test fuzz v1\n[]byte("+strconv.Quote(string(g.wire))+")\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

var updateSeeds = flag.Bool("update-seeds", false, "rewrite the v5 fuzz seeds")

// fill sets every field of v (recursively) to a non-zero value.
func fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			fill(v.Field(i))
		}
	case reflect.Slice:
		v.Set(reflect.ValueOf([]byte{1}))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(1)
	case reflect.Int:
		v.SetInt(1)
	default:
		panic("fill: " + v.Kind().String())
	}
}

// TestReset: Packet.reset clears every field, so that a Packet reused
// across packets (and versions) never shows a stale one.
func TestReset(t *testing.T) {
	var p Packet
	fill(reflect.ValueOf(&p).Elem())
	p.Props.Has, p.Connect.WillProps.Has = 1, 1
	p.reset(0x32)
	if !reflect.DeepEqual(p, Packet{Type: TypePublish, Flags: 2}) {
		t.Fatalf("reset left %+v", p)
	}
}
