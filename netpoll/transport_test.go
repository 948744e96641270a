package netpoll

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// frames is a toy Transport: each unit is a length byte and that many
// payload bytes XORed with 0x20 (so a bypassed byte shows). An empty unit
// is a ping: the transport answers with wire bytes "P" itself (after the
// output written before it). Close sends an empty unit.
type frames struct {
	attached, closed atomic.Int32
	failWrap         atomic.Bool // Wrap fails (e.g. a key that can seal no more)
}

func (f *frames) Attach(c *Conn, state any) error {
	if state.(string) != "hello" {
		return errors.New("bad state")
	}
	f.attached.Add(1)
	return nil
}

func (f *frames) Unwrap(c *Conn, in []byte) (n, consumed int, err error) {
	for consumed < len(in) {
		size := int(in[consumed])
		if len(in)-consumed < 1+size {
			break
		}
		if size == 0 {
			c.WriteWire([]byte("P"))
		}
		for _, b := range in[consumed+1 : consumed+1+size] {
			in[n] = b ^ 0x20
			n++
		}
		consumed += 1 + size
	}
	return n, consumed, nil
}

func (f *frames) Wrap(c *Conn, dst, p []byte) ([]byte, error) {
	if f.failWrap.Load() {
		return dst, errors.New("frames: cannot wrap")
	}
	for len(p) > 0 {
		k := min(len(p), 255)
		dst = append(dst, byte(k))
		for _, b := range p[:k] {
			dst = append(dst, b^0x20)
		}
		p = p[k:]
	}
	return dst, nil
}

func (f *frames) Close(c *Conn, reason error) { c.WriteWire([]byte{0}) }
func (f *frames) Closed(c *Conn)              { f.closed.Add(1) }

func frame(s string) []byte {
	b := []byte{byte(len(s))}
	for i := 0; i < len(s); i++ {
		b = append(b, s[i]^0x20)
	}
	return b
}

// TestTransport: bytes of an adopted connection pass through the
// Transport both ways, units split anywhere are reassembled, the
// transport's own wire bytes keep their place, Close can still write, and
// a plain listener group bypasses it.
func TestTransport(t *testing.T) {
	checkLeaks(t)
	tr := &frames{}
	var ep atomic.Pointer[Engine] // set before any client connects
	e := startEngine(t, Config{Transport: tr, ExtraAddrs: []string{"127.0.0.1:0"},
		Handoff: func(loop, group, fd int) bool {
			if group != 0 {
				return false
			}
			go ep.Load().Adopt(loop, fd, "hello", frame("early")) // as a handshake would, from another goroutine
			return true
		}})
	ep.Store(e)
	defer e.Close()
	c, err := net.Dial("tcp", e.Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The initial bytes arrive first; then a unit split in the middle and
	// a ping between two units. Unwrap answers the ping before the handler
	// sees the payload of the pass (after the output written before it:
	// the echo of "early"), and the echo of that pass, "ab" and "cd", is
	// one coalesced write: one unit.
	wire := append(frame("ab"), 0)
	wire = append(wire, frame("cd")...)
	c.Write(wire[:2])
	time.Sleep(20 * time.Millisecond) // let the loop see the partial unit on its own (not a timed assertion)
	c.Write(wire[2:])
	want := append(append(frame("early"), 'P'), frame("abcd")...)
	got := make([]byte, len(want))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read: %v (got %q)", err, got)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("wire %q, want %q", got, want)
	}
	// The plain group bypasses the transport.
	p, err := net.Dial("tcp", e.Addrs()[1].String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.Write([]byte("plain"))
	pb := make([]byte, 5)
	p.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(p, pb); err != nil || string(pb) != "plain" {
		t.Fatalf("plain group: %q, %v", pb, err)
	}
	if n := tr.attached.Load(); n != 1 {
		t.Fatalf("attached %d, want 1", n)
	}
	// The peer's end of stream closes the connection (Conn.Close): the
	// transport's Close still writes its empty unit, then the socket closes.
	c.(*net.TCPConn).CloseWrite()
	end, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(end, []byte{0}) {
		t.Fatalf("after end of stream: %q, %v; want the close unit, then EOF", end, err)
	}
	e.Close()
	if n := tr.closed.Load(); n != 1 {
		t.Fatalf("Transport.Closed called %d times, want 1 (the plain connection bypasses it)", n)
	}
}

// TestExportNeverSendsPlaintext: output a transport connection got while
// its loop was parked is wrapped by Export; if the wrap fails, the
// unwrapped bytes are dropped from the exported output, never handed on
// to be written to the wire in the clear.
func TestExportNeverSendsPlaintext(t *testing.T) {
	checkLeaks(t)
	tr := &frames{}
	var ep atomic.Pointer[Engine]
	e := startEngine(t, Config{Transport: tr, Loops: 1,
		Handoff: func(loop, group, fd int) bool {
			go ep.Load().Adopt(loop, fd, "hello", nil)
			return true
		}})
	ep.Store(e)
	defer e.Close()
	c, err := net.Dial("tcp", e.Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(frame("x")) // echoed: the connection is live on its loop
	got := make([]byte, len(frame("x")))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if err := e.Freeze(); err != nil {
		t.Fatal(err)
	}
	defer e.Thaw()
	var h Handle
	e.loops[0].slab.Range(func(_ uint32, conn *Conn) bool { h = conn.Handle(); return false })
	conn := e.Conn(h)
	if conn == nil {
		t.Fatal("no connection on the frozen loop")
	}
	for _, fail := range []bool{false, true} {
		tr.failWrap.Store(fail)
		conn.Write([]byte("secret")) // as a handler's export may, while parked
		xs, err := e.Export()
		if err != nil || len(xs) != 1 {
			t.Fatalf("export: %d connections, %v", len(xs), err)
		}
		out := xs[0].Output
		if bytes.Contains(out, []byte("secret")) {
			t.Fatalf("failWrap %v: exported output %q holds the plaintext", fail, out)
		}
		// The first pass's unit, wrapped, stays; the second pass's
		// plaintext, which could not be wrapped, is not there.
		if want := frame("secret"); !bytes.Equal(out, want) {
			t.Fatalf("failWrap %v: exported output %q, want the first pass's unit %q", fail, out, want)
		}
	}
}
