package mqtt

// requiredFlags is the fixed-header flag nibble each packet type must carry
// (3.1.1 section 2.2.2, Table 2.2); PUBLISH is checked separately.
var requiredFlags = [16]byte{
	TypePubrel:      0b0010,
	TypeSubscribe:   0b0010,
	TypeUnsubscribe: 0b0010,
}

// checkFirstByte validates the type and flags of a fixed header byte.
func checkFirstByte(b byte, v5 bool) error {
	t, flags := Type(b>>4), b&0x0F
	switch t {
	case 0:
		return ErrPacketType
	case TypeAuth: // reserved in 3.1.1; AUTH in 5.0 (3.15.1: flags 0)
		if !v5 {
			return ErrPacketType
		}
	case TypePublish:
		qos := flags >> 1 & 3
		if qos == 3 {
			return ErrQoS
		}
		if qos == 0 && flags&0b1000 != 0 {
			return ErrDupQoS0
		}
		return nil
	}
	if flags != requiredFlags[t] {
		return ErrFlags
	}
	return nil
}

// PacketLen reads the fixed header at the start of buf and returns the
// length of the whole packet (fixed header plus remaining length), so that
// an event loop can size the buffer for a partial packet. It returns 0, nil
// when buf does not yet hold the complete fixed header. It checks the type,
// the flags and the size limit: maxPacket > 0 caps the whole packet size
// (ErrPacketTooLarge); maxPacket <= 0 means only the protocol limit applies.
// Errors: ErrPacketType, ErrFlags, ErrQoS, ErrDupQoS0, ErrRemainingLength,
// ErrPacketTooLarge.
func PacketLen(buf []byte, maxPacket int) (int, error) {
	n, _, err := fixedHeader(buf, maxPacket, false)
	return n, err
}

// PacketLen5 is PacketLen on an MQTT 5.0 connection (AUTH is a packet).
func PacketLen5(buf []byte, maxPacket int) (int, error) {
	n, _, err := fixedHeader(buf, maxPacket, true)
	return n, err
}

// fixedHeader returns the total packet length and the header length.
func fixedHeader(buf []byte, maxPacket int, v5 bool) (total, hdr int, err error) {
	if len(buf) == 0 {
		return 0, 0, nil
	}
	if err := checkFirstByte(buf[0], v5); err != nil {
		return 0, 0, err
	}
	rl := 0
	for i := 0; i < 4; i++ {
		if 1+i >= len(buf) {
			return 0, 0, nil
		}
		c := buf[1+i]
		rl |= int(c&0x7F) << (7 * i)
		if c&0x80 == 0 {
			hdr = 2 + i
			total = hdr + rl
			if maxPacket > 0 && total > maxPacket {
				return 0, 0, ErrPacketTooLarge
			}
			return total, hdr, nil
		}
	}
	return 0, 0, ErrRemainingLength
}

// Decode decodes the packet at the start of buf into p, in place: the
// slices of p alias buf and stay valid only until buf is reused (see the
// package doc). It returns n = 0, err = nil when buf holds only part of a
// packet (read more and call again with the longer buffer), and otherwise
// n = the length of the one packet decoded; the next packet starts at
// buf[n:]. Size errors are detected from the fixed header alone, before the
// body has arrived. maxPacket > 0 caps the whole packet size; maxPacket <= 0
// applies only the protocol limit.
//
// Errors (unwrapped, see the package doc): ErrPacketType, ErrFlags, ErrQoS,
// ErrDupQoS0, ErrRemainingLength, ErrPacketTooLarge, ErrMalformed,
// ErrProtocolName, ErrProtocolLevel, ErrConnectFlags, ErrWillFlags,
// ErrPasswordWithoutUsername, ErrUTF8, ErrEmptyTopic, ErrTopicName,
// ErrTopicFilter, ErrNoFilters, ErrPacketID. On error p is unspecified.
// Decode does not allocate.
func Decode(buf []byte, maxPacket int, p *Packet) (n int, err error) {
	total, hdr, err := fixedHeader(buf, maxPacket, false)
	if err != nil || total == 0 || total > len(buf) {
		return 0, err
	}
	p.reset(buf[0])
	body := buf[hdr:total:total]
	switch p.Type {
	case TypePublish:
		err = decodePublish(body, p)
	case TypePuback, TypePubrec, TypePubrel, TypePubcomp, TypeUnsuback:
		if len(body) != 2 {
			return 0, ErrMalformed
		}
		p.PacketID = uint16(body[0])<<8 | uint16(body[1])
		if p.PacketID == 0 {
			return 0, ErrPacketID
		}
	case TypePingreq, TypePingresp, TypeDisconnect:
		if len(body) != 0 {
			return 0, ErrMalformed
		}
	case TypeConnect:
		err = decodeConnect(body, p, false)
	case TypeConnack:
		err = decodeConnack(body, p)
	case TypeSubscribe, TypeUnsubscribe:
		err = decodeSubscribe(body, p)
	case TypeSuback:
		err = decodeSuback(body, p)
	}
	if err != nil {
		return 0, err
	}
	return total, nil
}

// readBytes reads a two-byte length prefixed field at b[i:]. The result is
// capacity-limited so that appending to it cannot overwrite b.
func readBytes(b []byte, i int) (s []byte, next int, ok bool) {
	if i+2 > len(b) {
		return nil, i, false
	}
	n := int(b[i])<<8 | int(b[i+1])
	i += 2
	if n > len(b)-i {
		return nil, i, false
	}
	return b[i : i+n : i+n], i + n, true
}

func decodePublish(body []byte, p *Packet) error {
	i, err := decodePublishHead(body, p)
	if err != nil {
		return err
	}
	if err := ValidTopicName(p.Topic); err != nil {
		return err
	}
	p.Payload = body[i:]
	return nil
}

// decodePublishHead reads the flags, the topic (not validated) and the
// packet id of a PUBLISH of either version; it returns the index after.
func decodePublishHead(body []byte, p *Packet) (int, error) {
	p.Dup = p.Flags&0b1000 != 0
	p.QoS = p.Flags >> 1 & 3
	p.Retain = p.Flags&1 != 0
	topic, i, ok := readBytes(body, 0)
	if !ok {
		return 0, ErrMalformed
	}
	p.Topic = topic
	if p.QoS > 0 {
		if i+2 > len(body) {
			return 0, ErrMalformed
		}
		p.PacketID = uint16(body[i])<<8 | uint16(body[i+1])
		if p.PacketID == 0 {
			return 0, ErrPacketID
		}
		i += 2
	}
	return i, nil
}

// CONNECT flag bits (3.1.2.3).
const (
	connReserved   = 1 << 0
	connClean      = 1 << 1
	connWill       = 1 << 2
	connWillQoS    = 3 << 3
	connWillRetain = 1 << 5
	connPassword   = 1 << 6
	connUsername   = 1 << 7
)

// decodeConnect decodes a CONNECT of level 3 or 4, or with v5 of level 5
// (its properties into p.Props, the will's into c.WillProps).
func decodeConnect(body []byte, p *Packet, v5 bool) error {
	c := &p.Connect
	name, i, ok := readBytes(body, 0)
	if !ok || i >= len(body) {
		return ErrMalformed
	}
	c.ProtocolName = name
	c.ProtocolLevel = body[i]
	i++
	switch string(name) {
	case "MQTT":
		if c.ProtocolLevel != Level311 && (!v5 || c.ProtocolLevel != Level5) {
			return ErrProtocolLevel
		}
	case "MQIsdp":
		if c.ProtocolLevel != 3 {
			return ErrProtocolLevel
		}
	default:
		return ErrProtocolName
	}
	if i+3 > len(body) {
		return ErrMalformed
	}
	f := body[i]
	c.KeepAlive = uint16(body[i+1])<<8 | uint16(body[i+2])
	i += 3
	if f&connReserved != 0 {
		return ErrConnectFlags
	}
	c.CleanSession = f&connClean != 0
	c.WillFlag = f&connWill != 0
	c.WillQoS = f & connWillQoS >> 3
	c.WillRetain = f&connWillRetain != 0
	c.UsernameFlag = f&connUsername != 0
	c.PasswordFlag = f&connPassword != 0
	if !c.WillFlag && (c.WillQoS != 0 || c.WillRetain) {
		return ErrWillFlags
	}
	if c.WillQoS == 3 {
		return ErrQoS
	}
	five := c.ProtocolLevel == Level5
	if c.PasswordFlag && !c.UsernameFlag && !five { // allowed in 5.0 (3.1.2.9)
		return ErrPasswordWithoutUsername
	}
	if five {
		var err error
		if i, err = decodeProps(body, i, propsConnect, &p.Props); err != nil {
			return err
		}
	}
	if c.ClientID, i, ok = readBytes(body, i); !ok {
		return ErrMalformed
	}
	if !validUTF8(c.ClientID) {
		return ErrUTF8
	}
	if c.WillFlag {
		if five {
			var err error
			if i, err = decodeProps(body, i, propsWill, &c.WillProps); err != nil {
				return err
			}
		}
		if c.WillTopic, i, ok = readBytes(body, i); !ok {
			return ErrMalformed
		}
		if err := ValidTopicName(c.WillTopic); err != nil {
			return err
		}
		if c.WillMessage, i, ok = readBytes(body, i); !ok {
			return ErrMalformed
		}
	}
	if c.UsernameFlag {
		if c.Username, i, ok = readBytes(body, i); !ok {
			return ErrMalformed
		}
		if !validUTF8(c.Username) {
			return ErrUTF8
		}
	}
	if c.PasswordFlag {
		if c.Password, i, ok = readBytes(body, i); !ok {
			return ErrMalformed
		}
	}
	if i != len(body) {
		return ErrMalformed
	}
	return nil
}

func decodeConnack(body []byte, p *Packet) error {
	if len(body) != 2 || body[0]&^1 != 0 || body[1] > ConnRefusedNotAuthorized {
		return ErrMalformed
	}
	p.SessionPresent = body[0] == 1
	p.ReturnCode = body[1]
	// 3.2.2.2: session present must be 0 with a non-zero return code.
	if p.SessionPresent && p.ReturnCode != ConnAccepted {
		return ErrMalformed
	}
	return nil
}

func decodeSubscribe(body []byte, p *Packet) error {
	if len(body) < 2 {
		return ErrMalformed
	}
	p.PacketID = uint16(body[0])<<8 | uint16(body[1])
	if p.PacketID == 0 {
		return ErrPacketID
	}
	if len(body) == 2 {
		return ErrNoFilters
	}
	sub := p.Type == TypeSubscribe
	for i := 2; i < len(body); {
		f, next, ok := readBytes(body, i)
		if !ok {
			return ErrMalformed
		}
		if err := ValidTopicFilter(f); err != nil {
			return err
		}
		i = next
		if sub {
			if i >= len(body) {
				return ErrMalformed
			}
			o := body[i]
			if o&^3 != 0 { // 3.8.3.1: upper six bits reserved
				return ErrMalformed
			}
			if o == 3 {
				return ErrQoS
			}
			i++
		}
		p.NumFilters++
	}
	p.RawFilters = body[2:]
	return nil
}

func decodeSuback(body []byte, p *Packet) error {
	if len(body) < 3 {
		return ErrMalformed
	}
	p.PacketID = uint16(body[0])<<8 | uint16(body[1])
	if p.PacketID == 0 {
		return ErrPacketID
	}
	for _, c := range body[2:] {
		if c > 2 && c != SubackFailure {
			return ErrMalformed
		}
	}
	p.ReturnCodes = body[2:]
	return nil
}
