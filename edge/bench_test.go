package edge

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/internal/edgews"
	"github.com/edgedhq/edged/internal/slab"
	"github.com/edgedhq/edged/internal/wheel"
	"github.com/edgedhq/edged/netpoll"
)

// benchConn is an allocation-free MQTT client side for benchmarks: fixed
// buffers, in-place decoding.
type benchConn struct {
	c   net.Conn
	buf []byte
	n   int
	p   mqtt.Packet
	out []byte
	v5  bool // decode with mqtt.Decode5 (newBenchConn5)

	pendingShift int
}

func newBenchConn(b *testing.B, s *Server, id string) *benchConn {
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	return newBenchConnOn(b, c, id)
}

// newBenchConnOn logs in as id over c (plain TCP or a TLS client).
func newBenchConnOn(b *testing.B, c net.Conn, id string) *benchConn {
	b.Cleanup(func() { c.Close() })
	bc := &benchConn{c: c, buf: make([]byte, 64<<10), out: make([]byte, 0, 256)}
	bc.write(mqtt.AppendConnect(bc.out[:0], &mqtt.Connect{ProtocolName: []byte("MQTT"), ProtocolLevel: 4, ClientID: []byte(id), CleanSession: true}))
	if bc.next().Type != mqtt.TypeConnack || bc.p.ReturnCode != 0 {
		b.Fatalf("connect %s failed", id)
	}
	return bc
}

func (bc *benchConn) write(p []byte) {
	if _, err := bc.c.Write(p); err != nil {
		panic(err)
	}
}

// next decodes the next packet into bc.p (valid until the next call).
func (bc *benchConn) next() *mqtt.Packet {
	if bc.pendingShift > 0 {
		copy(bc.buf, bc.buf[bc.pendingShift:bc.n])
		bc.n -= bc.pendingShift
		bc.pendingShift = 0
	}
	for {
		decode := mqtt.Decode
		if bc.v5 {
			decode = mqtt.Decode5
		}
		k, err := decode(bc.buf[:bc.n], 0, &bc.p)
		if err != nil {
			panic(err)
		}
		if k > 0 {
			// Keep the decoded bytes valid until the next call: shift lazily.
			bc.pendingShift = k
			return &bc.p
		}
		m, err := bc.c.Read(bc.buf[bc.n:])
		if err != nil {
			panic(err)
		}
		bc.n += m
	}
}

// BenchmarkDirectMessage measures the whole 1:1 path over real loopback
// sockets, both users online: A publishes u/B/<mid> (QoS 1), the edge stores
// it and PUBACKs A, delivers u/B/m/A/<mid> to B, B PUBACKs (the edge deletes
// it and stores the delivered receipt), the edge delivers u/A/d/B/<mid> to A,
// A PUBACKs. One op is one message with its receipt. The client side is
// allocation-free, so allocs/op are the server's.
func BenchmarkDirectMessage(b *testing.B) {
	for _, size := range []int{16, 1024} {
		b.Run(fmt.Sprintf("payload=%d", size), func(b *testing.B) {
			s := startServer(b, func(c *Config) { c.PublishRate = -1; c.AdminAddr = "" })
			directMessages(b, size, newBenchConn(b, s, "alice"), newBenchConn(b, s, "bob"))
		})
	}
}

// BenchmarkDirectMessageTLS is BenchmarkDirectMessage over TLS 1.3 (AES-128-GCM
// chosen by crypto/tls's client): the server's record layer opens each
// record in place and seals one record per connection per loop iteration.
// The clients are crypto/tls, so allocs/op include theirs: measured, all of
// them are the client's (crypto/tls's readFromUntil, an atLeastReader per
// record read: -memprofile); the server's side allocates nothing.
func BenchmarkDirectMessageTLS(b *testing.B) {
	for _, size := range []int{16, 1024} {
		b.Run(fmt.Sprintf("payload=%d", size), func(b *testing.B) {
			ts := startTLSServer(b, nil, nil, func(c *Config) { c.PublishRate = -1; c.AdminAddr = "" })
			dialer := func(id string) *benchConn {
				c, err := tls.Dial("tcp", ts.Addr().String(), ts.clientConfig(tls.VersionTLS13))
				if err != nil {
					b.Fatal(err)
				}
				return newBenchConnOn(b, c, id)
			}
			directMessages(b, size, dialer("alice"), dialer("bob"))
		})
	}
}

// BenchmarkDirectMessageWS is BenchmarkDirectMessage over ws:// (the
// client: wsBenchConn, which allocates nothing per frame).
func BenchmarkDirectMessageWS(b *testing.B) {
	for _, size := range []int{16, 1024} {
		b.Run(fmt.Sprintf("payload=%d", size), func(b *testing.B) {
			ws := startWSServer(b, false, func(c *Config, _ *edgews.Config) { c.PublishRate = -1; c.AdminAddr = "" })
			dialer := func(id string) *benchConn {
				nc, err := net.Dial("tcp", ws.ws0)
				if err != nil {
					b.Fatal(err)
				}
				code, wc := wsUpgrade(b, nc, upgradeRequest("/mqtt"))
				if code != http.StatusSwitchingProtocols {
					b.Fatalf("upgrade: %d", code)
				}
				return newBenchConnOn(b, &wsBenchConn{Conn: nc, r: wc.r, out: make([]byte, 0, 4096)}, id)
			}
			directMessages(b, size, dialer("alice"), dialer("bob"))
		})
	}
}

// wsBenchConn is a WebSocket client that reuses its buffers: each Write is
// one masked binary frame (a fixed key: the server does not care), Read
// returns the payload of the server's binary frames.
type wsBenchConn struct {
	net.Conn
	r      *bufio.Reader
	out    []byte
	remain int
	hdr    [10]byte
}

func (c *wsBenchConn) Write(p []byte) (int, error) {
	key := [4]byte{1, 2, 3, 4}
	c.out = append(c.out[:0], 0x82)
	switch {
	case len(p) < 126:
		c.out = append(c.out, 0x80|byte(len(p)))
	default:
		c.out = binary.BigEndian.AppendUint16(append(c.out, 0x80|126), uint16(len(p)))
	}
	c.out = append(c.out, key[:]...)
	for i, x := range p {
		c.out = append(c.out, x^key[i&3])
	}
	_, err := c.Conn.Write(c.out)
	return len(p), err
}

func (c *wsBenchConn) Read(p []byte) (int, error) {
	for c.remain == 0 {
		if _, err := io.ReadFull(c.r, c.hdr[:2]); err != nil {
			return 0, err
		}
		c.remain = int(c.hdr[1] & 0x7F)
		if c.remain == 126 {
			if _, err := io.ReadFull(c.r, c.hdr[2:4]); err != nil {
				return 0, err
			}
			c.remain = int(binary.BigEndian.Uint16(c.hdr[2:4]))
		}
	}
	n, err := c.r.Read(p[:min(len(p), c.remain)])
	c.remain -= n
	return n, err
}

// directMessages runs the measured 1:1 rounds between a (alice) and r (bob).
func directMessages(b *testing.B, size int, a, r *benchConn) {
	msg := mqtt.AppendPublish(nil, "u/bob/m1", make([]byte, size), 1, false, false, 7)
	ack := make([]byte, 4)
	round := func() {
		a.write(msg)
		p := r.next()
		for p.Type != mqtt.TypePublish {
			p = r.next()
		}
		r.write(mqtt.AppendPuback(ack[:0], p.PacketID))
		for {
			p = a.next()
			if p.Type == mqtt.TypePublish {
				a.write(mqtt.AppendPuback(ack[:0], p.PacketID))
				break
			}
		}
	}
	for range 1000 { // warm the pools and buffers
		round()
	}
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		round()
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// simConn mirrors netpoll's 32-byte per-connection record.
type simRec = netpoll.Conn

// BenchmarkSessions simulates N authenticated idle sessions without
// sockets: netpoll's slab record, this package's session record, the
// router's client entry (user table) and a keepalive timer on a wheel, as a
// connection after CONNECT holds them. It reports heap bytes per session and
// the time of a full GC with all of them live.
func BenchmarkSessions(b *testing.B) {
	for _, router := range []bool{false, true} {
		for _, n := range []int{100_000, 1_000_000, 2_000_000} {
			b.Run(fmt.Sprintf("router=%v/sessions=%d", router, n), func(b *testing.B) {
				var perSession, gcMs float64
				for b.Loop() {
					perSession, gcMs = simulateSessions(b, n, router)
				}
				b.ReportMetric(perSession, "heap-B/session")
				b.ReportMetric(gcMs, "gc-ms")
			})
		}
	}
}

// simulateSessions builds n sessions; without the router only the
// pointer-free parts (netpoll record, session record, timer) are built.
func simulateSessions(b *testing.B, n int, router bool) (perSession, gcMs float64) {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	slab := slab.New[simRec]()
	var sess sessions
	reg := newRegistry()
	wheel := wheel.New(0)
	id := make([]byte, 0, 16)
	for i := range n {
		slot, gen, _, err := slab.Alloc()
		if err != nil {
			b.Fatal(err)
		}
		ss := sess.get(slot)
		ss.keepalive = 60
		if router {
			id = strconv.AppendInt(append(id[:0], "1415"...), int64(5550000000+i), 10)
			cl := reg.lock(id, true)
			cl.handle = netpoll.Handle(uint64(gen)<<32 | uint64(slot))
			cl.owner.Store(uint64(cl.handle))
			cl.epoch++
			ss.client, ss.epoch = cl.idx, cl.epoch
			cl.mu.Unlock()
		}
		wheel.Add(slot, int64(9000+i%1000)) // 90 s keepalive at 10 ms ticks
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perSession = float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
	t0 := time.Now()
	runtime.GC()
	gcMs = float64(time.Since(t0).Microseconds()) / 1000
	runtime.KeepAlive(slab)
	runtime.KeepAlive(reg)
	runtime.KeepAlive(wheel)
	runtime.KeepAlive(&sess)
	return perSession, gcMs
}

// BenchmarkDirectMessageWindow is BenchmarkDirectMessage with 32 messages
// in flight (the default in-flight window): one op is a batch of 32
// messages with their receipts. It reports the server's read and write
// system calls per message, from netpoll's loop counters.
func BenchmarkDirectMessageWindow(b *testing.B) {
	const window = 32
	s := startServer(b, func(c *Config) { c.PublishRate = -1; c.AdminAddr = "" })
	a, r := newBenchConn(b, s, "alice"), newBenchConn(b, s, "bob")
	var batch []byte
	for range window {
		batch = mqtt.AppendPublish(batch, "u/bob/m1", make([]byte, 64), 1, false, false, 7)
	}
	acks := make([]byte, 0, 4*window)
	round := func() {
		a.write(batch)
		acks = acks[:0]
		for n := 0; n < window; {
			if p := r.next(); p.Type == mqtt.TypePublish {
				acks = mqtt.AppendPuback(acks, p.PacketID)
				n++
			}
		}
		r.write(acks)
		acks = acks[:0]
		for n, m := 0, 0; n < window || m < window; {
			switch p := a.next(); p.Type {
			case mqtt.TypePublish:
				acks = mqtt.AppendPuback(acks, p.PacketID)
				n++
			case mqtt.TypePuback:
				m++
			}
		}
		a.write(acks)
	}
	for range 100 {
		round()
	}
	sys := func() (n int64) {
		for _, st := range s.eng.Stats() {
			n += st.Reads + st.Writes
		}
		return n
	}
	b.ReportAllocs()
	start, sys0 := time.Now(), sys()
	for b.Loop() {
		round()
	}
	msgs := float64(b.N * window)
	b.ReportMetric(msgs/time.Since(start).Seconds(), "msgs/s")
	b.ReportMetric(float64(sys()-sys0)/msgs, "syscalls/msg")
}
