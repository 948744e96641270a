package bench

import (
	crand "crypto/rand"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sys/unix"
)

// The worker's connection engine: one epoll loop on one locked thread, no
// goroutine per connection. Connections are indexed by slot; an epoll event
// carries (slot, generation) and a stale generation drops the event, so an
// event for a closed socket never reaches a reused slot.

const (
	maxEvents   = 512       // epoll_wait batch: enough to drain a busy loop in few calls
	readBufSize = 256 << 10 // one shared read buffer for every connection
	maxOutBuf   = 16 << 20  // a connection's unsent bytes beyond which sends are dropped (counted)
	sendBatch   = 8192      // open-loop sends per loop pass, so reads are never starved
	housekeepNs = int64(50 * time.Millisecond)
	tickNs      = int64(250 * time.Millisecond) // worker reports: the parent's live line lags at most this
)

type connState uint8

const (
	stNew        connState = iota // never started
	stConnecting                  // connect(2) in progress
	stUpgrade                     // WebSocket: upgrade request sent, waiting for the 101
	stHandshake                   // CONNECT sent, waiting for CONNACK
	stUp                          // CONNACK 0 received
	stDown                        // closed; may be restarted (offline, churn)
	stFailed                      // closed for good
)

type conn struct {
	fd       int
	gen      int32
	st       connState
	dirty    bool
	touched  bool
	queued   bool
	started  int64 // connect start, ns
	lastSend int64
	toggle   int64 // offline: next drop/return; churn: next disconnect
	in       []byte
	out      []byte
	ws       wsIn // WebSocket (Setup.WS without TLS): the server's frame being read
}

type pairState struct {
	nextSeq    uint64
	lowUnacked uint64
	ackedN     int64
	inflight   int
	nextRecv   uint64 // one past the highest sequence received: lower ones arriving later are reordered
	acked      bitset
	recv       bitset
}

type bitset []uint64

func (b *bitset) set(i uint64) (was bool) {
	w := int(i / 64)
	for w >= len(*b) {
		*b = append(*b, 0)
	}
	m := uint64(1) << (i % 64)
	was = (*b)[w]&m != 0
	(*b)[w] |= m
	return was
}

func (b bitset) has(i uint64) bool {
	w := int(i / 64)
	return w < len(b) && b[w]&(1<<(i%64)) != 0
}

type engine struct {
	s       Setup
	w       *workload
	ep      int
	target  unix.SockaddrInet4
	src     []netip.Addr
	srcNext int
	events  [maxEvents]unix.EpollEvent
	rbuf    []byte
	conns   []conn
	pairs   []pairState
	dirty   []int32
	queue   []int32 // connections waiting to (re)connect, FIFO
	qhead   int

	want      int     // target connection count
	ramp      float64 // connects per second, 0 = no limit
	rampStart int64
	rampDone  int64 // connects started since rampStart
	pending   int
	up        int

	rate      float64 // open loop: messages per second; 0 = stopped
	closed    bool    // closed loop
	rateStart int64
	rateDone  uint64
	rr        int
	draining  bool

	t        Tick
	lat      *hdr.PackedHistogram // sparse: a tick walks only populated buckets
	connLat  *hdr.PackedHistogram
	scratch  []byte
	payload  []byte
	nextHK   int64
	rng      *rand.Rand
	relay    *relayDialer // Setup.TLS: connections go through a relay (relay_linux.go)
	ws       bool         // Setup.WS without TLS: the engine frames itself (ws_linux.go)
	wsKey    [4]byte
	wsReq    []byte // the upgrade request
	wsAccept []byte // the Sec-WebSocket-Accept line the 101 must carry
}

func newEngine(s Setup) (e *engine, err error) {
	ap, err := netip.ParseAddrPort(s.Target)
	if err != nil || !ap.Addr().Is4() {
		return nil, fmt.Errorf("parse target %q (want IPv4 host:port): %w", s.Target, ErrBadOption)
	}
	w := workloads[s.Mode]
	if w == nil {
		return nil, fmt.Errorf("run workload %q: %w", s.Mode, ErrBadOption)
	}
	e = &engine{s: s, w: w, rbuf: make([]byte, readBufSize), lat: newPacked(), connLat: newPacked(),
		rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(s.Worker)))}
	e.target = unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	for _, a := range s.Src {
		p, err := netip.ParseAddr(a)
		if err != nil || !p.Is4() {
			return nil, fmt.Errorf("parse source address %q: %w", a, ErrBadOption)
		}
		e.src = append(e.src, p)
	}
	if s.Size < payloadHeader {
		e.s.Size = payloadHeader
	}
	e.payload = make([]byte, e.s.Size)
	for i := payloadHeader; i < len(e.payload); i++ {
		e.payload[i] = 'x'
	}
	e.pairs = make([]pairState, s.Pairs)
	e.t.Worker = s.Worker
	e.t.Errors = map[string]int64{}
	if s.WS != "" && !s.TLS {
		e.ws = true
		var key [16]byte
		crand.Read(key[:])
		crand.Read(e.wsKey[:])
		e.wsReq, e.wsAccept = wsRequest(s.Target, s.WS, key)
	}
	if s.TLS {
		if e.relay, err = newRelayDialer(s); err != nil {
			return nil, err
		}
	}
	e.ep, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	return e, nil
}

func (e *engine) errorf(kind string) { e.t.Errors[kind]++ }

// errKind names a socket error for the error table.
func errKind(err error) string {
	var en syscall.Errno
	if errors.As(err, &en) {
		switch en {
		case unix.ECONNREFUSED:
			return "refused"
		case unix.ECONNRESET:
			return "reset"
		case unix.ETIMEDOUT:
			return "timeout"
		case unix.EADDRNOTAVAIL:
			return "addr_not_avail"
		case unix.EMFILE, unix.ENFILE:
			return "too_many_files"
		case unix.EPIPE:
			return "broken_pipe"
		}
		return "errno_" + unix.ErrnoName(en)
	}
	if errors.Is(err, ErrMalformed) || errors.Is(err, ErrTooLarge) {
		return "protocol"
	}
	return "other"
}

func (e *engine) now() int64 { return time.Now().UnixNano() }

// setConns grows (never shrinks) the connection set to n at ramp per second.
func (e *engine) setConns(n int, ramp float64) {
	e.ramp, e.rampStart, e.rampDone = ramp, e.now(), 0
	for len(e.conns) < n {
		e.conns = append(e.conns, conn{fd: -1})
		e.enqueue(len(e.conns) - 1)
	}
	e.want = n
}

func (e *engine) enqueue(i int) {
	c := &e.conns[i]
	if c.queued {
		return
	}
	c.queued = true
	e.queue = append(e.queue, int32(i))
}

// startDue starts queued connects allowed by the ramp and MaxPending.
func (e *engine) startDue(now int64) {
	for e.qhead < len(e.queue) && e.pending < e.s.MaxPending {
		if e.ramp > 0 && float64(e.rampDone) >= e.ramp*float64(now-e.rampStart)/1e9+1 {
			return
		}
		i := int(e.queue[e.qhead])
		e.qhead++
		if e.qhead > 4096 && e.qhead*2 > len(e.queue) {
			e.queue = append(e.queue[:0], e.queue[e.qhead:]...)
			e.qhead = 0
		}
		e.conns[i].queued = false
		e.rampDone++
		e.dial(i, now)
	}
}

func (e *engine) dial(i int, now int64) {
	c := &e.conns[i]
	e.t.Attempts++
	if e.relay != nil {
		e.dialRelay(i, now)
		return
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		e.errorf(errKind(err))
		c.st = stFailed
		return
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if len(e.src) > 0 {
		// IP_BIND_ADDRESS_NO_PORT defers the port choice to connect(2), so
		// each (source, destination) pair gets its own ephemeral port range
		// (ip(7), Linux 4.2).
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		a := e.src[e.srcNext%len(e.src)]
		e.srcNext++
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: a.As4()}); err != nil {
			unix.Close(fd)
			e.errorf(errKind(err))
			c.st = stFailed
			return
		}
	}
	c.gen++
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(i), Pad: c.gen}
	if err := unix.EpollCtl(e.ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		unix.Close(fd)
		e.errorf("epoll_ctl")
		c.st = stFailed
		return
	}
	c.fd, c.st, c.started, c.lastSend = fd, stConnecting, now, now
	c.in, c.out = c.in[:0], c.out[:0]
	e.pending++
	err = unix.Connect(fd, &e.target)
	if err != nil && err != unix.EINPROGRESS {
		e.fail(i, err)
	}
}

// close closes connection i; kind != "" counts an error. retry puts an
// offline receiver or churn connection back on the connect queue.
func (e *engine) closeConn(i int, kind string) {
	c := &e.conns[i]
	switch c.st {
	case stConnecting, stUpgrade, stHandshake:
		e.pending--
	case stUp:
		e.up--
	default:
		return
	}
	if kind != "" {
		e.errorf(kind)
	}
	c.gen++
	unix.Close(c.fd)
	c.fd = -1
	c.in, c.out = c.in[:0], c.out[:0]
	c.ws = wsIn{}
	c.st = stFailed
	if e.restartable(i) {
		c.st = stDown
		c.toggle = e.now() + int64(500*time.Millisecond)
	}
}

func (e *engine) fail(i int, err error) { e.closeConn(i, errKind(err)) }

func (e *engine) restartable(i int) bool { return e.w.restart != nil && e.w.restart(e, i) }

func (e *engine) queueBytes(i int, b []byte) {
	c := &e.conns[i]
	if len(c.out)+len(b) > maxOutBuf {
		e.errorf("send_overflow")
		return
	}
	if e.ws {
		c.out = appendWSFrame(c.out, b, e.wsKey)
	} else {
		c.out = append(c.out, b...)
	}
	c.lastSend = e.now()
	if !c.dirty {
		c.dirty = true
		e.dirty = append(e.dirty, int32(i))
	}
}

func (e *engine) flush(i int) {
	c := &e.conns[i]
	for len(c.out) > 0 && c.st >= stUpgrade && c.st <= stUp {
		n, err := unix.Write(c.fd, c.out)
		if n > 0 {
			c.out = c.out[:copy(c.out, c.out[n:])]
			continue
		}
		if err == unix.EAGAIN {
			return // EPOLLOUT (edge-triggered) resumes the flush
		}
		if err == unix.EINTR {
			continue
		}
		e.fail(i, err)
		return
	}
}

func (e *engine) flushDirty() {
	for _, i := range e.dirty {
		e.conns[i].dirty = false
		e.flush(int(i))
	}
	e.dirty = e.dirty[:0]
}

func (e *engine) onEvent(ev *unix.EpollEvent, now int64) {
	i := int(ev.Fd)
	if i < 0 || i >= len(e.conns) {
		return
	}
	c := &e.conns[i]
	if c.gen != ev.Pad || c.fd < 0 {
		return // stale event for a closed generation
	}
	if c.st == stConnecting {
		if ev.Events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
			return
		}
		soerr, err := unix.GetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err == nil && soerr != 0 {
			err = syscall.Errno(soerr)
		}
		if err != nil {
			e.fail(i, err)
			return
		}
		if e.ws {
			e.sendUpgrade(i)
		} else {
			e.sendConnect(i)
		}
	}
	if ev.Events&unix.EPOLLOUT != 0 && len(c.out) > 0 {
		e.flush(i)
		if c.fd < 0 || c.gen != ev.Pad {
			return
		}
	}
	if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		e.readConn(i, ev.Pad)
	}
}

// sendConnect sends connection i's CONNECT.
func (e *engine) sendConnect(i int) {
	e.conns[i].st = stHandshake
	e.scratch = appendClientID(e.scratch[:0], e.s.Prefix, e.s.Worker, i)
	id := string(e.scratch)
	user := e.s.Username
	if e.s.Profile == "inbox" && user == "" {
		user = id
	}
	e.scratch = appendConnect(e.scratch[:0], connectPacket{ClientID: id, Username: user,
		Password: e.s.Password, Keepalive: uint16(e.s.KeepaliveS), Clean: e.s.Clean})
	e.queueBytes(i, e.scratch)
}

func (e *engine) readConn(i int, gen int32) {
	for {
		c := &e.conns[i]
		if c.gen != gen || c.fd < 0 {
			return
		}
		n, err := unix.Read(c.fd, e.rbuf)
		if n > 0 {
			data := e.rbuf[:n]
			if e.ws {
				var werr error
				if data, werr = e.wsRead(i, data); werr != nil {
					e.closeConn(i, werr.Error())
					return
				}
				if len(data) == 0 {
					if n < len(e.rbuf) {
						return // drained
					}
					continue
				}
			}
			if len(c.in) > 0 {
				c.in = append(c.in, data...)
				data = c.in
			}
			used, perr := e.handle(i, data, gen)
			if c.gen != gen {
				return // closed while handling
			}
			if perr != nil {
				e.fail(i, perr)
				return
			}
			rest := data[used:]
			if len(c.in) > 0 {
				c.in = c.in[:copy(c.in, rest)]
			} else if len(rest) > 0 {
				c.in = append(c.in[:0], rest...)
			}
			if n < len(e.rbuf) {
				return // drained (a new edge reports more)
			}
			continue
		}
		if n == 0 && err == nil {
			e.closeConn(i, "closed_by_server")
			return
		}
		if err == unix.EAGAIN {
			return
		}
		if err == unix.EINTR {
			continue
		}
		e.fail(i, err)
		return
	}
}

// handle consumes the complete packets in data.
func (e *engine) handle(i int, data []byte, gen int32) (int, error) {
	used := 0
	for {
		n, p, err := parsePacket(data[used:])
		if err != nil || n == 0 {
			return used, err
		}
		used += n
		e.onPacket(i, &p)
		if e.conns[i].gen != gen {
			return used, nil
		}
	}
}

func (e *engine) onPacket(i int, p *packet) {
	c := &e.conns[i]
	now := e.now()
	switch p.Type {
	case pktConnack:
		if c.st != stHandshake {
			e.closeConn(i, "protocol")
			return
		}
		if p.Code != 0 {
			e.closeConn(i, fmt.Sprintf("connack_%d", p.Code))
			return
		}
		c.st = stUp
		e.pending--
		e.up++
		e.t.Connected++
		_ = e.connLat.RecordValue(clampUs((now - c.started) / 1000))
		if e.w.subscribe != nil {
			if filter, qos, ok := e.w.subscribe(e, i, e.scratch[:0]); ok {
				topic := string(filter)
				e.scratch = appendSubscribe(filter[:0], 1, topic, qos)
				e.queueBytes(i, e.scratch)
			}
		}
		if e.w.up != nil {
			e.w.up(e, i, now)
		}
		if e.closed && e.isSender(i) {
			e.kickClosed(i / 2)
		}
	case pktPublish:
		qos := (p.Flags >> 1) & 3
		if qos == 1 {
			e.scratch = appendPuback(e.scratch[:0], p.PID)
			e.queueBytes(i, e.scratch)
		}
		kind, ts, seq, idx, ok := getHeader(p.Payload)
		if !ok {
			return // a receipt or foreign traffic
		}
		switch kind {
		case kindTouch:
			if int(idx) < len(e.conns) && !e.conns[idx].touched {
				e.conns[idx].touched = true
				e.t.Touched++
			}
		case kindMsg:
			_ = e.lat.RecordValue(clampUs((now - ts) / 1000))
			e.t.Received++
			if e.w.perPair {
				if int(idx) >= len(e.pairs) {
					return
				}
				ps := &e.pairs[idx]
				if e.w.exactlyOnce {
					if ps.recv.set(seq) {
						e.t.Dups++
						e.t.Received--
						return
					}
					if ps.acked.has(seq) {
						e.t.Missing--
					}
				}
				if seq < ps.nextRecv {
					e.t.Reordered++
				} else {
					ps.nextRecv = seq + 1
				}
				if e.closed {
					ps.inflight--
					e.kickClosed(int(idx))
				}
			}
		}
	case pktPuback:
		e.t.Acked++
		if e.isSender(i) && e.w.exactlyOnce {
			ps := &e.pairs[i/2]
			base := ps.lowUnacked
			s := base + uint64((int(p.PID)-1-int(base%65535)+65535)%65535)
			if s >= ps.nextSeq || ps.acked.has(s) {
				e.errorf("puback_unknown")
				return
			}
			ps.acked.set(s)
			ps.ackedN++
			if !ps.recv.has(s) {
				e.t.Missing++
			}
			for ps.acked.has(ps.lowUnacked) {
				ps.lowUnacked++
			}
		}
	case pktSuback:
		if p.Code == 0x80 {
			e.closeConn(i, "suback_refused")
			return
		}
		e.t.Subscribed++
	}
}

// sendMsg publishes the next message of pair (or fanout stream) pi from
// connection i with intended send time ts.
func (e *engine) sendMsg(i, pi int, ts int64) {
	var seq uint64
	if pi < len(e.pairs) {
		ps := &e.pairs[pi]
		seq = ps.nextSeq
		ps.nextSeq++
	} else {
		seq = uint64(e.t.Sent)
	}
	putHeader(e.payload, kindMsg, ts, seq, uint32(pi))
	topic := e.w.topic(e, pi, seq, e.scratch[:0])
	n := len(topic)
	buf := appendPublish(topic, topic[:n:n], e.s.QoS, uint16(seq%65535)+1, e.payload)
	e.scratch = buf
	e.queueBytes(i, buf[n:])
	e.t.Sent++
}

// kickClosed tops up pair pi's closed-loop window.
func (e *engine) kickClosed(pi int) {
	if e.draining {
		return
	}
	s := 2*pi + 1
	if s >= len(e.conns) || e.conns[s].st != stUp || e.conns[2*pi].st != stUp {
		return
	}
	ps := &e.pairs[pi]
	for ps.inflight < max(1, e.s.Window) {
		ps.inflight++
		e.sendMsg(s, pi, e.now())
	}
}

// sendDue sends the open-loop messages whose intended time has passed.
func (e *engine) sendDue(now int64) {
	if e.rate <= 0 || e.draining {
		return
	}
	// Message n is due at rateStart + n/rate, so n+1 messages are due once
	// that time has passed.
	due := uint64(e.rate*float64(now-e.rateStart)/1e9) + 1
	if e.w.sender == nil {
		return
	}
	if _, _, ok := e.w.sender(e, e.rr); !ok {
		return
	}
	for k := 0; e.rateDone < due && k < sendBatch; k++ {
		ts := e.rateStart + int64(float64(e.rateDone)*1e9/e.rate)
		e.rateDone++
		ci, pi, _ := e.w.sender(e, e.rr)
		e.rr++
		if ci >= len(e.conns) || e.conns[ci].st != stUp {
			e.errorf("sender_down")
			continue
		}
		e.sendMsg(ci, pi, ts)
	}
}

// housekeep runs timeouts, keepalives, offline toggles and churn.
func (e *engine) housekeep(now int64) {
	ka := int64(e.s.KeepaliveS) * int64(time.Second) / 2
	for i := range e.conns {
		c := &e.conns[i]
		switch c.st {
		case stConnecting, stUpgrade, stHandshake:
			if now-c.started > e.s.ConnectTimeout {
				e.closeConn(i, "timeout")
			}
		case stUp:
			if ka > 0 && now-c.lastSend > ka {
				e.queueBytes(i, appendPingreq(e.scratch[:0]))
			}
			if e.w.toggle != nil {
				e.w.toggle(e, i, now)
			}
		case stDown:
			if now >= c.toggle || e.draining {
				e.enqueue(i)
			}
		}
	}
}

// touch sends each idle connection's one message to itself.
func (e *engine) touch() {
	now := e.now()
	for i := range e.conns {
		if e.conns[i].st != stUp {
			continue
		}
		putHeader(e.payload, kindTouch, now, 0, uint32(i))
		var topic []byte
		if e.s.Profile == "inbox" {
			topic = appendInboxTopic(e.scratch[:0], e.s.Prefix, e.s.Worker, i, 0)
		} else {
			topic = appendTopic(e.scratch[:0], e.s.Prefix, e.s.Worker, i)
		}
		n := len(topic)
		qos := byte(0)
		if e.s.Profile == "inbox" {
			qos = 1
		}
		buf := appendPublish(topic, topic[:n:n], qos, 1, e.payload)
		e.scratch = buf
		e.queueBytes(i, buf[n:])
	}
}

func (e *engine) command(c Command) (stop bool) {
	switch c.Op {
	case "conns":
		e.setConns(c.Conns, c.Ramp)
	case "rate":
		e.rate, e.closed = c.Rate, c.Closed
		e.rateStart, e.rateDone = e.now(), 0
		if e.closed {
			for pi := range e.pairs {
				e.kickClosed(pi)
			}
		}
	case "touch":
		e.touch()
	case "drain":
		e.draining = true
		e.rate, e.closed = 0, false
	case "stop":
		return true
	}
	return false
}

func (e *engine) tick(final bool) Tick {
	t := e.t
	t.Up, t.Pending = e.up, e.pending
	t.Errors = make(map[string]int64, len(e.t.Errors))
	for k, v := range e.t.Errors {
		t.Errors[k] = v
	}
	if e.relay != nil {
		e.relay.addErrors(t.Errors)
	}
	t.Lat, t.Conn = buckets(e.lat), buckets(e.connLat)
	e.lat.Reset()
	e.connLat.Reset()
	if final {
		t.Final = true
		if e.w.exactlyOnce {
			for pi := range e.pairs {
				ps := &e.pairs[pi]
				for s := uint64(0); s < ps.nextSeq; s++ {
					if ps.acked.has(s) && !ps.recv.has(s) {
						t.Lost++
					}
				}
				t.Unacked += int64(ps.nextSeq) - ps.ackedN
			}
		}
	}
	return t
}

// shutdown sends DISCONNECT on every live connection and closes all sockets.
func (e *engine) shutdown() {
	for i := range e.conns {
		c := &e.conns[i]
		if c.st == stUp {
			e.queueBytes(i, appendDisconnect(e.scratch[:0]))
			e.flush(i)
		}
		if c.fd >= 0 {
			unix.Close(c.fd)
			c.fd = -1
			c.gen++
		}
	}
	unix.Close(e.ep)
}

// run is the loop: commands arrive on cmds, ticks leave through emit.
func (e *engine) run(cmds <-chan Command, emit func(Tick)) {
	nextTick := e.now() + tickNs
	for {
		timeout := 50
		if e.rate > 0 || e.qhead < len(e.queue) {
			timeout = 1
		}
		n, err := unix.EpollWait(e.ep, e.events[:], timeout)
		if err != nil && err != unix.EINTR {
			emit(Tick{Worker: e.s.Worker, Final: true, FatalError: os.NewSyscallError("epoll_wait", err).Error()})
			return
		}
		now := e.now()
		for k := 0; k < n; k++ {
			e.onEvent(&e.events[k], now)
		}
		for more := true; more; {
			select {
			case c, ok := <-cmds:
				if !ok || e.command(c) {
					e.flushDirty()
					e.shutdown()
					emit(e.tick(true))
					return
				}
			default:
				more = false
			}
		}
		now = e.now()
		e.startDue(now)
		e.sendDue(now)
		if now >= e.nextHK {
			e.nextHK = now + housekeepNs
			e.housekeep(now)
		}
		e.flushDirty()
		if now >= nextTick {
			nextTick += tickNs
			emit(e.tick(false))
		}
	}
}

// runEngine runs one worker's engine until a stop command or closed cmds.
func runEngine(s Setup, cmds <-chan Command, emit func(Tick)) error {
	runtime.LockOSThread()
	e, err := newEngine(s)
	if err != nil {
		return err
	}
	e.run(cmds, emit)
	return nil
}
