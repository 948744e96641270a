package mqtt

import "bytes"

// MQTT 5.0 (OASIS standard, 2019): Decode5 and the Append*5 encoders. A
// connection speaks one version, chosen by its CONNECT's protocol level;
// Decode stays strictly 3.1.1 (a level-5 CONNECT is ErrProtocolLevel there)
// so a server decodes the first packet with Decode and, on
// ErrProtocolLevel, again with Decode5.

// Protocol levels.
const (
	Level311 byte = 4
	Level5   byte = 5
)

// TypeAuth is the MQTT 5.0 AUTH packet (3.15); reserved in 3.1.1.
const TypeAuth Type = 15

// MQTT 5.0 reason codes (2.4, table 2-6).
const (
	RCSuccess                    byte = 0x00 // also Normal disconnection, Granted QoS 0
	RCGrantedQoS1                byte = 0x01
	RCGrantedQoS2                byte = 0x02
	RCDisconnectWithWill         byte = 0x04
	RCNoMatchingSubscribers      byte = 0x10
	RCNoSubscriptionExisted      byte = 0x11
	RCContinueAuth               byte = 0x18
	RCReauthenticate             byte = 0x19
	RCUnspecified                byte = 0x80
	RCMalformed                  byte = 0x81
	RCProtocolError              byte = 0x82
	RCImplementationSpecific     byte = 0x83
	RCUnsupportedProtocolVersion byte = 0x84
	RCClientIDNotValid           byte = 0x85
	RCBadUsernamePassword        byte = 0x86
	RCNotAuthorized              byte = 0x87
	RCServerUnavailable          byte = 0x88
	RCServerBusy                 byte = 0x89
	RCBanned                     byte = 0x8A
	RCServerShuttingDown         byte = 0x8B
	RCBadAuthMethod              byte = 0x8C
	RCKeepAliveTimeout           byte = 0x8D
	RCSessionTakenOver           byte = 0x8E
	RCTopicFilterInvalid         byte = 0x8F
	RCTopicNameInvalid           byte = 0x90
	RCPacketIDInUse              byte = 0x91
	RCPacketIDNotFound           byte = 0x92
	RCReceiveMaximumExceeded     byte = 0x93
	RCTopicAliasInvalid          byte = 0x94
	RCPacketTooLarge             byte = 0x95
	RCMessageRateTooHigh         byte = 0x96
	RCQuotaExceeded              byte = 0x97
	RCAdministrativeAction       byte = 0x98
	RCPayloadFormatInvalid       byte = 0x99
	RCRetainNotSupported         byte = 0x9A
	RCQoSNotSupported            byte = 0x9B
	RCUseAnotherServer           byte = 0x9C
	RCServerMoved                byte = 0x9D
	RCSharedSubNotSupported      byte = 0x9E
	RCConnectionRateExceeded     byte = 0x9F
	RCMaximumConnectTime         byte = 0xA0
	RCSubIDsNotSupported         byte = 0xA1
	RCWildcardSubsNotSupported   byte = 0xA2
	rcLast                       byte = 0xA2
)

// Error is a codec error that carries the MQTT 5.0 reason code a server
// sends in its DISCONNECT (or CONNACK) for it: 0x81 Malformed Packet or
// 0x82 Protocol Error as section 2.2.2.2 and the property definitions say.
// The values below are sentinels, returned unwrapped.
type Error struct {
	Code byte
	msg  string
}

func (e *Error) Error() string { return e.msg }

// MQTT 5.0 sentinel errors (besides the 3.1.1 ones, which Decode5 returns
// too; ReasonCode maps every codec error to its reason code).
var (
	ErrUnknownProperty    = &Error{RCMalformed, "mqtt: unknown property identifier"}
	ErrPropertyNotAllowed = &Error{RCMalformed, "mqtt: property not allowed in this packet"}
	ErrDuplicateProperty  = &Error{RCProtocolError, "mqtt: property included more than once"}
	ErrPropertyValue      = &Error{RCProtocolError, "mqtt: invalid property value"}
	ErrTopicAlias         = &Error{RCTopicAliasInvalid, "mqtt: topic alias 0"}
	ErrReasonCode         = &Error{RCMalformed, "mqtt: invalid reason code for this packet"}
	ErrSubOptions         = &Error{RCMalformed, "mqtt: reserved subscription option bits set"}
	ErrRetainHandling     = &Error{RCProtocolError, "mqtt: retain handling 3"}
	ErrSharedNoLocal      = &Error{RCProtocolError, "mqtt: No Local on a shared subscription"}
	ErrSharedFilter       = &Error{RCTopicFilterInvalid, "mqtt: invalid shared subscription filter"}
)

// ReasonCode returns the MQTT 5.0 reason code for a codec error: the code
// of an *Error, and for the 3.1.1 sentinels 0x95 (ErrPacketTooLarge), 0x84
// (ErrProtocolLevel, ErrProtocolName), 0x90 (ErrTopicName, ErrEmptyTopic),
// 0x8F (ErrTopicFilter), 0x82 (ErrQoS, ErrDupQoS0, ErrPacketID,
// ErrNoFilters: rules, not encoding), 0x81 for the rest.
func ReasonCode(err error) byte {
	if e, ok := err.(*Error); ok {
		return e.Code
	}
	switch err {
	case nil:
		return RCSuccess
	case ErrPacketTooLarge:
		return RCPacketTooLarge
	case ErrProtocolLevel, ErrProtocolName:
		return RCUnsupportedProtocolVersion
	case ErrTopicName, ErrEmptyTopic:
		return RCTopicNameInvalid
	case ErrTopicFilter:
		return RCTopicFilterInvalid
	case ErrQoS, ErrDupQoS0, ErrPacketID, ErrNoFilters:
		return RCProtocolError
	}
	return RCMalformed
}

// Which reason codes each packet may carry (table 2-6), one bit per kind.
const (
	rcConnack = 1 << iota
	rcPuback  // PUBACK and PUBREC
	rcPubrel  // PUBREL and PUBCOMP
	rcSuback
	rcUnsuback
	rcDisconnect
	rcAuth
)

var rcAllowed = func() (t [256]uint8) {
	add := func(kind uint8, codes ...byte) {
		for _, c := range codes {
			t[c] |= kind
		}
	}
	add(rcConnack, 0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C,
		0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F)
	add(rcPuback, 0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99)
	add(rcPubrel, 0x00, 0x92)
	add(rcSuback, 0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2)
	add(rcUnsuback, 0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91)
	add(rcDisconnect, 0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90,
		0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2)
	add(rcAuth, 0x00, 0x18, 0x19)
	return t
}()

// Subscription option bits of a v5 SUBSCRIBE entry (3.8.3.1).
const (
	SubNoLocal           byte = 1 << 2
	SubRetainAsPublished byte = 1 << 3
	subRetainShift            = 4
)

// RetainHandling returns the Retain Handling option (0, 1 or 2) of a v5
// subscription options byte.
func RetainHandling(opts byte) byte { return opts >> subRetainShift & 3 }

// SharePrefix starts a shared subscription's filter (4.8.2).
const SharePrefix = "$share/"

// SplitShared splits $share/<group>/<filter>; ok is false for any other
// filter. It does not validate.
func SplitShared[T Text](f T) (group, filter T, ok bool) {
	if len(f) < len(SharePrefix) || string(f[:len(SharePrefix)]) != SharePrefix {
		return group, filter, false
	}
	rest := f[len(SharePrefix):]
	for i := 0; i < len(rest); i++ {
		if rest[i] == '/' {
			return rest[:i], rest[i+1:], true
		}
	}
	return group, filter, false
}

// validShared checks a $share/ filter: a non-empty share name without
// '/', '+' or '#', then a valid non-empty filter (4.8.2).
func validShared(f []byte) error {
	g, rest, ok := SplitShared(f)
	if !ok || len(g) == 0 || bytes.ContainsAny(g, "+#") || len(rest) == 0 {
		return ErrSharedFilter
	}
	if err := ValidTopicFilter(rest); err != nil {
		return ErrSharedFilter
	}
	return nil
}

// Decode5 is Decode for a connection that speaks MQTT 5.0: every packet
// has its v5 form (reason codes, properties), AUTH is a packet, and a
// CONNECT must be protocol level 5 ("MQTT"). It does not allocate.
//
// Errors: those of Decode, and the *Error sentinels ErrUnknownProperty,
// ErrPropertyNotAllowed, ErrDuplicateProperty, ErrPropertyValue,
// ErrTopicAlias, ErrReasonCode, ErrSubOptions, ErrRetainHandling,
// ErrSharedNoLocal, ErrSharedFilter. ReasonCode(err) is the reason code to
// send in a DISCONNECT (or, for a CONNECT, the CONNACK) before closing.
func Decode5(buf []byte, maxPacket int, p *Packet) (n int, err error) {
	total, hdr, err := fixedHeader(buf, maxPacket, true)
	if err != nil || total == 0 || total > len(buf) {
		return 0, err
	}
	p.reset(buf[0])
	body := buf[hdr:total:total]
	switch p.Type {
	case TypePublish:
		err = decodePublish5(body, p)
	case TypePuback, TypePubrec, TypePubrel, TypePubcomp:
		err = decodeAck5(body, p)
	case TypePingreq, TypePingresp:
		if len(body) != 0 {
			return 0, ErrMalformed
		}
	case TypeDisconnect:
		err = decodeReasonProps(body, p, rcDisconnect, propsDisconnect)
	case TypeAuth:
		err = decodeReasonProps(body, p, rcAuth, propsAuth)
	case TypeConnect:
		err = decodeConnect(body, p, true)
		if err == nil && p.Connect.ProtocolLevel != Level5 {
			err = ErrProtocolLevel
		}
	case TypeConnack:
		err = decodeConnack5(body, p)
	case TypeSubscribe, TypeUnsubscribe:
		err = decodeSubscribe5(body, p)
	case TypeSuback, TypeUnsuback:
		err = decodeSuback5(body, p)
	}
	if err != nil {
		return 0, err
	}
	return total, nil
}

func decodePublish5(body []byte, p *Packet) error {
	i, err := decodePublishHead(body, p)
	if err != nil {
		return err
	}
	topic := p.Topic
	if i, err = decodeProps(body, i, propsPublish, &p.Props); err != nil {
		return err
	}
	// 3.3.2.3.4: an empty topic is allowed with a Topic Alias (the
	// receiver's alias table supplies it).
	if len(topic) > 0 || p.Props.TopicAlias == 0 {
		if err := ValidTopicName(topic); err != nil {
			return err
		}
	}
	p.Payload = body[i:]
	if p.Props.PayloadFormat == 1 && !validUTF8(p.Payload) {
		// 3.3.2.3.2: the receiver MAY check; a server that does not
		// would forward a lie to every subscriber.
		return errPayloadFormat
	}
	return nil
}

// errPayloadFormat: a payload marked UTF-8 that is not.
var errPayloadFormat = &Error{RCPayloadFormatInvalid, "mqtt: payload format indicator 1 with a payload that is not UTF-8"}

// ErrPayloadFormat is returned for a PUBLISH whose Payload Format
// Indicator says UTF-8 and whose payload is not (reason code 0x99).
var ErrPayloadFormat = errPayloadFormat

func decodeAck5(body []byte, p *Packet) error {
	if len(body) < 2 {
		return ErrMalformed
	}
	p.PacketID = uint16(body[0])<<8 | uint16(body[1])
	if p.PacketID == 0 {
		return ErrPacketID
	}
	kind := uint8(rcPuback)
	if p.Type == TypePubrel || p.Type == TypePubcomp {
		kind = rcPubrel
	}
	return decodeReasonProps(body[2:], p, kind, propsAck)
}

// decodeReasonProps reads an optional reason code and an optional property
// block (3.4.2.1, 3.14.2.1, 3.15.2.1: both may be left out when the code is
// 0x00 and there are no properties).
func decodeReasonProps(b []byte, p *Packet, kind uint8, allowed propSet) error {
	if len(b) == 0 {
		return nil
	}
	p.ReasonCode = b[0]
	if rcAllowed[b[0]]&kind == 0 {
		return ErrReasonCode
	}
	if len(b) == 1 {
		return nil
	}
	i, err := decodeProps(b, 1, allowed, &p.Props)
	if err != nil {
		return err
	}
	if i != len(b) {
		return ErrMalformed
	}
	return nil
}

func decodeConnack5(body []byte, p *Packet) error {
	if len(body) < 3 || body[0]&^1 != 0 {
		return ErrMalformed
	}
	p.SessionPresent = body[0] == 1
	p.ReturnCode = body[1]
	p.ReasonCode = body[1]
	if rcAllowed[body[1]]&rcConnack == 0 {
		return ErrReasonCode
	}
	if p.SessionPresent && p.ReturnCode != RCSuccess {
		return ErrMalformed // 3.2.2.1.1
	}
	i, err := decodeProps(body, 2, propsConnack, &p.Props)
	if err != nil {
		return err
	}
	if i != len(body) {
		return ErrMalformed
	}
	return nil
}

func decodeSubscribe5(body []byte, p *Packet) error {
	if len(body) < 2 {
		return ErrMalformed
	}
	p.PacketID = uint16(body[0])<<8 | uint16(body[1])
	if p.PacketID == 0 {
		return ErrPacketID
	}
	sub := p.Type == TypeSubscribe
	allowed := propsUnsub
	if sub {
		allowed = propsSubscribe
	}
	start, err := decodeProps(body, 2, allowed, &p.Props)
	if err != nil {
		return err
	}
	if sub && p.Props.Has&(1<<PropSubscriptionID) != 0 && bytes.Count(p.Props.Raw, []byte{PropSubscriptionID}) > 1 {
		// Repeatable in PUBLISH only; a cheap pre-check, then exact.
		count := 0
		for range SubIDs(p.Props.Raw) {
			count++
		}
		if count > 1 {
			return ErrDuplicateProperty
		}
	}
	if start == len(body) {
		return ErrNoFilters
	}
	for i := start; i < len(body); {
		f, next, ok := readBytes(body, i)
		if !ok {
			return ErrMalformed
		}
		shared := len(f) >= len(SharePrefix) && string(f[:len(SharePrefix)]) == SharePrefix
		if shared {
			if err := validShared(f); err != nil {
				return err
			}
		} else if err := ValidTopicFilter(f); err != nil {
			return err
		}
		i = next
		if sub {
			if i >= len(body) {
				return ErrMalformed
			}
			o := body[i]
			switch {
			case o&0xC0 != 0:
				return ErrSubOptions
			case o&3 == 3:
				return ErrQoS
			case RetainHandling(o) == 3:
				return ErrRetainHandling
			case shared && o&SubNoLocal != 0:
				return ErrSharedNoLocal // 3.8.3.1
			}
			i++
		}
		p.NumFilters++
	}
	p.RawFilters = body[start:]
	return nil
}

func decodeSuback5(body []byte, p *Packet) error {
	if len(body) < 3 {
		return ErrMalformed
	}
	p.PacketID = uint16(body[0])<<8 | uint16(body[1])
	if p.PacketID == 0 {
		return ErrPacketID
	}
	kind, allowed := uint8(rcSuback), propsAck
	if p.Type == TypeUnsuback {
		kind = rcUnsuback
	}
	i, err := decodeProps(body, 2, allowed, &p.Props)
	if err != nil {
		return err
	}
	if i == len(body) {
		return ErrMalformed // at least one reason code
	}
	for _, c := range body[i:] {
		if rcAllowed[c]&kind == 0 {
			return ErrReasonCode
		}
	}
	p.ReturnCodes = body[i:]
	return nil
}

// NextOptions is Next for a v5 SUBSCRIBE: it returns the whole
// subscription options byte (QoS in bits 0-1, SubNoLocal,
// SubRetainAsPublished, RetainHandling).
func (it *FilterIter) NextOptions() (filter []byte, opts byte, ok bool) {
	b := it.rest
	if !it.sub || len(b) < 2 {
		return nil, 0, false
	}
	n := int(b[0])<<8 | int(b[1])
	end := 2 + n
	if end+1 > len(b) {
		it.rest = nil
		return nil, 0, false
	}
	opts = b[end]
	it.rest = b[end+1:]
	return b[2:end:end], opts, true
}

// appendPropsBlock appends a property block: the length, then props.
func appendPropsBlock(dst, props []byte) []byte {
	return append(AppendVBI(dst, len(props)), props...)
}

// propsLen is the wire length of a property block holding props.
func propsLen(props []byte) int { return vbiLen(len(props)) + len(props) }

// AppendPublish5 appends a v5 PUBLISH with the property block props (the
// properties without their length; nil for none). Arguments are trusted
// as in AppendPublish, which documents the panics. topic may be empty
// when props carries a Topic Alias.
func AppendPublish5[T Text](dst []byte, topic T, payload []byte, qos byte, retain, dup bool, id uint16, props []byte) []byte {
	dst, _ = AppendPublish5Header(dst, topic, len(payload), qos, retain, dup, id, props)
	return append(dst, payload...)
}

// AppendPublish5Header appends everything of a v5 PUBLISH except its
// payload of payloadLen bytes, for a sender that writes the payload from
// where it already is. pidOff is the packet id's offset from the start of
// what was appended (0 for QoS 0).
func AppendPublish5Header[T Text](dst []byte, topic T, payloadLen int, qos byte, retain, dup bool, id uint16, props []byte) (out []byte, pidOff int) {
	if qos > 2 {
		panic("mqtt: AppendPublish5 with QoS > 2")
	}
	first := byte(TypePublish)<<4 | qos<<1
	if retain {
		first |= 1
	}
	rl := 2 + len(topic) + propsLen(props) + payloadLen
	if qos > 0 {
		if id == 0 {
			panic("mqtt: AppendPublish5 with QoS > 0 and packet id 0")
		}
		rl += 2
	}
	if dup {
		if qos == 0 {
			panic("mqtt: AppendPublish5 with DUP and QoS 0")
		}
		first |= 0b1000
	}
	start := len(dst)
	dst = appendHeader(dst, first, rl)
	dst = appendField(dst, topic)
	if qos > 0 {
		pidOff = len(dst) - start
		dst = appendUint16(dst, id)
	}
	return appendPropsBlock(dst, props), pidOff
}

// AppendAck5 appends a v5 PUBACK, PUBREC, PUBREL or PUBCOMP (t) with a
// reason code and properties, in the shortest form 3.4.2.1 allows. It
// panics on id 0 or another type.
func AppendAck5(dst []byte, t Type, id uint16, code byte, props []byte) []byte {
	if id == 0 {
		panic("mqtt: acknowledgement with packet id 0")
	}
	switch t {
	case TypePuback, TypePubrec, TypePubrel, TypePubcomp:
	default:
		panic("mqtt: AppendAck5 of a packet that is not an acknowledgement")
	}
	first := byte(t)<<4 | requiredFlags[t]
	switch {
	case code == RCSuccess && len(props) == 0:
		return append(dst, first, 2, byte(id>>8), byte(id))
	case len(props) == 0:
		return append(dst, first, 3, byte(id>>8), byte(id), code)
	}
	dst = appendHeader(dst, first, 3+propsLen(props))
	dst = append(appendUint16(dst, id), code)
	return appendPropsBlock(dst, props)
}

// AppendConnack5 appends a v5 CONNACK. sessionPresent is sent only with
// RCSuccess (3.2.2.1.1).
func AppendConnack5(dst []byte, sessionPresent bool, code byte, props []byte) []byte {
	var f byte
	if sessionPresent && code == RCSuccess {
		f = 1
	}
	dst = appendHeader(dst, 0x20, 2+propsLen(props))
	dst = append(dst, f, code)
	return appendPropsBlock(dst, props)
}

// appendCodes appends SUBACK or UNSUBACK (first byte first).
func appendCodes(dst []byte, first byte, id uint16, codes, props []byte) []byte {
	if id == 0 || len(codes) == 0 {
		panic("mqtt: SUBACK/UNSUBACK with packet id 0 or no reason codes")
	}
	dst = appendHeader(dst, first, 2+propsLen(props)+len(codes))
	dst = appendUint16(dst, id)
	dst = appendPropsBlock(dst, props)
	return append(dst, codes...)
}

// AppendSuback5 appends a v5 SUBACK, one reason code per filter.
func AppendSuback5(dst []byte, id uint16, codes, props []byte) []byte {
	return appendCodes(dst, 0x90, id, codes, props)
}

// AppendUnsuback5 appends a v5 UNSUBACK, one reason code per filter.
func AppendUnsuback5(dst []byte, id uint16, codes, props []byte) []byte {
	return appendCodes(dst, 0xB0, id, codes, props)
}

// appendReasonProps appends a packet of a reason code and properties, both
// left out when the code is 0x00 and there are none (3.14.2.1, 3.15.2.1).
func appendReasonProps(dst []byte, first, code byte, props []byte) []byte {
	switch {
	case code == RCSuccess && len(props) == 0:
		return append(dst, first, 0)
	case len(props) == 0:
		return append(dst, first, 1, code)
	}
	dst = appendHeader(dst, first, 1+propsLen(props))
	return appendPropsBlock(append(dst, code), props)
}

// AppendDisconnect5 appends a v5 DISCONNECT with a reason code.
func AppendDisconnect5(dst []byte, code byte, props []byte) []byte {
	return appendReasonProps(dst, 0xE0, code, props)
}

// AppendAuth appends an AUTH packet (3.15).
func AppendAuth(dst []byte, code byte, props []byte) []byte {
	return appendReasonProps(dst, 0xF0, code, props)
}

// Subscription5 is one v5 SUBSCRIBE entry for AppendSubscribe5.
type Subscription5 struct {
	Filter            string
	QoS               byte
	NoLocal           bool
	RetainAsPublished bool
	RetainHandling    byte // 0, 1 or 2
}

func (s Subscription5) options() byte {
	o := s.QoS & 3
	if s.NoLocal {
		o |= SubNoLocal
	}
	if s.RetainAsPublished {
		o |= SubRetainAsPublished
	}
	return o | (s.RetainHandling&3)<<subRetainShift
}

// AppendSubscribe5 appends a v5 SUBSCRIBE (client side) with properties
// (e.g. a Subscription Identifier). Filters are not validated.
func AppendSubscribe5(dst []byte, id uint16, props []byte, subs ...Subscription5) []byte {
	rl := 2 + propsLen(props)
	for _, s := range subs {
		rl += 3 + len(s.Filter)
	}
	dst = appendHeader(dst, 0x82, rl)
	dst = appendPropsBlock(appendUint16(dst, id), props)
	for _, s := range subs {
		dst = append(appendField(dst, s.Filter), s.options())
	}
	return dst
}

// AppendUnsubscribe5 appends a v5 UNSUBSCRIBE (client side).
func AppendUnsubscribe5(dst []byte, id uint16, props []byte, filters ...string) []byte {
	rl := 2 + propsLen(props)
	for _, f := range filters {
		rl += 2 + len(f)
	}
	dst = appendHeader(dst, 0xA2, rl)
	dst = appendPropsBlock(appendUint16(dst, id), props)
	for _, f := range filters {
		dst = appendField(dst, f)
	}
	return dst
}

// AppendConnect5 appends a level-5 CONNECT (client side) with the CONNECT
// properties props and the will's properties c.WillProps.Raw. As in 3.1.1
// the flags come from the *Flag fields; unlike 3.1.1 a password may be sent
// without a username (3.1.2.9). Fields are not validated.
func AppendConnect5(dst []byte, c *Connect, props []byte) []byte {
	return appendConnect(dst, c, []byte("MQTT"), Level5, props, true)
}

// AppendPacket5 is AppendPacket for MQTT 5.0: it appends p in its v5 form
// (properties from p.Props.Raw, reason codes from p.ReasonCode and
// p.ReturnCodes) and checks the result with Decode5.
func AppendPacket5(dst []byte, p *Packet) (out []byte, err error) {
	start := len(dst)
	defer func() {
		if r := recover(); r != nil {
			out, err = dst[:start], ErrMalformed
		}
	}()
	props := p.Props.Raw
	switch p.Type {
	case TypeConnect:
		dst = AppendConnect5(dst, &p.Connect, props)
	case TypeConnack:
		dst = AppendConnack5(dst, p.SessionPresent, p.ReturnCode, props)
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
		dst = AppendPublish5(dst, p.Topic, p.Payload, p.QoS, p.Retain, p.Dup, p.PacketID, props)
	case TypePuback, TypePubrec, TypePubrel, TypePubcomp:
		if p.PacketID == 0 {
			return dst, ErrPacketID
		}
		dst = AppendAck5(dst, p.Type, p.PacketID, p.ReasonCode, props)
	case TypeSubscribe, TypeUnsubscribe:
		dst = appendHeader(dst, byte(p.Type)<<4|2, 2+propsLen(props)+len(p.RawFilters))
		dst = appendPropsBlock(appendUint16(dst, p.PacketID), props)
		dst = append(dst, p.RawFilters...)
	case TypeSuback:
		dst = AppendSuback5(dst, p.PacketID, p.ReturnCodes, props)
	case TypeUnsuback:
		dst = AppendUnsuback5(dst, p.PacketID, p.ReturnCodes, props)
	case TypePingreq, TypePingresp:
		dst = append(dst, byte(p.Type)<<4, 0)
	case TypeDisconnect:
		dst = AppendDisconnect5(dst, p.ReasonCode, props)
	case TypeAuth:
		dst = AppendAuth(dst, p.ReasonCode, props)
	default:
		return dst, ErrPacketType
	}
	var check Packet
	if _, err := Decode5(dst[start:], 0, &check); err != nil {
		return dst[:start], err
	}
	return dst, nil
}
