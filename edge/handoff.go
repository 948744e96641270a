package edge

// Zero-downtime upgrade, the server's part: the old process freezes its
// loops and turns its whole state into a Handoff (descriptors to send with
// SCM_RIGHTS, and a state stream in the store's record format); the new
// process starts with Config.Handoff, adopts every connection with its
// session (MQTT state, in-flight window and packet ids, partial input,
// unwritten output) and goes on where the old one stopped: no client
// notices. cmd/edged carries the bytes between the two (a unix socket).
//
// The durable store is not copied: the old process commits and fsyncs it
// before exporting and never writes again; the new one shares its lock
// (the LOCK file's descriptor) and appends after it. The state stream holds
// everything, logged or not (clean sessions' subscriptions, QoS 0 entries,
// wills), so the new process's memory is exactly the old one's.
//
// TLS sessions are carried with their record state (edgetls.ExportState)
// and the ticket key. Not carried: push notifications queued for the webhook (dropped and
// counted as at a shutdown), retained scans in progress (a wildcard subscription's
// retained messages still being delivered are not resent), cross-loop
// messages in flight (every connected client is pumped after the takeover
// instead), keepalive timers (restarted at full length).

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/internal/wal"
	"github.com/edgedhq/edged/netpoll"
)

// HandoffVersion is the state format version; a new binary refuses a
// handoff of another version (it is started with a clean restart instead).
//
// 2: TLS sessions and MQTT 5.0 connections are carried (hConn's record
// state, partial-payload count and v5 state; hTicket).
const HandoffVersion = 2

// Handoff-only record types (the store's are below 64).
const (
	hClient byte = 64 + iota // id, persistent, lastSeen, nextPID, made[, v5 session expiry]
	hEntry                   // id, flags, pid, packet; seq in the record
	hSent                    // id, nsent
	hWill                    // id, topic, qos, retain, payload
	hConn                    // fd index, loop, client id ("" before CONNECT), session, pending, output[, TLS record state or "", payload bytes of pending, held acks to seal[, conn5, 16 aliases]]
	hTicket                  // the TLS session ticket keys, the current one first
)

// Handoff is what the old process gives the new one.
type Handoff struct {
	Version   int
	Listeners [][]int // netpoll.Engine.GroupFDs per address group
	Conns     []int   // connection descriptors, indexed by the state's hConn records
	Lock      *os.File
	State     []byte
	// Drain: the new process takes the listeners and the store's lock
	// only, and recovers from the log like a restart (its binary cannot
	// read this one's State). Every connection stays with the old
	// process, which closes them at a bounded rate (FinishDrain).
	Drain bool

	// In the old process: every exported connection, with the output it
	// is owed (held acknowledgements included), and the descriptors the
	// state carries.
	exported []netpoll.Exported
	carried  map[int]bool
}

func handoffListeners(h *Handoff) [][]int {
	if h == nil {
		return nil
	}
	return h.Listeners
}

// ErrHandoff wraps why a handoff could not be taken.
var ErrHandoff = errors.New("edge: handoff")

// Freeze stops the server for a handoff: the admin listener closes (the
// new process binds it), the background work stops, the loops park, the
// store is committed and fsynced, and the whole state is exported. Then
// either Resume (the new process failed) or Finish (it took over).
func (s *Server) Freeze() (*Handoff, error) {
	s.mu.Lock()
	admin := s.admin
	s.admin, s.adminLn = nil, nil
	s.mu.Unlock()
	if admin != nil {
		admin.Close()
	}
	s.stopSweeper()
	s.stopCompactor()
	s.stopSys() // it publishes retained messages: nothing may change the state now
	s.finishHandshakes()
	if err := s.eng.Freeze(); err != nil {
		s.eng.PauseAccepts(s.acceptsPaused)
		s.restartBackground()
		return nil, fmt.Errorf("freeze: %w", err)
	}
	h := &Handoff{Version: HandoffVersion}
	if s.wal != nil {
		if err := s.wal.Sync(); err != nil {
			s.Resume()
			return nil, fmt.Errorf("freeze: the store cannot write: %w", err)
		}
		h.Lock = s.wal.LockFile()
	}
	for g := range s.eng.Addrs() {
		h.Listeners = append(h.Listeners, s.eng.GroupFDs(g))
	}
	conns, err := s.eng.Export()
	if err != nil {
		s.Resume()
		return nil, fmt.Errorf("freeze: %w", err)
	}
	h.State = s.exportState(conns, &h.Conns)
	h.exported = conns
	h.carried = make(map[int]bool, len(h.Conns))
	for _, fd := range h.Conns {
		h.carried[fd] = true
	}
	return h, nil
}

// handshakeWait bounds how long a Freeze waits for the handshakes in
// progress (see finishHandshakes).
const handshakeWait = 2 * time.Second

// finishHandshakes stops accepting (new connections wait in the listen
// backlog, which the new process inherits) and waits, up to handshakeWait,
// for the TLS handshakes (and the wss:// upgrades on them) in progress to
// end: one runs on a goroutine of this process and is not carried, so one
// cut by the handoff fails (measured: ~700 of 10,000 clients connecting at
// 700/s got an error before this wait). Their connections reach the loops
// before the freeze: a loop adopts what was posted to it before it parks.
// (A ws:// upgrade runs on its loop: its connection is drained with the
// other WebSocket ones.)
func (s *Server) finishHandshakes() {
	s.acceptsPaused = s.eng.AcceptsPaused()
	if s.cfg.TLS == nil {
		return
	}
	s.eng.PauseAccepts(true) // returns once no loop hands on a new socket
	for end := time.Now().Add(handshakeWait); s.cfg.TLS.InProgress() > 0 && time.Now().Before(end); {
		time.Sleep(2 * time.Millisecond)
	}
	if n := s.cfg.TLS.InProgress(); n > 0 {
		s.cfg.Logger.Warn("handoff: TLS handshakes still in progress are cut", "handshakes", n)
	}
}

// Resume undoes Freeze: the loops go on, the admin listener and the
// background work start again.
func (s *Server) Resume() error {
	s.eng.Thaw()
	s.eng.PauseAccepts(s.acceptsPaused)
	s.restartBackground()
	if s.cfg.AdminAddr == "" {
		return nil
	}
	return s.listenAdmin()
}

// Finish ends the old process's part: the loops exit without closing the
// connections (the new process holds them), the store is let go unwritten.
func (s *Server) Finish() error {
	fds, err := s.detach()
	for _, fd := range fds {
		netpoll.CloseFD(fd) // the new process holds it
	}
	return err
}

// detach stops the server for good without closing its connections and
// returns their descriptors.
func (s *Server) detach() ([]int, error) {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	fds, err := s.eng.Detach()
	if err != nil {
		return nil, fmt.Errorf("finish handoff: %w", err)
	}
	if s.push != nil {
		s.push.close()
	}
	if s.wal != nil {
		s.wal.Abandon()
	}
	return fds, nil
}

// FinishDrain is Finish for a handoff where the new process does not take
// every connection: all of them when h.Drain (its binary cannot read the
// state), otherwise those the state does not carry (WebSocket connections,
// which are sent a close frame 1001 after their output). Closing those at
// once would bring all their clients back in the same second (a reconnect
// storm, TLS handshakes first of all); instead each is written what it was
// owed, half-closed (its client sees the end of the stream and reconnects,
// to the new process, which holds the listeners) and closed, at most rate
// per second (rate <= 0: no bound). The will of a client drained this way
// is not published: it is coming back. FinishDrain returns how many
// connections it drained, once all are closed.
func (s *Server) FinishDrain(h *Handoff, rate int) (int, error) {
	if s.cfg.WS != nil {
		// The loops are parked still: a WebSocket client is sent the
		// close frame (1001) after its output, which Export wrapped.
		for i := range h.exported {
			x := &h.exported[i]
			if x.Transport && (h.Drain || !h.carried[x.FD]) {
				if c := s.eng.Conn(x.Handle); c != nil {
					x.Output = s.cfg.WS.Goodbye(c, x.Output)
				}
			}
		}
	}
	fds, err := s.detach()
	if err != nil {
		return 0, err
	}
	owed := make(map[int][]byte, len(h.exported))
	for _, x := range h.exported {
		if h.Drain || !h.carried[x.FD] {
			// A TLS session's output is sealed already (Export), but
			// the acknowledgements held for it are not: its client
			// sends those messages again, and gets them acknowledged.
			// An MQTT 5.0 client is told why it is closed (3.14.2.1).
			ss := s.loops[x.Loop].sess.get(uint32(x.Handle))
			if !x.Transport && ss.flags&sV5 != 0 && ss.client != 0 {
				x.Output = mqtt.AppendDisconnect5(x.Output, mqtt.RCServerShuttingDown, nil)
			}
			owed[x.FD] = x.Output
		}
	}
	var left []int
	for _, fd := range fds {
		if _, ok := owed[fd]; ok {
			left = append(left, fd)
		} else {
			netpoll.CloseFD(fd) // the new process holds it
		}
	}
	netpoll.CloseDetached(left, owed, rate)
	return len(left), nil
}

func (s *Server) restartBackground() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg.InboxExpiry > 0 && s.stopSweep == nil {
		s.stopSweep, s.sweepDone = make(chan struct{}), make(chan struct{})
		go s.sweeper(s.stopSweep, s.sweepDone)
	}
	if s.wal != nil && s.stopCompact == nil {
		s.stopCompact, s.compactDone = make(chan struct{}), make(chan struct{})
		go s.compactor(s.stopCompact, s.compactDone)
	}
	if s.stopSysC == nil {
		s.startSys()
	}
}

func (s *Server) stopCompactor() {
	s.mu.Lock()
	stop, done := s.stopCompact, s.compactDone
	s.stopCompact, s.compactDone = nil, nil
	s.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}

// listenAdmin (re)starts the admin HTTP server.
func (s *Server) listenAdmin() error {
	ln, err := net.Listen("tcp", s.cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("listen admin: %w", err)
	}
	mux := s.Mux()
	if s.cfg.AdminRoutes != nil {
		if err := s.cfg.AdminRoutes(mux); err != nil {
			ln.Close()
			return fmt.Errorf("add admin routes: %w", err)
		}
	}
	srv := &http.Server{Handler: s.AdminGuard(mux), ReadHeaderTimeout: 10 * time.Second}
	s.mu.Lock()
	s.adminLn, s.admin = ln, srv
	s.mu.Unlock()
	go srv.Serve(ln)
	return nil
}

// exportState writes every client, group, retained message, last-seen time
// and connection as records; the loops are frozen and nothing else
// changes the state (admin and background work are stopped).
func (s *Server) exportState(conns []netpoll.Exported, fds *[]int) []byte {
	var b []byte
	put := func(typ byte, seq uint64, fields ...[]byte) { b = wal.EncodeRecord(b, typ, seq, fields...) }
	for g, mem := range s.groups.m {
		for u := range mem {
			put(recGroupAdd, 0, []byte(g), []byte(u))
		}
	}
	t := s.tree
	var walk func(n *rnode)
	walk = func(n *rnode) {
		if n.payload != nil {
			put(recRetain, 0, []byte(n.topic), []byte{n.qos}, n.payload, n.props)
		}
		if n.kids != nil {
			for _, c := range n.kids.list {
				if c != nil {
					walk(c)
				}
			}
		}
	}
	walk(&t.rroot)
	var b8 [8]byte
	var b4, e4 [4]byte
	next := s.reg.next
	for idx := uint32(1); idx < next; idx++ {
		cl := s.reg.at(idx)
		if cl == nil || cl.dead {
			continue
		}
		id := cl.idBytes()
		p := byte(0)
		if cl.persistent {
			p = 1
		}
		binary.LittleEndian.PutUint32(b4[:], cl.made)
		binary.LittleEndian.PutUint32(e4[:], cl.expiry) // carried as it is: so are the connections
		put(hClient, 0, id, []byte{p}, u64(&b8, uint64(cl.lastSeen)), []byte{byte(cl.nextPID >> 8), byte(cl.nextPID)}, b4[:], e4[:])
		for f, sub := range cl.subs {
			put(recSub, 0, id, f, sub.record())
		}
		x := cl.xp()
		if x == nil {
			continue
		}
		for _, pid := range x.qos2() {
			put(recQ2Add, 0, id, []byte{byte(pid >> 8), byte(pid)})
		}
		if w := x.will; w != nil {
			r := byte(0)
			if w.retain {
				r = 1
			}
			put(hWill, 0, id, []byte(w.topic), []byte{w.qos}, []byte{r}, w.payload)
		}
		q, nsent := x.q, 0 // nil: an empty inbox
		for i := 0; i < q.len(); i++ {
			e := q.at(i)
			put(hEntry, e.seq, id, []byte{e.flags}, []byte{byte(e.pid >> 8), byte(e.pid)}, *e.buf)
		}
		if q != nil {
			nsent = q.nsent
		}
		binary.LittleEndian.PutUint32(b4[:], uint32(nsent))
		put(hSent, 0, id, b4[:])
	}
	for i := range s.reg.shards {
		sh := &s.reg.shards[i]
		for _, m := range []map[string]int64{sh.seenOld, sh.seen} {
			for u, t := range m {
				put(recSeen, 0, []byte(u), u64(&b8, uint64(t)))
			}
		}
	}
	// Acknowledgements held for the store (waiting for the syncer's
	// fsync when the loops froze) are durable now (Freeze synced the
	// store): they go with their connection's unwritten output.
	held := map[netpoll.Handle][]byte{}
	for _, ls := range s.loops {
		for _, a := range ls.acks {
			held[a.h] = append(held[a.h], ackPacket(a.typ, a.pid)...)
		}
	}
	if s.cfg.TLS != nil {
		var keys [][]byte
		for _, k := range s.cfg.TLS.TicketKeys() {
			keys = append(keys, bytes.Clone(k[:]))
		}
		put(hTicket, 0, keys...)
	}
	for i := range conns {
		x := &conns[i]
		var tlsState []byte
		if x.Transport {
			// WebSocket connections are not carried (their framing
			// state is not in the format): FinishDrain closes them
			// with a close frame, their clients reconnect.
			c := s.eng.Conn(x.Handle)
			if c == nil || s.cfg.TLS == nil || s.cfg.WS != nil && s.cfg.WS.Owns(c) {
				continue
			}
			tlsState = s.cfg.TLS.ExportState(c)
		} else {
			x.Output = append(x.Output, held[x.Handle]...)
		}
		ss := s.loops[x.Loop].sess.get(uint32(x.Handle))
		var id []byte
		if ss.client != 0 {
			if cl := s.reg.at(ss.client); cl != nil && !cl.dead && ownedLocked(cl, x.Handle, ss.epoch) {
				id = cl.idBytes()
			}
		}
		if id == nil && ss.client != 0 {
			continue // taken over, its close on its way: not carried
		}
		*fds = append(*fds, x.FD)
		binary.LittleEndian.PutUint32(b4[:], uint32(len(*fds)-1))
		f := [][]byte{b4[:], {byte(x.Loop)}, id, encodeSession(ss), x.Pending, x.Output}
		var tlsOwed, plain []byte
		if tlsState != nil {
			// The acknowledgements held for the fsync go as payload: the
			// new process seals them after the output, sealed already.
			plain, tlsOwed = binary.LittleEndian.AppendUint32(nil, uint32(x.PendingPlain)), held[x.Handle]
		}
		if ss.flags&sV5 != 0 {
			f = append(f, tlsState, plain, tlsOwed)
			f = append(f, s.loops[x.Loop].export5(uint32(x.Handle))...)
		} else if tlsState != nil {
			f = append(f, tlsState, plain, tlsOwed)
		}
		put(hConn, 0, f...)
	}
	return b
}

// export5 gives an MQTT 5.0 connection's state for its hConn record: its
// conn5, then its inbound topic aliases (one field each, empty if unset).
func (ls *loopState) export5(slot uint32) [][]byte {
	c5 := ls.v5[slot]
	if c5 == nil {
		c5 = &conn5{recvMax: 65535}
	}
	b := binary.LittleEndian.AppendUint16(nil, c5.recvMax)
	b = binary.LittleEndian.AppendUint32(b, c5.maxPacket)
	b = binary.LittleEndian.AppendUint32(b, c5.expiry)
	if c5.sendWill {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = append(b, c5.aliasMax) // not its outbound aliases (aliasesOut5)
	f := [][]byte{b}
	if t := ls.alias5[slot]; t != nil {
		for _, topic := range t {
			f = append(f, topic)
		}
	}
	return f
}

// import5 restores what export5 gave, for the connection in slot.
func (ls *loopState) import5(slot uint32, b []byte, aliases [][]byte) bool {
	if len(b) != 11 && len(b) != 12 || len(aliases) > aliasMax5 {
		return false
	}
	c5 := &conn5{recvMax: binary.LittleEndian.Uint16(b), maxPacket: binary.LittleEndian.Uint32(b[2:]),
		expiry: binary.LittleEndian.Uint32(b[6:]), sendWill: b[10] == 1}
	if len(b) == 12 {
		c5.aliasMax = min(b[11], aliasOutMax5)
	}
	if ls.v5 == nil {
		ls.v5 = make(map[uint32]*conn5)
	}
	ls.v5[slot] = c5
	ls.sess.get(slot).flags |= sV5
	if len(aliases) > 0 {
		t := new(aliases5)
		for i, a := range aliases {
			t[i] = bytes.Clone(a)
		}
		if ls.alias5 == nil {
			ls.alias5 = make(map[uint32]*aliases5)
		}
		ls.alias5[slot] = t
	}
	return true
}

// encodeSession packs the session's carried fields (the client index and
// epoch are the new process's own).
func encodeSession(ss *session) []byte {
	b := make([]byte, 0, 24)
	b = binary.LittleEndian.AppendUint16(b, ss.keepalive)
	b = binary.LittleEndian.AppendUint32(b, math.Float32bits(ss.tokens))
	b = binary.LittleEndian.AppendUint64(b, uint64(ss.last))
	b = binary.LittleEndian.AppendUint32(b, math.Float32bits(ss.newInbox))
	b = binary.LittleEndian.AppendUint32(b, ss.src)
	return b
}

func decodeSession(b []byte, ss *session) bool {
	if len(b) != 22 {
		return false
	}
	ss.keepalive = binary.LittleEndian.Uint16(b)
	ss.tokens = math.Float32frombits(binary.LittleEndian.Uint32(b[2:]))
	ss.last = int64(binary.LittleEndian.Uint64(b[6:]))
	ss.newInbox = math.Float32frombits(binary.LittleEndian.Uint32(b[14:]))
	ss.src = binary.LittleEndian.Uint32(b[18:])
	return true
}

// importState loads a Handoff's state (before the loops start; the store is
// open for appending but nothing is logged while loading) and adopts its
// connections. It returns the handles to pump once the loops run.
func (s *Server) importState(h *Handoff) (kick []netpoll.Handle, err error) {
	var rs replayState
	var fields [10 + aliasMax5][]byte
	err = wal.DecodeRecords(h.State, func(r wal.Record) error {
		f := r.Fields()
		n := 0
		for n < len(fields) {
			v, ok := f.Next()
			if !ok {
				break
			}
			fields[n] = v
			n++
		}
		a := fields[0]
		switch r.Type {
		case recGroupAdd, recRetain, recSeen, recSub, recQ2Add:
			return s.apply(&rs, r)
		case hClient:
			if n < 5 || len(fields[2]) != 8 || len(fields[3]) != 2 || len(fields[4]) != 4 {
				return fmt.Errorf("client record: %w", errBadRecord)
			}
			cl := s.reg.lock(a, true)
			if cl == nil {
				return fmt.Errorf("client %q: the user table is full", a)
			}
			if fields[1][0] == 1 && !cl.persistent {
				cl.persistent = true
				s.held.Add(sessionOverhead)
			}
			cl.lastSeen = int64(binary.LittleEndian.Uint64(fields[2]))
			cl.nextPID = uint16(fields[3][0])<<8 | uint16(fields[3][1])
			cl.made = binary.LittleEndian.Uint32(fields[4])
			if n > 5 && len(fields[5]) == 4 {
				cl.expiry = binary.LittleEndian.Uint32(fields[5])
			}
			cl.mu.Unlock()
		case hEntry:
			if n < 4 || len(fields[1]) != 1 || len(fields[2]) != 2 {
				return fmt.Errorf("entry record: %w", errBadRecord)
			}
			cl := s.reg.lock(a, false)
			if cl == nil {
				return fmt.Errorf("entry for unknown client %q: %w", a, errBadRecord)
			}
			defer cl.mu.Unlock()
			buf := getBuf(len(fields[3]))
			*buf = append(*buf, fields[3]...)
			e := entry{buf: buf, seq: r.Seq, flags: fields[1][0], pid: uint16(fields[2][0])<<8 | uint16(fields[2][1])}
			if e.qos() > 0 {
				e.pidOff = uint32(publishPIDOffset(*buf))
			}
			q := cl.x().queue()
			if q.acct == nil {
				q.acct, q.cnt = &s.held, &s.entries
			}
			q.push(e)
		case hSent:
			cl := s.reg.lock(a, false)
			if cl == nil || n < 2 || len(fields[1]) != 4 {
				return fmt.Errorf("sent record: %w", errBadRecord)
			}
			if q := cl.box(); q != nil {
				q.nsent = min(int(binary.LittleEndian.Uint32(fields[1])), q.len())
			}
			cl.mu.Unlock()
		case hWill:
			cl := s.reg.lock(a, false)
			if cl == nil || n < 5 {
				return fmt.Errorf("will record: %w", errBadRecord)
			}
			cl.x().will = &will{topic: string(fields[1]), qos: firstByte(fields[2]), retain: firstByte(fields[3]) == 1, payload: bytes.Clone(fields[4])}
			cl.mu.Unlock()
		case hConn:
			if n < 6 || len(a) != 4 {
				return fmt.Errorf("connection record: %w", errBadRecord)
			}
			i := int(binary.LittleEndian.Uint32(a))
			if i >= len(h.Conns) {
				return fmt.Errorf("connection %d of %d descriptors: %w", i, len(h.Conns), errBadRecord)
			}
			var tlsState any
			plain := 0
			var owed []byte
			if n >= 9 && len(fields[6]) > 0 {
				if s.cfg.TLS == nil || len(fields[7]) != 4 {
					return fmt.Errorf("a TLS connection, and no TLS here: %w", errBadRecord)
				}
				var err error
				if tlsState, err = s.cfg.TLS.ImportState(fields[6]); err != nil {
					return err
				}
				plain = int(binary.LittleEndian.Uint32(fields[7]))
				owed = fields[8]
			}
			hd, err := s.adoptConn(h.Conns[i], int(firstByte(fields[1])), fields[2], fields[3], fields[4], fields[5], tlsState, plain, owed)
			if err != nil {
				return err
			}
			if n >= 10 { // an MQTT 5.0 connection
				if hd == 0 {
					return fmt.Errorf("an MQTT 5.0 connection before its CONNECT: %w", errBadRecord)
				}
				if !s.loops[int(hd>>56)].import5(uint32(hd), fields[9], fields[10:n]) {
					return fmt.Errorf("MQTT 5.0 connection state: %w", errBadRecord)
				}
			}
			if hd != 0 {
				kick = append(kick, hd)
			}
		case hTicket:
			if s.cfg.TLS == nil {
				return nil // no TLS listener any more
			}
			var keys [][32]byte
			for f := r.Fields(); ; {
				k, ok := f.Next()
				if !ok {
					break
				}
				if len(k) != 32 {
					return fmt.Errorf("ticket key record: %w", errBadRecord)
				}
				keys = append(keys, [32]byte(k))
			}
			s.cfg.TLS.SetTicketKeys(keys)
		default:
			return fmt.Errorf("record type %d: %w", r.Type, errBadRecord)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: load state: %w", ErrHandoff, err)
	}
	// A client whose connection was not carried (taken over, or a TLS
	// session with acknowledgements held) is
	// offline now: what was in flight goes again, with DUP.
	for idx := uint32(1); idx < s.reg.next; idx++ {
		if cl := s.reg.at(idx); cl != nil && !cl.dead && cl.handle == 0 {
			cl.box().unsend()
		}
	}
	return kick, nil
}

// adoptConn adopts one handed-over connection and ties it to its client.
func (s *Server) adoptConn(fd, loop int, id, sess, pending, output []byte, tlsState any, plain int, owed []byte) (netpoll.Handle, error) {
	if loop >= len(s.loops) {
		return 0, fmt.Errorf("%w: connection on loop %d of %d (the loop count must not change)", ErrHandoff, loop, len(s.loops))
	}
	var c *netpoll.Conn
	var err error
	if tlsState != nil {
		if c, err = s.eng.RestoreTransport(loop, fd, tlsState, pending, plain, output); err == nil && len(owed) > 0 {
			c.Write(owed)
		}
	} else {
		c, err = s.eng.Restore(loop, fd, pending, output)
	}
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrHandoff, err)
	}
	ls := s.loops[loop]
	ss := ls.sess.get(c.Slot())
	*ss = session{}
	s.conns.Add(1)
	if len(id) == 0 { // before CONNECT: the handshake timeout starts again
		c.SetDeadline(s.cfg.HandshakeTimeout)
		return 0, nil
	}
	if !decodeSession(sess, ss) {
		return 0, fmt.Errorf("%w: session record: %w", ErrHandoff, errBadRecord)
	}
	cl := s.reg.lock(id, false)
	if cl == nil {
		return 0, fmt.Errorf("%w: connection of unknown client %q", ErrHandoff, id)
	}
	cl.epoch++
	cl.handle = c.Handle()
	cl.owner.Store(uint64(cl.handle))
	ss.client, ss.epoch = cl.idx, cl.epoch
	cl.mu.Unlock()
	if ss.keepalive > 0 {
		c.SetDeadline(time.Duration(ss.keepalive) * 1500 * time.Millisecond)
	}
	return c.Handle(), nil
}

// publishPIDOffset returns the offset of a QoS 1/2 PUBLISH's packet id.
func publishPIDOffset(b []byte) int {
	i := 1
	for b[i]&0x80 != 0 {
		i++
	}
	i++
	n := int(b[i])<<8 | int(b[i+1])
	return i + 2 + n
}
