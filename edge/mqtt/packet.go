package mqtt

import "errors"

// Type is an MQTT control packet type (3.1.1 section 2.2.1).
type Type uint8

// Control packet types. 0 and 15 are reserved and never decoded.
const (
	TypeConnect     Type = 1
	TypeConnack     Type = 2
	TypePublish     Type = 3
	TypePuback      Type = 4
	TypePubrec      Type = 5
	TypePubrel      Type = 6
	TypePubcomp     Type = 7
	TypeSubscribe   Type = 8
	TypeSuback      Type = 9
	TypeUnsubscribe Type = 10
	TypeUnsuback    Type = 11
	TypePingreq     Type = 12
	TypePingresp    Type = 13
	TypeDisconnect  Type = 14
)

var typeNames = [...]string{"RESERVED0", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC",
	"PUBREL", "PUBCOMP", "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ",
	"PINGRESP", "DISCONNECT", "RESERVED15"}

func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return "INVALID"
}

// CONNACK return codes (3.1.1 section 3.2.2.3).
const (
	ConnAccepted                   byte = 0x00
	ConnRefusedProtocolVersion     byte = 0x01
	ConnRefusedIdentifierRejected  byte = 0x02
	ConnRefusedServerUnavailable   byte = 0x03
	ConnRefusedBadUsernamePassword byte = 0x04
	ConnRefusedNotAuthorized       byte = 0x05
)

// SubackFailure is the SUBACK return code for a refused filter (3.9.3).
const SubackFailure byte = 0x80

// Protocol limits.
const (
	// MaxRemainingLength is the largest remaining length four bytes can
	// encode (3.1.1 section 2.2.3).
	MaxRemainingLength = 268435455
	// MaxStringLen is the longest UTF-8 string or binary field (1.5.3).
	MaxStringLen = 65535
	// MaxHeaderLen is the longest fixed header: type byte + 4 length bytes.
	MaxHeaderLen = 5
)

// Sentinel errors. Decode and the validators return them unwrapped.
var (
	ErrMalformed               = errors.New("mqtt: malformed packet")
	ErrRemainingLength         = errors.New("mqtt: remaining length longer than 4 bytes")
	ErrPacketTooLarge          = errors.New("mqtt: packet larger than the maximum packet size")
	ErrPacketType              = errors.New("mqtt: reserved packet type")
	ErrFlags                   = errors.New("mqtt: invalid fixed header flags")
	ErrQoS                     = errors.New("mqtt: invalid QoS 3")
	ErrDupQoS0                 = errors.New("mqtt: DUP flag set on a QoS 0 PUBLISH")
	ErrProtocolName            = errors.New("mqtt: unknown protocol name")
	ErrProtocolLevel           = errors.New("mqtt: unacceptable protocol level")
	ErrConnectFlags            = errors.New("mqtt: CONNECT reserved flag set")
	ErrWillFlags               = errors.New("mqtt: will QoS or retain set without will flag")
	ErrPasswordWithoutUsername = errors.New("mqtt: password flag set without username flag")
	ErrUTF8                    = errors.New("mqtt: invalid UTF-8 string or U+0000")
	ErrEmptyTopic              = errors.New("mqtt: empty topic")
	ErrTopicName               = errors.New("mqtt: invalid topic name")
	ErrTopicFilter             = errors.New("mqtt: invalid topic filter")
	ErrNoFilters               = errors.New("mqtt: SUBSCRIBE or UNSUBSCRIBE without topic filters")
	ErrPacketID                = errors.New("mqtt: packet identifier 0")
)

// Connect holds the variable header and payload of a CONNECT packet.
// Its slices alias the decode buffer (see the package doc).
type Connect struct {
	ProtocolName  []byte // "MQTT" (level 4) or "MQIsdp" (level 3)
	ProtocolLevel byte
	CleanSession  bool
	KeepAlive     uint16 // seconds
	ClientID      []byte // may be empty; the server decides (3.1.3.1)

	WillFlag    bool
	WillQoS     byte
	WillRetain  bool
	WillTopic   []byte
	WillMessage []byte

	UsernameFlag bool
	Username     []byte
	PasswordFlag bool
	Password     []byte

	// WillProps are the will's properties (MQTT 5.0 only, 3.1.3.2).
	WillProps Properties
}

// Packet is one decoded control packet. Only the fields of its Type are set;
// Decode zeroes the rest. All slices alias the decode buffer.
type Packet struct {
	Type  Type
	Flags byte // low nibble of the fixed header byte

	// PUBLISH (Dup, QoS and Retain come from Flags).
	Dup     bool
	QoS     byte
	Retain  bool
	Topic   []byte
	Payload []byte

	// PacketID is set for PUBLISH with QoS > 0, PUBACK, PUBREC, PUBREL,
	// PUBCOMP, SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK; never 0 there.
	PacketID uint16

	// CONNECT.
	Connect Connect

	// CONNACK.
	SessionPresent bool
	ReturnCode     byte

	// SUBSCRIBE and UNSUBSCRIBE: the validated wire bytes after the packet id
	// (SUBSCRIBE: length, filter, options per entry; UNSUBSCRIBE: length,
	// filter). Read them with Filters or NewFilterIter. NumFilters >= 1.
	RawFilters []byte
	NumFilters int

	// SUBACK: one return code per filter (0, 1, 2 or SubackFailure);
	// MQTT 5.0 SUBACK and UNSUBACK: one reason code per filter.
	ReturnCodes []byte

	// MQTT 5.0 only (Decode5): the reason code of PUBACK, PUBREC,
	// PUBREL, PUBCOMP, DISCONNECT, AUTH and CONNACK (0 when left out),
	// and the packet's properties (for CONNECT, the CONNECT properties;
	// the will's are in Connect.WillProps).
	ReasonCode byte
	Props      Properties
}

// reset zeroes p for a packet with fixed header byte first, as
// *p = Packet{Type: ..., Flags: ...} would, but field by field and the two
// property sets only if a v5 decode filled them: they are most of the
// struct's size, and a 3.1.1 connection's packets never touch them, so
// its decode does not pay for clearing them (TestReset checks that every
// field is cleared).
func (p *Packet) reset(first byte) {
	if p.Props.Has != 0 || p.Props.Raw != nil {
		p.Props = Properties{}
	}
	c := &p.Connect
	if c.WillProps.Has != 0 || c.WillProps.Raw != nil {
		c.WillProps = Properties{}
	}
	p.Type, p.Flags = Type(first>>4), first&0x0F
	p.Dup, p.QoS, p.Retain = false, 0, false
	p.Topic, p.Payload = nil, nil
	p.PacketID = 0
	c.ProtocolName, c.ProtocolLevel, c.CleanSession, c.KeepAlive, c.ClientID = nil, 0, false, 0, nil
	c.WillFlag, c.WillQoS, c.WillRetain, c.WillTopic, c.WillMessage = false, 0, false, nil, nil
	c.UsernameFlag, c.Username, c.PasswordFlag, c.Password = false, nil, false, nil
	p.SessionPresent, p.ReturnCode = false, 0
	p.RawFilters, p.NumFilters, p.ReturnCodes = nil, 0, nil
	p.ReasonCode = 0
}

// FilterIter walks the topic filters of a decoded SUBSCRIBE or UNSUBSCRIBE
// without allocating. The zero value yields nothing.
type FilterIter struct {
	rest []byte
	sub  bool
}

// NewFilterIter returns an iterator over p's filters (empty unless p is a
// SUBSCRIBE or UNSUBSCRIBE).
func (p *Packet) NewFilterIter() FilterIter {
	switch p.Type {
	case TypeSubscribe:
		return FilterIter{rest: p.RawFilters, sub: true}
	case TypeUnsubscribe:
		return FilterIter{rest: p.RawFilters}
	}
	return FilterIter{}
}

// Next returns the next filter and its requested QoS (0 for UNSUBSCRIBE).
// ok is false at the end. The filter aliases the decode buffer.
func (it *FilterIter) Next() (filter []byte, qos byte, ok bool) {
	b := it.rest
	if len(b) < 2 {
		return nil, 0, false
	}
	n := int(b[0])<<8 | int(b[1])
	end := 2 + n
	if it.sub {
		if end+1 > len(b) {
			it.rest = nil
			return nil, 0, false
		}
		qos = b[end]
		it.rest = b[end+1:]
	} else {
		if end > len(b) {
			it.rest = nil
			return nil, 0, false
		}
		it.rest = b[end:]
	}
	return b[2:end:end], qos & 3, true
}

// Filters yields p's topic filters with their requested QoS:
//
//	for filter, qos := range p.Filters() { ... }
func (p *Packet) Filters() func(yield func(filter []byte, qos byte) bool) {
	return func(yield func([]byte, byte) bool) {
		it := p.NewFilterIter()
		for {
			f, q, ok := it.Next()
			if !ok || !yield(f, q) {
				return
			}
		}
	}
}
