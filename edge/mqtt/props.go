package mqtt

// MQTT 5.0 properties (section 2.2.2): a variable byte integer length, then
// (identifier, value) pairs. Decode5 parses them in place into Properties;
// the Append*Prop helpers build a property block for the v5 encoders.

// Property identifiers (MQTT 5.0 section 2.2.2.2, table 2-4).
const (
	PropPayloadFormat        byte = 0x01
	PropMessageExpiry        byte = 0x02
	PropContentType          byte = 0x03
	PropResponseTopic        byte = 0x08
	PropCorrelationData      byte = 0x09
	PropSubscriptionID       byte = 0x0B
	PropSessionExpiry        byte = 0x11
	PropAssignedClientID     byte = 0x12
	PropServerKeepAlive      byte = 0x13
	PropAuthMethod           byte = 0x15
	PropAuthData             byte = 0x16
	PropRequestProblemInfo   byte = 0x17
	PropWillDelay            byte = 0x18
	PropRequestResponseInfo  byte = 0x19
	PropResponseInfo         byte = 0x1A
	PropServerReference      byte = 0x1C
	PropReasonString         byte = 0x1F
	PropReceiveMaximum       byte = 0x21
	PropTopicAliasMaximum    byte = 0x22
	PropTopicAlias           byte = 0x23
	PropMaximumQoS           byte = 0x24
	PropRetainAvailable      byte = 0x25
	PropUserProperty         byte = 0x26
	PropMaximumPacketSize    byte = 0x27
	PropWildcardSubAvailable byte = 0x28
	PropSubIDAvailable       byte = 0x29
	PropSharedSubAvailable   byte = 0x2A
)

// propType is how a property's value is encoded.
type propType uint8

const (
	ptNone propType = iota // not a property identifier
	ptByte
	ptU16
	ptU32
	ptVBI
	ptUTF8
	ptBinary
	ptPair // UTF-8 string pair
)

var propTypes = [0x2B]propType{
	PropPayloadFormat: ptByte, PropMessageExpiry: ptU32, PropContentType: ptUTF8,
	PropResponseTopic: ptUTF8, PropCorrelationData: ptBinary, PropSubscriptionID: ptVBI,
	PropSessionExpiry: ptU32, PropAssignedClientID: ptUTF8, PropServerKeepAlive: ptU16,
	PropAuthMethod: ptUTF8, PropAuthData: ptBinary, PropRequestProblemInfo: ptByte,
	PropWillDelay: ptU32, PropRequestResponseInfo: ptByte, PropResponseInfo: ptUTF8,
	PropServerReference: ptUTF8, PropReasonString: ptUTF8, PropReceiveMaximum: ptU16,
	PropTopicAliasMaximum: ptU16, PropTopicAlias: ptU16, PropMaximumQoS: ptByte,
	PropRetainAvailable: ptByte, PropUserProperty: ptPair, PropMaximumPacketSize: ptU32,
	PropWildcardSubAvailable: ptByte, PropSubIDAvailable: ptByte, PropSharedSubAvailable: ptByte,
}

// propSet is a set of property identifiers, one bit per identifier.
type propSet uint64

func pset(ids ...byte) propSet {
	var s propSet
	for _, id := range ids {
		s |= 1 << id
	}
	return s
}

// The properties each packet may carry (MQTT 5.0 table 2-4). A property
// outside its packet's set is a Malformed Packet (2.2.2.2).
var (
	propsConnect = pset(PropSessionExpiry, PropAuthMethod, PropAuthData, PropRequestProblemInfo,
		PropRequestResponseInfo, PropReceiveMaximum, PropTopicAliasMaximum, PropUserProperty,
		PropMaximumPacketSize)
	propsWill = pset(PropPayloadFormat, PropMessageExpiry, PropContentType, PropResponseTopic,
		PropCorrelationData, PropWillDelay, PropUserProperty)
	propsConnack = pset(PropSessionExpiry, PropAssignedClientID, PropServerKeepAlive,
		PropAuthMethod, PropAuthData, PropResponseInfo, PropServerReference, PropReasonString,
		PropReceiveMaximum, PropTopicAliasMaximum, PropMaximumQoS, PropRetainAvailable,
		PropUserProperty, PropMaximumPacketSize, PropWildcardSubAvailable, PropSubIDAvailable,
		PropSharedSubAvailable)
	propsPublish = pset(PropPayloadFormat, PropMessageExpiry, PropContentType, PropResponseTopic,
		PropCorrelationData, PropSubscriptionID, PropTopicAlias, PropUserProperty)
	propsAck        = pset(PropReasonString, PropUserProperty)
	propsSubscribe  = pset(PropSubscriptionID, PropUserProperty)
	propsUnsub      = pset(PropUserProperty)
	propsDisconnect = pset(PropSessionExpiry, PropServerReference, PropReasonString, PropUserProperty)
	propsAuth       = pset(PropAuthMethod, PropAuthData, PropReasonString, PropUserProperty)
	// repeatable: may appear more than once (2.2.2.2; 3.3.2.3.8: a
	// server's PUBLISH carries one Subscription Identifier per matching
	// subscription).
	propsRepeatable = pset(PropUserProperty, PropSubscriptionID)
)

// MaxSubscriptionID is the largest Subscription Identifier (3.8.2.1.2).
const MaxSubscriptionID = 268435455

// Properties are the decoded properties of one v5 packet or will. Has
// records which were present; a field whose bit is not set holds its zero
// value, not the specification's default. The byte slices alias the decode
// buffer (see the package doc). User properties (and, in a server's
// PUBLISH, every Subscription Identifier after the first) are read from
// Raw with UserProps and SubIDs.
type Properties struct {
	Has propSet

	PayloadFormat        byte
	RequestProblemInfo   byte
	RequestResponseInfo  byte
	MaximumQoS           byte
	RetainAvailable      byte
	WildcardSubAvailable byte
	SubIDAvailable       byte
	SharedSubAvailable   byte
	ServerKeepAlive      uint16
	ReceiveMaximum       uint16
	TopicAliasMaximum    uint16
	TopicAlias           uint16
	MessageExpiry        uint32
	SessionExpiry        uint32
	WillDelay            uint32
	MaximumPacketSize    uint32
	SubscriptionID       uint32 // the first one

	ContentType      []byte
	ResponseTopic    []byte
	CorrelationData  []byte
	AssignedClientID []byte
	AuthMethod       []byte
	AuthData         []byte
	ResponseInfo     []byte
	ServerReference  []byte
	ReasonString     []byte

	// Raw is the property block as on the wire, without its length.
	Raw []byte
}

// HasProp reports whether the property id was present.
func (p *Properties) HasProp(id byte) bool { return id < 64 && p.Has&(1<<id) != 0 }

// readVBI reads a variable byte integer (1.5.5) at b[i:]: at most four
// bytes, minimally encoded or not (the specification only requires the
// minimum of a sender).
func readVBI(b []byte, i int) (v, next int, ok bool) {
	for k := 0; k < 4; k++ {
		if i+k >= len(b) {
			return 0, i, false
		}
		c := b[i+k]
		v |= int(c&0x7F) << (7 * k)
		if c&0x80 == 0 {
			return v, i + k + 1, true
		}
	}
	return 0, i, false
}

// vbiLen is the length of v's variable byte integer encoding.
func vbiLen(v int) int {
	switch {
	case v < 1<<7:
		return 1
	case v < 1<<14:
		return 2
	case v < 1<<21:
		return 3
	}
	return 4
}

// AppendVBI appends v as a variable byte integer (1.5.5). It panics on v
// outside 0..MaxRemainingLength.
func AppendVBI(dst []byte, v int) []byte {
	if v < 0 || v > MaxRemainingLength {
		panic("mqtt: variable byte integer out of range")
	}
	for {
		c := byte(v & 0x7F)
		v >>= 7
		if v == 0 {
			return append(dst, c)
		}
		dst = append(dst, c|0x80)
	}
}

// decodeProps reads the property block at b[i:] (length, then properties)
// allowing the ids in allowed. It returns the index after the block.
// Errors: ErrMalformed (a length past the packet), ErrUnknownProperty,
// ErrPropertyNotAllowed, ErrDuplicateProperty, ErrPropertyValue, ErrUTF8.
func decodeProps(b []byte, i int, allowed propSet, pr *Properties) (int, error) {
	n, i, ok := readVBI(b, i)
	if !ok || n > len(b)-i {
		return 0, ErrMalformed
	}
	raw := b[i : i+n : i+n]
	pr.Raw = raw
	for j := 0; j < len(raw); {
		id := raw[j]
		j++
		if int(id) >= len(propTypes) || propTypes[id] == ptNone {
			return 0, ErrUnknownProperty
		}
		bit := propSet(1) << id
		if allowed&bit == 0 {
			return 0, ErrPropertyNotAllowed
		}
		if pr.Has&bit != 0 && propsRepeatable&bit == 0 {
			return 0, ErrDuplicateProperty
		}
		first := pr.Has&bit == 0
		pr.Has |= bit
		switch propTypes[id] {
		case ptByte:
			if j >= len(raw) {
				return 0, ErrMalformed
			}
			v := raw[j]
			j++
			// Every byte property is a 0/1 flag except Maximum QoS (0/1 too:
			// 3.2.2.3.4 allows only 0 or 1 to be sent).
			if v > 1 {
				return 0, ErrPropertyValue
			}
			switch id {
			case PropPayloadFormat:
				pr.PayloadFormat = v
			case PropRequestProblemInfo:
				pr.RequestProblemInfo = v
			case PropRequestResponseInfo:
				pr.RequestResponseInfo = v
			case PropMaximumQoS:
				pr.MaximumQoS = v
			case PropRetainAvailable:
				pr.RetainAvailable = v
			case PropWildcardSubAvailable:
				pr.WildcardSubAvailable = v
			case PropSubIDAvailable:
				pr.SubIDAvailable = v
			case PropSharedSubAvailable:
				pr.SharedSubAvailable = v
			}
		case ptU16:
			if j+2 > len(raw) {
				return 0, ErrMalformed
			}
			v := uint16(raw[j])<<8 | uint16(raw[j+1])
			j += 2
			switch id {
			case PropServerKeepAlive:
				pr.ServerKeepAlive = v
			case PropReceiveMaximum:
				if v == 0 { // 3.1.2.11.3, 3.2.2.3.3: a Protocol Error
					return 0, ErrPropertyValue
				}
				pr.ReceiveMaximum = v
			case PropTopicAliasMaximum:
				pr.TopicAliasMaximum = v
			case PropTopicAlias:
				if v == 0 { // 3.3.2.3.4
					return 0, ErrTopicAlias
				}
				pr.TopicAlias = v
			}
		case ptU32:
			if j+4 > len(raw) {
				return 0, ErrMalformed
			}
			v := uint32(raw[j])<<24 | uint32(raw[j+1])<<16 | uint32(raw[j+2])<<8 | uint32(raw[j+3])
			j += 4
			switch id {
			case PropMessageExpiry:
				pr.MessageExpiry = v
			case PropSessionExpiry:
				pr.SessionExpiry = v
			case PropWillDelay:
				pr.WillDelay = v
			case PropMaximumPacketSize:
				if v == 0 { // 3.1.2.11.4
					return 0, ErrPropertyValue
				}
				pr.MaximumPacketSize = v
			}
		case ptVBI:
			v, next, ok := readVBI(raw, j)
			if !ok {
				return 0, ErrMalformed
			}
			j = next
			if v == 0 { // 3.8.2.1.2: 0 is a Protocol Error
				return 0, ErrPropertyValue
			}
			if first {
				pr.SubscriptionID = uint32(v)
			}
		case ptUTF8, ptBinary:
			s, next, ok := readBytes(raw, j)
			if !ok {
				return 0, ErrMalformed
			}
			j = next
			if propTypes[id] == ptUTF8 && !validUTF8(s) {
				return 0, ErrUTF8
			}
			switch id {
			case PropContentType:
				pr.ContentType = s
			case PropResponseTopic:
				if ValidTopicName(s) != nil { // 3.3.2.3.5: no wildcards
					return 0, ErrPropertyValue
				}
				pr.ResponseTopic = s
			case PropCorrelationData:
				pr.CorrelationData = s
			case PropAssignedClientID:
				pr.AssignedClientID = s
			case PropAuthMethod:
				pr.AuthMethod = s
			case PropAuthData:
				pr.AuthData = s
			case PropResponseInfo:
				pr.ResponseInfo = s
			case PropServerReference:
				pr.ServerReference = s
			case PropReasonString:
				pr.ReasonString = s
			}
		case ptPair:
			for range 2 {
				s, next, ok := readBytes(raw, j)
				if !ok {
					return 0, ErrMalformed
				}
				if !validUTF8(s) {
					return 0, ErrUTF8
				}
				j = next
			}
		}
	}
	if pr.Has&(1<<PropAuthData) != 0 && pr.Has&(1<<PropAuthMethod) == 0 {
		return 0, ErrPropertyValue // 3.1.2.11.10: data without a method
	}
	return i + n, nil
}

// PropIter walks a property block (Properties.Raw) without allocating.
type PropIter struct{ rest []byte }

// Props returns an iterator over the properties in raw, which must be a
// block Decode5 accepted (or one the Append*Prop helpers built).
func Props(raw []byte) PropIter { return PropIter{raw} }

// Next returns the next property: its id and its value's wire bytes (for a
// string or binary, without the length; for a pair, both length-prefixed
// strings). ok is false at the end or on a malformed block.
func (it *PropIter) Next() (id byte, val []byte, ok bool) {
	b := it.rest
	if len(b) == 0 || int(b[0]) >= len(propTypes) {
		return 0, nil, false
	}
	id = b[0]
	var end, start int
	switch propTypes[id] {
	case ptByte:
		start, end = 1, 2
	case ptU16:
		start, end = 1, 3
	case ptU32:
		start, end = 1, 5
	case ptVBI:
		_, n, vok := readVBI(b, 1)
		if !vok {
			return 0, nil, false
		}
		start, end = 1, n
	case ptUTF8, ptBinary:
		if len(b) < 3 {
			return 0, nil, false
		}
		start, end = 3, 3+(int(b[1])<<8|int(b[2]))
	case ptPair:
		_, n1, ok1 := readBytes(b, 1)
		_, n2, ok2 := readBytes(b, n1)
		if !ok1 || !ok2 {
			return 0, nil, false
		}
		start, end = 1, n2
	default:
		return 0, nil, false
	}
	if end > len(b) {
		return 0, nil, false
	}
	it.rest = b[end:]
	return id, b[start:end:end], true
}

// UserProps yields each User Property (key, value) of a property block in
// order, aliasing it.
func UserProps(raw []byte) func(yield func(key, value []byte) bool) {
	return func(yield func([]byte, []byte) bool) {
		it := Props(raw)
		for id, v, ok := it.Next(); ok; id, v, ok = it.Next() {
			if id != PropUserProperty {
				continue
			}
			k, n, _ := readBytes(v, 0)
			val, _, _ := readBytes(v, n)
			if !yield(k, val) {
				return
			}
		}
	}
}

// SubIDs yields each Subscription Identifier of a property block in order.
func SubIDs(raw []byte) func(yield func(uint32) bool) {
	return func(yield func(uint32) bool) {
		it := Props(raw)
		for id, v, ok := it.Next(); ok; id, v, ok = it.Next() {
			if id == PropSubscriptionID {
				n, _, _ := readVBI(v, 0)
				if !yield(uint32(n)) {
					return
				}
			}
		}
	}
}

// AppendByteProp appends a one-byte property.
func AppendByteProp(dst []byte, id, v byte) []byte { return append(dst, id, v) }

// AppendU16Prop appends a two-byte integer property.
func AppendU16Prop(dst []byte, id byte, v uint16) []byte {
	return append(dst, id, byte(v>>8), byte(v))
}

// AppendU32Prop appends a four-byte integer property.
func AppendU32Prop(dst []byte, id byte, v uint32) []byte {
	return append(dst, id, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// AppendVBIProp appends a variable byte integer property (Subscription
// Identifier).
func AppendVBIProp(dst []byte, id byte, v int) []byte { return AppendVBI(append(dst, id), v) }

// AppendStringProp appends a UTF-8 string or binary property. It panics on
// a value over 65535 bytes.
func AppendStringProp[T Text](dst []byte, id byte, v T) []byte {
	return appendField(append(dst, id), v)
}

// AppendUserProp appends a User Property. It panics on a key or value over
// 65535 bytes.
func AppendUserProp[T Text](dst []byte, key, value T) []byte {
	return appendField(appendField(append(dst, PropUserProperty), key), value)
}
