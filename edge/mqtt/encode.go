package mqtt

// The Append* encoders append one packet to dst and return the extended
// slice, like strconv.AppendInt. They do not allocate when dst has room.
// The hot-path encoders (AppendPublish, AppendPuback, ...) trust their
// arguments as a broker's own data and panic on a broken invariant (QoS > 2,
// packet id 0 where one is required, a field over its length limit);
// AppendPacket validates everything and returns an error instead.

// appendHeader appends a fixed header with remaining length rl.
func appendHeader(dst []byte, first byte, rl int) []byte {
	if rl < 0 || rl > MaxRemainingLength {
		panic("mqtt: remaining length out of range")
	}
	return AppendVBI(append(dst, first), rl)
}

func appendUint16(dst []byte, v uint16) []byte {
	return append(dst, byte(v>>8), byte(v))
}

// appendField appends a two-byte length prefixed string or binary field.
func appendField[T Text](dst []byte, s T) []byte {
	if len(s) > MaxStringLen {
		panic("mqtt: string field longer than 65535 bytes")
	}
	dst = appendUint16(dst, uint16(len(s)))
	return append(dst, s...)
}

// AppendPublish appends a PUBLISH packet. id is required (non-zero) for
// qos 1 and 2 and ignored for qos 0; dup must be false for qos 0. The topic
// is not validated here (check it with ValidTopicName where it enters).
// It panics on qos > 2, on id 0 with qos > 0, on dup with qos 0 and on a
// topic over 65535 bytes.
func AppendPublish[T Text](dst []byte, topic T, payload []byte, qos byte, retain, dup bool, id uint16) []byte {
	if qos > 2 {
		panic("mqtt: AppendPublish with QoS > 2")
	}
	first := byte(TypePublish)<<4 | qos<<1
	if retain {
		first |= 1
	}
	rl := 2 + len(topic) + len(payload)
	if qos > 0 {
		if id == 0 {
			panic("mqtt: AppendPublish with QoS > 0 and packet id 0")
		}
		rl += 2
	}
	if dup {
		if qos == 0 {
			panic("mqtt: AppendPublish with DUP and QoS 0")
		}
		first |= 0b1000
	}
	dst = appendHeader(dst, first, rl)
	dst = appendField(dst, topic)
	if qos > 0 {
		dst = appendUint16(dst, id)
	}
	return append(dst, payload...)
}

// appendAck appends a two-byte packet-id-only packet.
func appendAck(dst []byte, first byte, id uint16) []byte {
	if id == 0 {
		panic("mqtt: acknowledgement with packet id 0")
	}
	return append(dst, first, 2, byte(id>>8), byte(id))
}

// AppendPuback appends PUBACK for packet id (non-zero; panics on 0).
func AppendPuback(dst []byte, id uint16) []byte { return appendAck(dst, 0x40, id) }

// AppendPubrec appends PUBREC for packet id (non-zero; panics on 0).
func AppendPubrec(dst []byte, id uint16) []byte { return appendAck(dst, 0x50, id) }

// AppendPubrel appends PUBREL (flags 0b0010) for packet id (non-zero; panics on 0).
func AppendPubrel(dst []byte, id uint16) []byte { return appendAck(dst, 0x62, id) }

// AppendPubcomp appends PUBCOMP for packet id (non-zero; panics on 0).
func AppendPubcomp(dst []byte, id uint16) []byte { return appendAck(dst, 0x70, id) }

// AppendUnsuback appends UNSUBACK for packet id (non-zero; panics on 0).
func AppendUnsuback(dst []byte, id uint16) []byte { return appendAck(dst, 0xB0, id) }

// AppendPingreq appends PINGREQ.
func AppendPingreq(dst []byte) []byte { return append(dst, 0xC0, 0) }

// AppendPingresp appends PINGRESP.
func AppendPingresp(dst []byte) []byte { return append(dst, 0xD0, 0) }

// AppendDisconnect appends DISCONNECT.
func AppendDisconnect(dst []byte) []byte { return append(dst, 0xE0, 0) }

// AppendConnack appends CONNACK. sessionPresent is sent only with
// ConnAccepted (3.2.2.2). It panics on a code above ConnRefusedNotAuthorized.
func AppendConnack(dst []byte, sessionPresent bool, code byte) []byte {
	if code > ConnRefusedNotAuthorized {
		panic("mqtt: AppendConnack with reserved return code")
	}
	var f byte
	if sessionPresent && code == ConnAccepted {
		f = 1
	}
	return append(dst, 0x20, 2, f, code)
}

// AppendSuback appends SUBACK with one return code per filter (0, 1, 2 or
// SubackFailure). It panics on id 0 or an empty codes.
func AppendSuback(dst []byte, id uint16, codes []byte) []byte {
	if id == 0 || len(codes) == 0 {
		panic("mqtt: AppendSuback with packet id 0 or no return codes")
	}
	dst = appendHeader(dst, 0x90, 2+len(codes))
	dst = appendUint16(dst, id)
	return append(dst, codes...)
}

// Subscription is one SUBSCRIBE entry for AppendSubscribe.
type Subscription struct {
	Filter string
	QoS    byte
}

// AppendSubscribe appends SUBSCRIBE (client side: tests, edgebench). The
// filters are not validated; use AppendPacket for a checked encoding.
func AppendSubscribe(dst []byte, id uint16, subs ...Subscription) []byte {
	rl := 2
	for _, s := range subs {
		rl += 3 + len(s.Filter)
	}
	dst = appendHeader(dst, 0x82, rl)
	dst = appendUint16(dst, id)
	for _, s := range subs {
		dst = appendField(dst, s.Filter)
		dst = append(dst, s.QoS)
	}
	return dst
}

// AppendUnsubscribe appends UNSUBSCRIBE (client side). The filters are not
// validated.
func AppendUnsubscribe(dst []byte, id uint16, filters ...string) []byte {
	rl := 2
	for _, f := range filters {
		rl += 2 + len(f)
	}
	dst = appendHeader(dst, 0xA2, rl)
	dst = appendUint16(dst, id)
	for _, f := range filters {
		dst = appendField(dst, f)
	}
	return dst
}

// AppendConnect appends CONNECT (client side). An empty ProtocolName means
// "MQTT" level 4. The flags are computed from the *Flag fields; Username and
// Password are sent only when their flag is set, the will only when WillFlag
// is set. Fields are not validated; use AppendPacket for a checked encoding.
func AppendConnect(dst []byte, c *Connect) []byte {
	name, level := c.ProtocolName, c.ProtocolLevel
	if len(name) == 0 {
		name, level = []byte("MQTT"), 4
	}
	return appendConnect(dst, c, name, level, nil, false)
}

// appendConnect appends CONNECT; v5 adds the CONNECT property block props
// and the will's (c.WillProps.Raw).
func appendConnect(dst []byte, c *Connect, name []byte, level byte, props []byte, v5 bool) []byte {
	var f byte
	rl := 2 + len(name) + 1 + 1 + 2 + 2 + len(c.ClientID)
	if v5 {
		rl += propsLen(props)
	}
	if c.CleanSession {
		f |= connClean
	}
	if c.WillFlag {
		f |= connWill | (c.WillQoS&3)<<3
		if c.WillRetain {
			f |= connWillRetain
		}
		rl += 4 + len(c.WillTopic) + len(c.WillMessage)
		if v5 {
			rl += propsLen(c.WillProps.Raw)
		}
	}
	if c.UsernameFlag {
		f |= connUsername
		rl += 2 + len(c.Username)
	}
	if c.PasswordFlag {
		f |= connPassword
		rl += 2 + len(c.Password)
	}
	dst = appendHeader(dst, 0x10, rl)
	dst = appendField(dst, name)
	dst = append(dst, level, f)
	dst = appendUint16(dst, c.KeepAlive)
	if v5 {
		dst = appendPropsBlock(dst, props)
	}
	dst = appendField(dst, c.ClientID)
	if c.WillFlag {
		if v5 {
			dst = appendPropsBlock(dst, c.WillProps.Raw)
		}
		dst = appendField(dst, c.WillTopic)
		dst = appendField(dst, c.WillMessage)
	}
	if c.UsernameFlag {
		dst = appendField(dst, c.Username)
	}
	if c.PasswordFlag {
		dst = appendField(dst, c.Password)
	}
	return dst
}

// AppendPacket appends any packet described by p (for PUBLISH: Dup, QoS
// and Retain; Flags is ignored except as implied) and then checks the
// result with Decode (no size limit), so that it never emits an invalid
// packet. On error it returns dst unchanged and the Decode error, or
// ErrMalformed for a field that does not fit its length prefix.
// SUBSCRIBE and UNSUBSCRIBE take their filters from RawFilters, in wire
// format (as Decode leaves them).
func AppendPacket(dst []byte, p *Packet) (out []byte, err error) {
	start := len(dst)
	defer func() {
		if r := recover(); r != nil {
			out, err = dst[:start], ErrMalformed
		}
	}()
	switch p.Type {
	case TypeConnect:
		dst = AppendConnect(dst, &p.Connect)
	case TypeConnack:
		var f byte
		if p.SessionPresent {
			f = 1
		}
		dst = append(dst, 0x20, 2, f, p.ReturnCode)
	case TypePublish:
		if p.QoS > 2 {
			return dst, ErrQoS
		}
		if p.QoS == 0 && p.Dup {
			return dst, ErrDupQoS0
		}
		if p.QoS > 0 && p.PacketID == 0 {
			return dst, ErrPacketID
		}
		dst = AppendPublish(dst, p.Topic, p.Payload, p.QoS, p.Retain, p.Dup, p.PacketID)
	case TypePuback, TypePubrec, TypePubrel, TypePubcomp, TypeUnsuback:
		dst = append(dst, byte(p.Type)<<4|requiredFlags[p.Type], 2, byte(p.PacketID>>8), byte(p.PacketID))
	case TypeSubscribe, TypeUnsubscribe:
		dst = appendHeader(dst, byte(p.Type)<<4|2, 2+len(p.RawFilters))
		dst = appendUint16(dst, p.PacketID)
		dst = append(dst, p.RawFilters...)
	case TypeSuback:
		dst = appendHeader(dst, 0x90, 2+len(p.ReturnCodes))
		dst = appendUint16(dst, p.PacketID)
		dst = append(dst, p.ReturnCodes...)
	case TypePingreq, TypePingresp, TypeDisconnect:
		dst = append(dst, byte(p.Type)<<4, 0)
	default:
		return dst, ErrPacketType
	}
	var check Packet
	if _, err := Decode(dst[start:], 0, &check); err != nil {
		return dst[:start], err
	}
	return dst, nil
}
