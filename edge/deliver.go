package edge

import (
	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/netpoll"
)

// An inbox to its connection: appending (pushLocked), waking the owner's
// loop (kick), writing up to the in-flight window (pump), acknowledgements
// (ack).

// pushLocked appends a PUBLISH to cl's inbox (cl locked) and returns the
// handle to kick, or 0.
func (s *Server) pushLocked(cl *client, topic, payload []byte, qos byte, retain bool, flags uint8) netpoll.Handle {
	return s.pushProps(cl, topic, payload, qos, retain, flags, nil)
}

// pushProps is pushLocked for a message with v5 properties (nil: none).
func (s *Server) pushProps(cl *client, topic, payload []byte, qos byte, retain bool, flags uint8, props []byte) netpoll.Handle {
	var e entry
	if props != nil {
		e = storedProps(topic, payload, qos, retain, flags, props)
	} else {
		buf := getBuf(len(topic) + len(payload) + 9)
		*buf = mqtt.AppendPublish(*buf, topic, payload, qos, retain, false, 1)
		e = entry{buf: buf, flags: flags}
		if qos > 0 {
			e.pidOff = uint32(len(*buf) - len(payload) - 2)
		}
	}
	q := cl.x().queue()
	if q.acct == nil {
		q.acct, q.cnt = &s.held, &s.entries
	}
	q.push(e)
	s.logPut(cl, q.at(q.len()-1))
	if q.len() == inboxWatchFloor {
		s.watchInbox(cl.idx)
	}
	s.stats.stored.Add(1)
	if cl.handle != 0 && !cl.kick {
		cl.kick = true
		return cl.handle
	}
	return 0
}

func (s *Server) kick(h netpoll.Handle) {
	if h != 0 {
		s.eng.Post(h, netpoll.Message{Kind: msgKick})
	}
}

// pump sends cl's inbox to c up to the in-flight window; cl is locked and c
// owns its session.
func (s *Server) pump(c *netpoll.Conn, cl *client) {
	q := cl.box()
	if q == nil {
		return
	}
	ls := s.loops[c.LoopID()]
	window := int(s.inflight.Load())
	var c5 *conn5
	if ls.sess.get(c.Slot()).flags&sV5 != 0 {
		c5 = ls.v5[c.Slot()]
		window = min(window, int(c5.recvMax)) // the client's Receive Maximum
	}
	for q.nsent < q.len() {
		e := q.at(q.nsent)
		if e.flags&fProps != 0 {
			if s.expired(e) {
				s.logEntry(recDel, cl, e)
				q.remove(q.nsent)
				continue
			}
		}
		if e.pidOff == 0 { // QoS 0: fire and forget
			if e.flags&fProps != 0 {
				if dropped, err := s.writeStored(c, c5, *e.buf, 0); err != nil {
					return
				} else if dropped {
					s.stats.tooBig.Add(1)
				}
			} else if c5 != nil {
				if dropped, err := s.writePublish5(c, c5, *e.buf, 0); err != nil {
					return
				} else if dropped {
					s.stats.tooBig.Add(1)
				}
			} else if c.Write(*e.buf) != nil {
				return
			}
			s.loops[c.LoopID()].sent.Add(1)
			q.remove(q.nsent)
			continue
		}
		if q.nsent >= window {
			return
		}
		if e.pid == 0 {
			// MQTT 4.4: a persistent session's redeliveries keep their
			// packet ids, so the id given is logged (persist.go).
			e.pid = cl.allocPID()
			if cl.persistent {
				s.logEntry(recSent, cl, e)
			}
		}
		if e.flags&fReleased != 0 {
			var b [4]byte
			if c.Write(mqtt.AppendPubrel(b[:0], e.pid)) != nil {
				return
			}
		} else {
			b := *e.buf
			b[e.pidOff], b[e.pidOff+1] = byte(e.pid>>8), byte(e.pid)
			if e.flags&fDup != 0 {
				b[0] |= 0x08
			}
			if c5 != nil || e.flags&fProps != 0 {
				write := s.writePublish5
				if e.flags&fProps != 0 {
					write = s.writeStored
				}
				dropped, err := write(c, c5, b, e.pidOff)
				if err != nil {
					return
				}
				if dropped {
					// 3.1.2.25: over the client's Maximum Packet Size it
					// is not sent, as if it had been delivered.
					s.stats.tooBig.Add(1)
					s.logEntry(recDel, cl, e)
					q.remove(q.nsent)
					continue
				}
			} else if c.Write(b) != nil {
				return
			}
			s.loops[c.LoopID()].sent.Add(1)
		}
		q.nsent++
	}
}

// ack handles PUBACK, PUBREC and PUBCOMP for deliveries to cl.
func (s *Server) ack(c *netpoll.Conn, ls *loopState, ss *session, cl *client, t mqtt.Type, pid uint16) {
	cl.mu.Lock()
	if !ownedLocked(cl, c.Handle(), ss.epoch) {
		cl.mu.Unlock()
		return
	}
	i := cl.box().findSent(pid)
	if i < 0 {
		cl.mu.Unlock()
		if t == mqtt.TypePubrec { // 4.3.3: answer a PUBREC we no longer track
			c.Write(mqtt.AppendPubrel(ls.out[:0], pid))
		}
		return
	}
	e := cl.box().at(i)
	receipt := false
	switch t {
	case mqtt.TypePuback:
		if e.flags&fReceipt != 0 {
			ls.rcpt = append(ls.rcpt[:0], e.topic()...)
			receipt = true
		}
		s.logEntry(recDel, cl, e)
		cl.box().remove(i)
	case mqtt.TypePubrec:
		if e.qos() == 2 && e.flags&fReleased == 0 {
			e.flags |= fReleased
			s.logEntry(recRel, cl, e)
		}
		c.Write(mqtt.AppendPubrel(ls.out[:0], pid))
	case mqtt.TypePubcomp:
		s.logEntry(recDel, cl, e)
		cl.box().remove(i)
	}
	s.pump(c, cl)
	cl.trimExt()
	cl.mu.Unlock()
	if receipt {
		// u/<me>/m/<from>/<mid> -> u/<from>/d/<me>/<mid>
		t := ls.rcpt
		if m, ok := delivered(t); ok {
			s.storeDirect(ls, nil, 'd', m.from, m.to, nil, m.mid, nil)
		}
		ls.rcpt = t[:0]
	}
}
