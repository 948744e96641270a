package bench

import "strconv"

// workload is what one mode does with the engine's connections. The I/O
// loop (engine_linux.go) dials, reads, writes and keeps time for every mode
// alike and asks the workload the mode-specific questions through these
// hooks; a nil hook means "nothing" (false, no topic, no action).
//
// Connection roles: in the pair modes connection 2k receives from 2k+1 for
// pair k < Setup.Pairs; in fanout worker 0's connection 0 publishes and
// every other connection subscribes.
type workload struct {
	// restart: connection i, once closed, is dialled again (after its
	// toggle time or at drain).
	restart func(e *engine, i int) bool
	// subscribe appends to b the filter connection i subscribes to after
	// CONNACK and reports its QoS; ok false means no SUBSCRIBE.
	subscribe func(e *engine, i int, b []byte) (filter []byte, qos byte, ok bool)
	// up runs when connection i's CONNACK accepts it at now (arm toggles).
	up func(e *engine, i int, now int64)
	// toggle runs at housekeeping for each up connection: drops and
	// disconnects whose time has come.
	toggle func(e *engine, i int, now int64)
	// topic appends to b the topic of message seq of stream pi.
	topic func(e *engine, pi int, seq uint64, b []byte) []byte
	// sender picks the connection and stream of open-loop message number
	// rr (the engine's round-robin counter), ok false when this worker
	// sends nothing. It has no side effects.
	sender func(e *engine, rr int) (ci, pi int, ok bool)
	// perPair: received messages are book-kept per pair (order, closed
	// loop window).
	perPair bool
	// exactlyOnce: every acknowledged message is tracked by sequence
	// number, so loss and duplicates are counted (the offline workload).
	exactlyOnce bool
}

var workloads = map[string]*workload{
	modeIdle: {
		subscribe: func(e *engine, i int, b []byte) ([]byte, byte, bool) {
			if !e.s.Touch || e.s.Profile == "inbox" {
				return nil, 0, false
			}
			return appendTopic(b, e.s.Prefix, e.s.Worker, i), 0, true
		},
	},
	modePairs: {
		subscribe: receiverSubscribes,
		topic:     pairTopic,
		sender:    pairSender,
		perPair:   true,
	},
	modeOffline: {
		restart:   func(e *engine, i int) bool { return e.isReceiver(i) },
		subscribe: receiverSubscribes,
		up: func(e *engine, i int, now int64) {
			if e.isReceiver(i) {
				e.conns[i].toggle = now + e.s.UpNs/2 + e.rng.Int64N(e.s.UpNs+1)
			}
		},
		toggle: func(e *engine, i int, now int64) {
			c := &e.conns[i]
			if e.isReceiver(i) && !e.draining && e.rate > 0 && now >= c.toggle {
				e.closeConn(i, "") // abrupt drop, like a phone losing signal
				c.toggle = now + e.s.DownNs/2 + e.rng.Int64N(e.s.DownNs+1)
			}
		},
		topic:       pairTopic,
		sender:      pairSender,
		perPair:     true,
		exactlyOnce: true,
	},
	modeFanout: {
		subscribe: func(e *engine, i int, b []byte) ([]byte, byte, bool) {
			if e.isPublisher(i) || e.s.Profile == "inbox" && e.s.Group != "" {
				return nil, 0, false // group members need no SUBSCRIBE (PROTOCOL.md)
			}
			return append(b, fanoutTopic(e.s.Prefix)...), e.s.QoS, true
		},
		topic: func(e *engine, _ int, seq uint64, b []byte) []byte {
			if e.s.Group != "" {
				b = append(append(append(b, "g/"...), e.s.Group...), '/', 'm')
				return strconv.AppendUint(b, seq, 10)
			}
			return append(b, fanoutTopic(e.s.Prefix)...)
		},
		sender: func(e *engine, _ int) (int, int, bool) {
			// One stream, numbered past the pairs, from worker 0's first
			// connection.
			return 0, len(e.pairs), e.s.Worker == 0 && len(e.conns) > 0
		},
	},
	modeChurn: {
		restart: func(*engine, int) bool { return true },
		up: func(e *engine, i int, now int64) {
			e.conns[i].toggle = now + e.s.HoldNs/2 + e.rng.Int64N(e.s.HoldNs+1)
		},
		toggle: func(e *engine, i int, now int64) {
			c := &e.conns[i]
			if now < c.toggle {
				return
			}
			e.queueBytes(i, appendDisconnect(e.scratch[:0]))
			e.flush(i)
			if c.st == stUp {
				e.closeConn(i, "")
				c.toggle = now
			}
		},
	},
}

// receiverSubscribes: a pair's receiver subscribes to its own topic, except
// with the inbox profile, whose inboxes need no SUBSCRIBE.
func receiverSubscribes(e *engine, i int, b []byte) ([]byte, byte, bool) {
	if !e.isReceiver(i) || e.s.Profile == "inbox" {
		return nil, 0, false
	}
	return appendTopic(b, e.s.Prefix, e.s.Worker, i), e.s.QoS, true
}

// pairTopic: pair pi's sender publishes to its receiver's topic, or with the
// inbox profile to the receiver's inbox (one message id per sequence).
func pairTopic(e *engine, pi int, seq uint64, b []byte) []byte {
	if e.s.Profile == "inbox" {
		return appendInboxTopic(b, e.s.Prefix, e.s.Worker, 2*pi, seq)
	}
	return appendTopic(b, e.s.Prefix, e.s.Worker, 2*pi)
}

// pairSender: open-loop messages go round-robin over the pairs, each from
// the pair's sender.
func pairSender(e *engine, rr int) (int, int, bool) {
	if len(e.pairs) == 0 {
		return 0, 0, false
	}
	pi := rr % len(e.pairs)
	return 2*pi + 1, pi, true
}

func (e *engine) isReceiver(i int) bool { return i < 2*e.s.Pairs && i%2 == 0 }
func (e *engine) isSender(i int) bool   { return i < 2*e.s.Pairs && i%2 == 1 }
func (e *engine) isPublisher(i int) bool {
	return e.s.Mode == modeFanout && e.s.Worker == 0 && i == 0
}
