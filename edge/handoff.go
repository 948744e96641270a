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
// Not carried: TLS sessions (their record state is the transport's; they
// are closed and their clients reconnect, sessions and inboxes intact),
// push notifications queued for the webhook (dropped and
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

	"github.com/edgedhq/edged/internal/wal"
	"github.com/edgedhq/edged/netpoll"
)

// HandoffVersion is the state format version; a new binary refuses a
// handoff of another version (it is started with a clean restart instead).
const HandoffVersion = 1

// Handoff-only record types (the store's are below 64).
const (
	hClient byte = 64 + iota // id, persistent, lastSeen, nextPID, made
	hEntry                   // id, flags, pid, packet; seq in the record
	hSent                    // id, nsent
	hWill                    // id, topic, qos, retain, payload
	hConn                    // fd index, loop, client id ("" before CONNECT), session, pending, output
)

// Handoff is what the old process gives the new one.
type Handoff struct {
	Version   int
	Listeners [][]int // netpoll.Engine.GroupFDs per address group
	Conns     []int   // connection descriptors, indexed by the state's hConn records
	Lock      *os.File
	State     []byte
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
	if err := s.eng.Freeze(); err != nil {
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
	return h, nil
}

// Resume undoes Freeze: the loops go on, the admin listener and the
// background work start again.
func (s *Server) Resume() error {
	s.eng.Thaw()
	s.restartBackground()
	if s.cfg.AdminAddr == "" {
		return nil
	}
	return s.listenAdmin()
}

// Finish ends the old process's part: the loops exit without closing the
// connections (the new process holds them), the store is let go unwritten.
func (s *Server) Finish() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	if err := s.eng.Abandon(); err != nil {
		return fmt.Errorf("finish handoff: %w", err)
	}
	if s.push != nil {
		s.push.close()
	}
	if s.wal != nil {
		s.wal.Abandon()
	}
	return nil
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
			put(recRetain, 0, []byte(n.topic), []byte{n.qos}, n.payload)
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
	var b4 [4]byte
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
		put(hClient, 0, id, []byte{p}, u64(&b8, uint64(cl.lastSeen)), []byte{byte(cl.nextPID >> 8), byte(cl.nextPID)}, b4[:])
		x := cl.xp()
		if x == nil {
			continue
		}
		for _, sub := range x.subs.items {
			put(recSub, 0, id, []byte(sub.filter), sub.record())
		}
		for _, pid := range x.qos2in {
			put(recQ2Add, 0, id, []byte{byte(pid >> 8), byte(pid)})
		}
		if w := x.will; w != nil {
			r := byte(0)
			if w.retain {
				r = 1
			}
			put(hWill, 0, id, []byte(w.topic), []byte{w.qos}, []byte{r}, w.payload)
		}
		q := &x.q
		for i := 0; i < q.len(); i++ {
			e := q.at(i)
			put(hEntry, e.seq, id, []byte{e.flags}, []byte{byte(e.pid >> 8), byte(e.pid)}, *e.buf)
		}
		binary.LittleEndian.PutUint32(b4[:], uint32(q.nsent))
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
	for _, x := range conns {
		x.Output = append(x.Output, held[x.Handle]...)
		if x.Transport {
			continue // a TLS session's record state is not carried: closed, its client reconnects
		}
		ss := s.loops[x.Loop].sess.get(uint32(x.Handle))
		if ss.flags&sV5 != 0 {
			// An MQTT 5.0 connection's negotiated state (conn5) is not
			// in the handoff format: like a TLS one it is not carried,
			// its socket closes with the old process and its client
			// reconnects to a session the records carried.
			continue
		}
		var id []byte
		if ss.client != 0 {
			if cl := s.reg.at(ss.client); cl != nil && !cl.dead && cl.handle == x.Handle && cl.epoch == ss.epoch {
				id = cl.idBytes()
			}
		}
		if id == nil && ss.client != 0 {
			continue // taken over, its close on its way: not carried
		}
		*fds = append(*fds, x.FD)
		binary.LittleEndian.PutUint32(b4[:], uint32(len(*fds)-1))
		put(hConn, 0, b4[:], []byte{byte(x.Loop)}, id, encodeSession(ss), x.Pending, x.Output)
	}
	return b
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
	var fields [6][]byte
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
			q := &cl.x().q
			if q.acct == nil {
				q.acct = &s.held
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
			hd, err := s.adoptConn(h.Conns[i], int(firstByte(fields[1])), fields[2], fields[3], fields[4], fields[5])
			if err != nil {
				return err
			}
			if hd != 0 {
				kick = append(kick, hd)
			}
		default:
			return fmt.Errorf("record type %d: %w", r.Type, errBadRecord)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: load state: %w", ErrHandoff, err)
	}
	// A client whose connection was not carried (TLS, or taken over) is
	// offline now: what was in flight goes again, with DUP.
	for idx := uint32(1); idx < s.reg.next; idx++ {
		if cl := s.reg.at(idx); cl != nil && !cl.dead && cl.handle == 0 {
			cl.box().unsend()
		}
	}
	return kick, nil
}

// adoptConn adopts one handed-over connection and ties it to its client.
func (s *Server) adoptConn(fd, loop int, id, sess, pending, output []byte) (netpoll.Handle, error) {
	if loop >= len(s.loops) {
		return 0, fmt.Errorf("%w: connection on loop %d of %d (the loop count must not change)", ErrHandoff, loop, len(s.loops))
	}
	c, err := s.eng.Restore(loop, fd, pending, output)
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
