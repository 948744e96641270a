package edge

import (
	"bytes"
	"math"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/netpoll"
)

// MQTT 5.0 beside 3.1.1. A connection speaks the version of its CONNECT
// (session flag sV5); everything version-specific is here so that the
// 3.1.1 path (handler.go, connect.go, pubsub.go) keeps its shape:
//
//   - decoding: a v5 connection's packets go through mqtt.Decode5; a codec
//     error becomes a DISCONNECT with its reason code, then the close;
//   - CONNECT/CONNACK: reason codes instead of 3.1.1 return codes, the
//     CONNACK properties (limits, Assigned Client Identifier), Clean Start
//     plus Session Expiry Interval mapped onto the persistent session;
//   - acknowledgements with reason codes where 3.1.1 closes or stores a
//     notice (PROTOCOL.md: 0x87 not authorized, 0x97 quota exceeded);
//   - a DISCONNECT with a reason before every close the server decides;
//   - inbound Topic Aliases (up to aliasMax5), in a side table made when
//     a connection first uses one;
//   - outbound PUBLISH in the v5 form, within the client's Maximum Packet
//     Size and Receive Maximum.
//
// The per-connection v5 state is a small pointer-free conn5 in a per-loop
// map keyed by slot, made at CONNECT: a 3.1.1 connection pays nothing.

// sV5: the connection speaks MQTT 5.0 (its conn5 is in loopState.v5).
const sV5 uint16 = 1 << 15

// conn5 is a v5 connection's negotiated state.
type conn5 struct {
	recvMax uint16 // the client's Receive Maximum (65,535 if it sent none)
	// heldAcks counts the client's QoS 1 PUBLISHes whose PUBACK waits for
	// the store (ackAfter): unacknowledged for the client, so they count
	// against the server's Receive Maximum (3.3.4). Not carried by a
	// handoff: the held acknowledgements go out with the connection.
	heldAcks  uint16
	maxPacket uint32 // the client's Maximum Packet Size; 0: the protocol limit
	expiry    uint32 // Session Expiry Interval in force (seconds; 0: ends at close)
	aliasMax  uint8  // outbound topic aliases: the client's Topic Alias Maximum, at most aliasOutMax5
	sendWill  bool   // DISCONNECT 0x04: publish the will all the same
}

// v5 connection limits the server advertises in CONNACK.
const (
	// receiveMax5 is the Receive Maximum the server advertises: a
	// PUBLISH past it (QoS 2 messages awaiting PUBREL, or QoS 1 ones whose
	// PUBACK waits for the store, counted alone) is a DISCONNECT 0x93.
	receiveMax5 = 1024
	// aliasMax5 is the Topic Alias Maximum the server advertises: a
	// client's aliases 1..aliasMax5 name topics for its later PUBLISHes.
	aliasMax5 = 16
	// aliasOutMax5 is the most topic aliases the server uses toward one
	// client (fewer if the client's Topic Alias Maximum is lower).
	aliasOutMax5 = 16
)

// aliasesOut5 is a connection's outbound topic alias table (3.3.2.3.4):
// topics[a-1] is the topic alias a names for the client. It is in
// loopState.aliasOut only once the server used an alias toward it. A
// handoff does not carry it: the new process starts empty and sets each
// alias again (topic and alias) before it sends one alone, which the
// client takes as a re-point.
type aliasesOut5 struct {
	topics [aliasOutMax5][]byte
	next   uint8 // the alias re-pointed when all are in use, minus 1 (round robin)
}

// outAlias picks the Topic Alias of a PUBLISH on topic to c: 0 for none
// (the client takes none; an inbox topic u/..., unique per message; a
// topic too short to gain), with known if the client has it for topic
// already (the topic is then left out). A new alias is recorded by
// setOutAlias once the packet goes out.
func (ls *loopState) outAlias(c *netpoll.Conn, c5 *conn5, topic []byte) (alias uint16, known bool) {
	if c5.aliasMax == 0 || len(topic) < 4 || topic[0] == 'u' && topic[1] == '/' {
		return 0, false
	}
	t := ls.aliasOut[c.Slot()]
	if t == nil {
		return 1, false
	}
	free := 0
	for i, a := range t.topics[:c5.aliasMax] {
		if bytes.Equal(a, topic) {
			return uint16(i + 1), true
		}
		if len(a) == 0 && free == 0 {
			free = i + 1
		}
	}
	if free != 0 {
		return uint16(free), false
	}
	return uint16(t.next%c5.aliasMax) + 1, false
}

// setOutAlias records that alias now names topic for c (just sent with
// both).
func (ls *loopState) setOutAlias(c *netpoll.Conn, c5 *conn5, alias uint16, topic []byte) {
	t := ls.aliasOut[c.Slot()]
	if t == nil {
		if ls.aliasOut == nil {
			ls.aliasOut = make(map[uint32]*aliasesOut5)
		}
		t = new(aliasesOut5)
		ls.aliasOut[c.Slot()] = t
	}
	t.topics[alias-1] = append(t.topics[alias-1][:0], topic...)
	t.next = uint8(alias) % c5.aliasMax
}

// aliases5 is a connection's inbound topic alias table (3.3.2.3.4),
// indexed by alias - 1; in loopState.alias5 only once the client uses one.
type aliases5 [aliasMax5][]byte

// resolveAlias applies a PUBLISH's Topic Alias: a topic sets the alias, an
// empty topic takes it. It returns 0, or the reason code to disconnect
// with: 0x94 for an alias past the maximum, 0x82 for an unset one.
func (ls *loopState) resolveAlias(c *netpoll.Conn, p *mqtt.Packet) byte {
	a := int(p.Props.TopicAlias)
	if a > aliasMax5 {
		return mqtt.RCTopicAliasInvalid
	}
	t := ls.alias5[c.Slot()]
	if len(p.Topic) > 0 {
		if t == nil {
			if ls.alias5 == nil {
				ls.alias5 = make(map[uint32]*aliases5)
			}
			t = new(aliases5)
			ls.alias5[c.Slot()] = t
		}
		t[a-1] = append(t[a-1][:0], p.Topic...)
		return 0
	}
	if t == nil || len(t[a-1]) == 0 {
		return mqtt.RCProtocolError // 3.3.4: an alias the client never set
	}
	p.Topic = t[a-1]
	return 0
}

func (ls *loopState) conn5(c *netpoll.Conn) *conn5 { return ls.v5[c.Slot()] }

// conn5If is c's conn5 if c speaks MQTT 5.0, else nil (no map look-up).
func (ls *loopState) conn5If(c *netpoll.Conn) *conn5 {
	if ls.sess.get(c.Slot()).flags&sV5 == 0 {
		return nil
	}
	return ls.v5[c.Slot()]
}

// decodePacket decodes a packet of a connection that has not sent CONNECT
// yet, or of a v5 one: 3.1.1 first, a level-5 CONNECT with Decode5.
func decodePacket(ss *session, data []byte, max int, p *mqtt.Packet) (int, error) {
	if ss.flags&sV5 != 0 {
		return mqtt.Decode5(data, max, p)
	}
	n, err := mqtt.Decode(data, max, p)
	if err == mqtt.ErrProtocolLevel && ss.client == 0 {
		if n5, err5 := mqtt.Decode5(data, max, p); err5 == nil || isV5Connect(data) {
			return n5, err5
		}
	}
	return n, err
}

// isV5Connect reports whether data starts a CONNECT whose protocol level
// is 5, so that its decode error is answered in the v5 form.
func isV5Connect(data []byte) bool {
	if len(data) < 2 || data[0] != 0x10 {
		return false
	}
	i := 1
	for i < len(data) && i < 5 && data[i]&0x80 != 0 {
		i++
	}
	i++
	return len(data) > i+6 && string(data[i:i+6]) == "\x00\x04MQTT" && data[i+6] == mqtt.Level5
}

// v5Code maps a close reason to the DISCONNECT reason code (0 for the
// closes that send none: EOF, the client's own DISCONNECT, socket errors).
var v5Code = [numReasons]byte{
	ReasonShutdown:         mqtt.RCServerShuttingDown,
	ReasonMalformed:        mqtt.RCMalformed,
	ReasonOversize:         mqtt.RCPacketTooLarge,
	ReasonBadUTF8:          mqtt.RCMalformed,
	ReasonProtocol:         mqtt.RCProtocolError,
	ReasonKeepalive:        mqtt.RCKeepAliveTimeout,
	ReasonBacklog:          mqtt.RCQuotaExceeded,
	ReasonFlood:            mqtt.RCMessageRateTooHigh,
	ReasonNotAuthorized:    mqtt.RCNotAuthorized,
	ReasonTakeover:         mqtt.RCSessionTakenOver,
	ReasonStoreFull:        mqtt.RCQuotaExceeded,
	ReasonNewInboxRate:     mqtt.RCMessageRateTooHigh,
	ReasonPartialTimeout:   mqtt.RCMalformed,
	ReasonPartialBudget:    mqtt.RCServerBusy,
	ReasonStoreUnavailable: mqtt.RCServerBusy,
}

// disconnect5 writes a DISCONNECT with r's reason code to a v5 connection
// (nothing for a 3.1.1 one or a reason without a code) before it closes.
func (s *Server) disconnect5(c *netpoll.Conn, ls *loopState, ss *session, r Reason, code byte) {
	if ss.flags&sV5 == 0 || ss.client == 0 {
		return
	}
	if code == 0 && r < numReasons {
		code = v5Code[r]
	}
	if code != 0 && !ls.discSent {
		c.Write(mqtt.AppendDisconnect5(ls.out[:0], code, nil))
		ls.discSent = true
	}
}

// refuseCode5 maps a 3.1.1 CONNACK return code to its v5 reason code.
func refuseCode5(code byte) byte {
	switch code {
	case mqtt.ConnRefusedProtocolVersion:
		return mqtt.RCUnsupportedProtocolVersion
	case mqtt.ConnRefusedIdentifierRejected:
		return mqtt.RCClientIDNotValid
	case mqtt.ConnRefusedServerUnavailable:
		return mqtt.RCServerUnavailable
	case mqtt.ConnRefusedBadUsernamePassword:
		return mqtt.RCBadUsernamePassword
	case mqtt.ConnRefusedNotAuthorized:
		return mqtt.RCNotAuthorized
	}
	return mqtt.RCUnspecified
}

// connect5 checks what a v5 CONNECT adds before the common path: enhanced
// authentication is refused (0x8C, 4.12: the server does not support the
// method), and the connection's conn5 is made. It returns 0 to go on, or
// the CONNACK reason code to refuse with.
func (s *Server) connect5(c *netpoll.Conn, ls *loopState, ss *session, p *mqtt.Packet) byte {
	if p.Props.HasProp(mqtt.PropAuthMethod) {
		return mqtt.RCBadAuthMethod
	}
	ss.flags |= sV5
	if ls.v5 == nil {
		ls.v5 = make(map[uint32]*conn5)
	}
	c5 := &conn5{recvMax: 65535, maxPacket: p.Props.MaximumPacketSize, expiry: p.Props.SessionExpiry,
		aliasMax: uint8(min(p.Props.TopicAliasMaximum, aliasOutMax5))}
	if p.Props.HasProp(mqtt.PropReceiveMaximum) {
		c5.recvMax = p.Props.ReceiveMaximum
	}
	ls.v5[c.Slot()] = c5
	return 0
}

// sessionFlags5 maps v5 Clean Start and Session Expiry Interval onto the
// 3.1.1 session model: fresh drops what the record holds, persistent
// keeps the subscriptions and generic messages past the connection. A
// finite interval is counted from the disconnect (client.expiry): then
// the sweep ends the session (sweepSession), or the next CONNECT finds it
// ended (sessionEnded). The profile's inbox outlives any session.
func sessionFlags5(c5 *conn5, cleanStart bool) (fresh, persistent bool) {
	return cleanStart, c5.expiry > 0
}

// expiryInterval5 is a Session Expiry Interval as client.expiry keeps it
// while connected: 0xFFFFFFFF (3.1.2.11.2: never ends) is 0.
func expiryInterval5(v uint32) uint32 {
	if v == math.MaxUint32 {
		return 0
	}
	return v
}

// expiryDeadline5 is the unix second a session that went offline at now
// with the interval ends (never 0; past the uint32 range it never ends).
func expiryDeadline5(now int64, interval uint32) uint32 {
	return uint32(min(max(now+int64(interval), 1), math.MaxUint32))
}

// sessionEnded reports whether cl (locked) is an offline persistent
// session whose Session Expiry Interval has passed at now.
func (s *Server) sessionEnded(cl *client, now int64) bool {
	return cl.handle == 0 && cl.persistent && cl.expiry != 0 && now >= int64(cl.expiry)
}

// sweepSession ends cl's offline session if its expiry has passed
// (3.1.2.11.2: the server discards it), as a Clean Start would: its
// subscriptions, queued generic messages and QoS 2 state go, the
// profile's inbox stays. It reports whether it ended; cl is locked.
func (s *Server) sweepSession(cl *client, now int64) bool {
	if !s.sessionEnded(cl, now) {
		return false
	}
	s.dropSession(cl)
	cl.persistent = false
	cl.expiry = 0
	s.held.Add(-sessionOverhead)
	s.logSession(cl)
	s.stats.sessions5.Add(1)
	return true
}

// keepAlive5 is the keepalive a v5 client with keepalive ka is held to:
// Config.MaxKeepAlive if ka is longer or 0 (none), else ka.
func (s *Server) keepAlive5(ka uint16) uint16 {
	if m := uint16(s.cfg.MaxKeepAlive / time.Second); m != 0 && (ka == 0 || ka > m) {
		return m
	}
	return ka
}

// connack5 appends the v5 CONNACK for an accepted connection; with
// serverKA it carries the Server Keep Alive ka (3.2.2.3.14).
func (s *Server) connack5(ls *loopState, present bool, assigned []byte, c5 *conn5, serverKA bool, ka uint16) []byte {
	props := ls.props[:0]
	if serverKA {
		props = mqtt.AppendU16Prop(props, mqtt.PropServerKeepAlive, ka)
	}
	props = mqtt.AppendU16Prop(props, mqtt.PropReceiveMaximum, receiveMax5)
	props = mqtt.AppendU32Prop(props, mqtt.PropMaximumPacketSize, uint32(s.cfg.MaxPacketSize))
	props = mqtt.AppendU16Prop(props, mqtt.PropTopicAliasMaximum, aliasMax5)
	if assigned != nil {
		props = mqtt.AppendStringProp(props, mqtt.PropAssignedClientID, assigned)
	}
	if c5.expiry > 0 {
		props = mqtt.AppendU32Prop(props, mqtt.PropSessionExpiry, c5.expiry)
	}
	ls.props = props
	return mqtt.AppendConnack5(ls.out[:0], present, mqtt.RCSuccess, props)
}

// handle5 handles what only v5 has, or has in another form, before the
// common dispatch: AUTH (no enhanced authentication was begun: a protocol
// error), a client's DISCONNECT with a reason and a Session Expiry, a
// PUBLISH with a Topic Alias or a Subscription Identifier, a SUBSCRIBE
// with a Subscription Identifier. done means handled; r is then the
// outcome.
func (s *Server) handle5(c *netpoll.Conn, ls *loopState, ss *session, cl *client, p *mqtt.Packet) (r Reason, done bool) {
	switch p.Type {
	case mqtt.TypeAuth:
		return ReasonProtocol, true
	case mqtt.TypeDisconnect:
		c5 := ls.conn5(c)
		if p.Props.HasProp(mqtt.PropSessionExpiry) {
			if c5.expiry == 0 && p.Props.SessionExpiry != 0 {
				return ReasonProtocol, true // 3.14.2.2.2
			}
			c5.expiry = p.Props.SessionExpiry
			cl.mu.Lock()
			if ownedLocked(cl, c.Handle(), ss.epoch) && cl.persistent {
				if c5.expiry == 0 {
					cl.persistent = false
					s.held.Add(-sessionOverhead)
				}
				cl.expiry = expiryInterval5(c5.expiry) // counted from the close
				s.logSession(cl)
			}
			cl.mu.Unlock()
		}
		if p.ReasonCode == mqtt.RCDisconnectWithWill {
			c5.sendWill = true
			return ReasonDisconnect, true // the will stays: OnClose sends it
		}
		return reasonOK, false
	case mqtt.TypePublish:
		if p.Props.TopicAlias != 0 {
			if code := ls.resolveAlias(c, p); code != 0 {
				s.disconnect5(c, ls, ss, 0, code)
				return ReasonProtocol, true
			}
		}
		if p.Props.HasProp(mqtt.PropSubscriptionID) {
			return ReasonProtocol, true // 3.3.4: client to server, never
		}
		// Receive Maximum (3.3.4): the QoS 1 and 2 PUBLISHes the server
		// has not acknowledged yet, this one included, within receiveMax5.
		// Without held PUBACKs a QoS 1 one adds nothing that outlives it
		// (its PUBACK goes out before the next packet is read), so the
		// session's lock is taken only for QoS 2 or while PUBACKs wait.
		if p.QoS > 0 {
			if held := int(ls.conn5(c).heldAcks); p.QoS == 2 || held > 0 {
				cl.mu.Lock()
				n := held
				if x := cl.xp(); x != nil {
					n += len(x.qos2())
				}
				cl.mu.Unlock()
				if n >= receiveMax5 {
					s.disconnect5(c, ls, ss, 0, mqtt.RCReceiveMaximumExceeded)
					return ReasonProtocol, true
				}
			}
		}
	}
	return reasonOK, false
}

// refusePublish5 answers a v5 PUBLISH the server will not take with the
// reason code in its acknowledgement instead of a close (QoS 1 and 2);
// a QoS 0 one gets a DISCONNECT with the code. It reports whether the
// connection stays.
func (s *Server) refusePublish5(c *netpoll.Conn, ls *loopState, ss *session, p *mqtt.Packet, r Reason) bool {
	code := v5Code[r]
	if code == 0 || p.QoS == 0 {
		return false
	}
	typ := mqtt.TypePuback
	if p.QoS == 2 {
		typ = mqtt.TypePubrec
	}
	c.Write(mqtt.AppendAck5(ls.out[:0], typ, p.PacketID, code, nil))
	return true
}

// subCode5 turns a 3.1.1 SUBACK return code into the v5 reason code: a
// refused filter is not authorized (the profile's ACLs, $SYS off
// loopback), over a cap quota exceeded.
func subCode5(code byte, over bool) byte {
	switch {
	case code != mqtt.SubackFailure:
		return code
	case over:
		return mqtt.RCQuotaExceeded
	}
	return mqtt.RCNotAuthorized
}

// writePublish5 writes the stored 3.1.1 PUBLISH b to a v5 connection in
// the v5 form (a property block after the packet id, empty but for a
// Topic Alias), unless it is over the client's Maximum Packet Size: then
// it is not sent (3.1.2.25) and dropped reports true.
func (s *Server) writePublish5(c *netpoll.Conn, c5 *conn5, b []byte, pidOff uint32) (dropped bool, err error) {
	i := 1
	for b[i]&0x80 != 0 {
		i++
	}
	i++
	n := int(b[i])<<8 | int(b[i+1])
	head := i + 2 + n // after the topic
	var pid []byte
	if pidOff != 0 {
		pid = b[head : head+2]
		head += 2
	}
	return s.send5(c, c5, b[0], b[i+2:i+2+n], pid, nil, b[head:])
}

// send5 writes a v5 PUBLISH from its parts: first byte, topic, packet id
// (2 bytes, or none for QoS 0), properties (a stored Message Expiry is the
// deadline: sent as the seconds left) and payload; with a Topic Alias
// where outAlias finds one. Over the client's Maximum Packet Size it is
// not sent (dropped). The header goes out of ls.pub5, the payload as it is.
func (s *Server) send5(c *netpoll.Conn, c5 *conn5, first byte, topic, pid, props, payload []byte) (dropped bool, err error) {
	ls := s.loops[c.LoopID()]
	alias, known := ls.outAlias(c, c5, topic)
	out := append(ls.pub5[:0], first)
	t := topic
	if known {
		t = nil
	}
	pl := len(props)
	if alias != 0 {
		pl += 3
	}
	var vbi [4]byte
	out = mqtt.AppendVBI(out, 2+len(t)+len(pid)+len(mqtt.AppendVBI(vbi[:0], pl))+pl+len(payload))
	out = append(out, byte(len(t)>>8), byte(len(t)))
	out = append(append(out, t...), pid...)
	out = mqtt.AppendVBI(out, pl)
	if alias != 0 {
		out = mqtt.AppendU16Prop(out, mqtt.PropTopicAlias, alias)
	}
	propsAt := len(out)
	out = append(out, props...)
	ls.pub5 = out[:0]
	if c5.maxPacket != 0 && uint32(len(out)+len(payload)) > c5.maxPacket {
		return true, nil
	}
	it := mqtt.Props(out[propsAt:])
	now := uint32(s.cfg.Now().Unix())
	for id, v, ok := it.Next(); ok; id, v, ok = it.Next() {
		if id == mqtt.PropMessageExpiry {
			at := uint32(v[0])<<24 | uint32(v[1])<<16 | uint32(v[2])<<8 | uint32(v[3])
			left := at - now // expired() ran just before: at > now
			v[0], v[1], v[2], v[3] = byte(left>>24), byte(left>>16), byte(left>>8), byte(left)
		}
	}
	if known {
		s.stats.aliasOut.Add(1)
	} else if alias != 0 {
		ls.setOutAlias(c, c5, alias, topic)
	}
	if err := c.Write(out); err != nil {
		return false, err
	}
	return false, c.Write(payload)
}

// connackCode5 is the CONNACK reason code for a v5 CONNECT the codec
// refused: its reason code where CONNACK may carry it, else 0x81.
func connackCode5(err error) byte {
	switch c := mqtt.ReasonCode(err); c {
	case mqtt.RCProtocolError, mqtt.RCUnsupportedProtocolVersion, mqtt.RCTopicNameInvalid,
		mqtt.RCPacketTooLarge, mqtt.RCPayloadFormatInvalid:
		return c
	}
	return mqtt.RCMalformed
}

// forwardProps returns the properties of a v5 PUBLISH that travel with it
// to subscribers (3.3.2.3: payload format, content type, response topic,
// correlation data, user properties, the message expiry), in ls.props;
// nil if there are none. The Message Expiry Interval is stored as the
// absolute unix deadline and turned back into what remains when sent
// (3.3.2.3.3). The Topic Alias is the connection's, never forwarded.
//
// raw is a PUBLISH's property block (or a will's: its Will Delay stays).
func (s *Server) forwardProps(ls *loopState, raw []byte) []byte {
	if len(raw) == 0 {
		return nil
	}
	out := ls.props[:0]
	it := mqtt.Props(raw)
	for id, v, ok := it.Next(); ok; id, v, ok = it.Next() {
		switch id {
		case mqtt.PropTopicAlias, mqtt.PropSubscriptionID, mqtt.PropWillDelay:
		case mqtt.PropMessageExpiry:
			rel := uint32(v[0])<<24 | uint32(v[1])<<16 | uint32(v[2])<<8 | uint32(v[3])
			out = mqtt.AppendU32Prop(out, id, uint32(s.cfg.Now().Unix())+rel)
		case mqtt.PropContentType, mqtt.PropResponseTopic, mqtt.PropCorrelationData:
			out = mqtt.AppendStringProp(out, id, v)
		default: // payload format (a byte), user properties (a pair, as on the wire)
			out = append(append(out, id), v...)
		}
	}
	ls.props = out
	if len(out) == 0 {
		return nil
	}
	return out
}

// storedProps encodes a PUBLISH with forwarded properties for an inbox.
func storedProps(topic, payload []byte, qos byte, retain bool, flags uint8, props []byte) entry {
	buf := getBuf(len(topic) + len(payload) + len(props) + 13)
	var pidOff int
	*buf, pidOff = mqtt.AppendPublish5Header(*buf, topic, len(payload), qos, retain, false, 1, props)
	*buf = append(*buf, payload...)
	return entry{buf: buf, flags: flags | fProps, pidOff: uint32(pidOff)}
}

// storedLayout splits a stored v5 PUBLISH b: the header length, the start
// of its property block (after the topic and packet id), the block's
// length byte count and its properties.
func storedLayout(b []byte, pidOff uint32) (hdr, propsAt, lenLen int, props []byte) {
	hdr = 1
	for b[hdr]&0x80 != 0 {
		hdr++
	}
	hdr++
	propsAt = hdr + 2 + (int(b[hdr])<<8 | int(b[hdr+1]))
	if pidOff != 0 {
		propsAt += 2
	}
	n, k := 0, 0
	for ; b[propsAt+k]&0x80 != 0; k++ {
		n |= int(b[propsAt+k]&0x7F) << (7 * k)
	}
	n |= int(b[propsAt+k]) << (7 * k)
	lenLen = k + 1
	return hdr, propsAt, lenLen, b[propsAt+lenLen : propsAt+lenLen+n]
}

// expired reports whether a stored message's Message Expiry has passed:
// it is then dropped instead of sent (3.3.2.3.3).
func (s *Server) expired(e *entry) bool {
	_, _, _, props := storedLayout(*e.buf, e.pidOff)
	if propsExpired(props, s.cfg.Now().Unix()) {
		s.stats.expired5.Add(1)
		return true
	}
	return false
}

// propsExpired reports whether stored properties (forwardProps's form)
// have a Message Expiry deadline at or before now.
func propsExpired(props []byte, now int64) bool {
	it := mqtt.Props(props)
	for id, v, ok := it.Next(); ok; id, v, ok = it.Next() {
		if id == mqtt.PropMessageExpiry {
			at := uint32(v[0])<<24 | uint32(v[1])<<16 | uint32(v[2])<<8 | uint32(v[3])
			return int64(at) <= now
		}
	}
	return false
}

// writeStored writes a stored PUBLISH with properties: to a v5 client
// (c5 != nil) with them, the expiry deadline turned into the seconds left;
// to a 3.1.1 client without the property block. Over the v5 client's
// Maximum Packet Size it is not sent (dropped).
func (s *Server) writeStored(c *netpoll.Conn, c5 *conn5, b []byte, pidOff uint32) (dropped bool, err error) {
	hdr, propsAt, lenLen, props := storedLayout(b, pidOff)
	ls := s.loops[c.LoopID()]
	payloadAt := propsAt + lenLen + len(props)
	if c5 == nil {
		out := append(ls.pub5[:0], b[0])
		out = mqtt.AppendVBI(out, len(b)-hdr-lenLen-len(props))
		out = append(out, b[hdr:propsAt]...)
		ls.pub5 = out[:0]
		if err := c.Write(out); err != nil {
			return false, err
		}
		return false, c.Write(b[payloadAt:])
	}
	n := int(b[hdr])<<8 | int(b[hdr+1])
	var pid []byte
	if pidOff != 0 {
		pid = b[propsAt-2 : propsAt]
	}
	return s.send5(c, c5, b[0], b[hdr+2:hdr+2+n], pid, props, b[payloadAt:])
}

// sendWill publishes cl's will w after its connection (epoch) closed: at
// once, or with a v5 Will Delay Interval later, and then only if no new
// connection took the session meanwhile (3.1.3.2.2). The delayed one runs
// on a runtime timer with its own scratch loopState (a rare event: one
// timer per will waiting). gen is cl's generation at the close: a record
// released and reused meanwhile is another client. A reconnect that ended
// again before the delay and left no record is not seen: the will is sent.
//
// name is cl's id, read by the caller under cl.mu: once the caller has
// unlocked, another goroutine may release cl (inboxes.go, profile.go), and
// its id's bytes in recBytes may then hold another client's id.
func (s *Server) sendWill(ls *loopState, cl *client, name string, gen, epoch uint32, w *will) {
	if w.delay == 0 {
		ls.fwd = s.forwardProps(ls, w.props)
		s.publishGeneric(ls, []byte(w.topic), w.payload, w.qos, w.retain)
		ls.fwd = nil
		return
	}
	id := []byte(name)
	time.AfterFunc(time.Duration(w.delay)*time.Second, func() {
		s.mu.Lock()
		closed := s.closed
		s.mu.Unlock()
		if closed {
			return // the server stopped meanwhile: so did the session
		}
		// The record the close left, or none (released: nothing kept
		// it); a record that is connected, or another epoch, means a
		// new connection took the session: no will.
		if c := s.reg.lock(id, false); c != nil {
			reconnected := c != cl || c.gen != gen || c.epoch != epoch || c.handle != 0
			c.mu.Unlock()
			if reconnected {
				return
			}
		}
		ls := &loopState{}
		ls.fwd = s.forwardProps(ls, w.props)
		s.publishGeneric(ls, []byte(w.topic), w.payload, w.qos, w.retain)
	})
}
