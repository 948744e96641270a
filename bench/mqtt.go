package bench

import (
	"encoding/binary"
	"fmt"
)

// The MQTT 3.1.1 subset the load engine speaks (OASIS mqtt-v3.1.1 section 3).
// Encoders append to a caller's buffer so the hot path allocates nothing.

// Packet types (section 2.2.1).
const (
	pktConnect     = 1
	pktConnack     = 2
	pktPublish     = 3
	pktPuback      = 4
	pktSubscribe   = 8
	pktSuback      = 9
	pktPingreq     = 12
	pktPingresp    = 13
	pktDisconnect  = 14
	maxRemaining   = 268435455 // largest Remaining Length, section 2.2.3
	defaultMaxPack = 1 << 20
)

// MaxPacket bounds a packet the engine accepts from a server; bigger closes
// the connection with ErrTooLarge.
const MaxPacket = defaultMaxPack

func appendVarint(b []byte, n int) []byte {
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// connectPacket describes a CONNECT (section 3.1).
type connectPacket struct {
	ClientID  string
	Username  string
	Password  string
	Keepalive uint16 // seconds
	Clean     bool
}

func appendConnect(b []byte, c connectPacket) []byte {
	n := 10 + 2 + len(c.ClientID)
	flags := byte(0)
	if c.Clean {
		flags |= 0x02
	}
	if c.Username != "" {
		flags |= 0x80
		n += 2 + len(c.Username)
	}
	if c.Password != "" {
		flags |= 0x40
		n += 2 + len(c.Password)
	}
	b = append(b, pktConnect<<4)
	b = appendVarint(b, n)
	b = appendString(b, "MQTT")
	b = append(b, 4, flags)
	b = binary.BigEndian.AppendUint16(b, c.Keepalive)
	b = appendString(b, c.ClientID)
	if c.Username != "" {
		b = appendString(b, c.Username)
	}
	if c.Password != "" {
		b = appendString(b, c.Password)
	}
	return b
}

// appendPublish appends a PUBLISH (section 3.3); pid is used only for QoS 1.
func appendPublish(b []byte, topic []byte, qos byte, pid uint16, payload []byte) []byte {
	n := 2 + len(topic) + len(payload)
	if qos > 0 {
		n += 2
	}
	b = append(b, pktPublish<<4|qos<<1)
	b = appendVarint(b, n)
	b = binary.BigEndian.AppendUint16(b, uint16(len(topic)))
	b = append(b, topic...)
	if qos > 0 {
		b = binary.BigEndian.AppendUint16(b, pid)
	}
	return append(b, payload...)
}

func appendPuback(b []byte, pid uint16) []byte {
	return append(b, pktPuback<<4, 2, byte(pid>>8), byte(pid))
}

// appendSubscribe appends a SUBSCRIBE for one filter (section 3.8).
func appendSubscribe(b []byte, pid uint16, filter string, qos byte) []byte {
	b = append(b, pktSubscribe<<4|0x02)
	b = appendVarint(b, 2+2+len(filter)+1)
	b = binary.BigEndian.AppendUint16(b, pid)
	b = appendString(b, filter)
	return append(b, qos)
}

func appendPingreq(b []byte) []byte    { return append(b, pktPingreq<<4, 0) }
func appendDisconnect(b []byte) []byte { return append(b, pktDisconnect<<4, 0) }

// packet is one decoded packet; its slices alias the input buffer.
type packet struct {
	Type    byte
	Flags   byte
	PID     uint16 // PUBLISH (QoS>0), PUBACK, SUBACK
	Code    byte   // CONNACK return code, SUBACK first return code
	Present bool   // CONNACK session present
	Topic   []byte // PUBLISH
	Payload []byte // PUBLISH
}

// parsePacket decodes the first packet in b. It returns the number of bytes
// consumed, or 0 with a nil error when b holds only part of a packet.
// Errors: ErrMalformed, ErrTooLarge.
func parsePacket(b []byte) (n int, p packet, err error) {
	if len(b) < 2 {
		return 0, p, nil
	}
	rem, mult, i := 0, 1, 1
	for {
		if i >= len(b) {
			return 0, p, nil
		}
		if i > 4 {
			return 0, p, fmt.Errorf("parse remaining length: %w", ErrMalformed)
		}
		d := b[i]
		rem += int(d&0x7f) * mult
		mult *= 128
		i++
		if d&0x80 == 0 {
			break
		}
	}
	if rem > MaxPacket {
		return 0, p, fmt.Errorf("parse packet of %d bytes: %w", rem, ErrTooLarge)
	}
	if len(b) < i+rem {
		return 0, p, nil
	}
	body := b[i : i+rem]
	p.Type, p.Flags = b[0]>>4, b[0]&0x0f
	switch p.Type {
	case pktConnack:
		if rem != 2 {
			return 0, p, fmt.Errorf("parse connack of %d bytes: %w", rem, ErrMalformed)
		}
		p.Present, p.Code = body[0]&1 == 1, body[1]
	case pktPublish:
		qos := (p.Flags >> 1) & 3
		if qos == 3 || len(body) < 2 {
			return 0, p, fmt.Errorf("parse publish header: %w", ErrMalformed)
		}
		tl := int(binary.BigEndian.Uint16(body))
		off := 2 + tl
		if qos > 0 {
			off += 2
		}
		if off > len(body) {
			return 0, p, fmt.Errorf("parse publish topic: %w", ErrMalformed)
		}
		p.Topic = body[2 : 2+tl]
		if qos > 0 {
			p.PID = binary.BigEndian.Uint16(body[2+tl:])
		}
		p.Payload = body[off:]
	case pktPuback, pktSuback:
		if len(body) < 2 || (p.Type == pktPuback && len(body) != 2) {
			return 0, p, fmt.Errorf("parse ack of %d bytes: %w", rem, ErrMalformed)
		}
		p.PID = binary.BigEndian.Uint16(body)
		if p.Type == pktSuback {
			if len(body) < 3 {
				return 0, p, fmt.Errorf("parse suback without codes: %w", ErrMalformed)
			}
			p.Code = body[2]
		}
	case pktPingresp:
		if rem != 0 {
			return 0, p, fmt.Errorf("parse pingresp of %d bytes: %w", rem, ErrMalformed)
		}
	default:
		// Other packets (PUBREC, UNSUBACK, ...) are never solicited by the
		// engine; they are passed up by type and ignored there.
	}
	return i + rem, p, nil
}
