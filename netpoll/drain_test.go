package netpoll

import (
	"bytes"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// replyThenRefuse answers the first input with a large reply and closes the
// connection, as a server refusing a client mid-stream does (edge's
// store_full): the client is still writing, so the server closes with
// unread input.
type replyThenRefuse struct {
	Echo
	reply []byte
}

var errRefused = errors.New("refused")

func (h replyThenRefuse) OnData(c *Conn, data []byte) (int, error) {
	c.Write(h.reply)
	return len(data), errRefused
}

// TestCloseWithUnreadInputDeliversOutput: what a connection was sent before
// the handler closed it arrives in full even though the peer was still
// writing. A plain close with unread input makes the kernel reset the
// connection and drop what it still held to send; the drain after a
// half-close keeps it until the peer has acknowledged it. The client reads
// slowly through a small receive buffer, so most of the reply is still in
// the server's kernel when the close comes.
func TestCloseWithUnreadInputDeliversOutput(t *testing.T) {
	checkLeaks(t)
	var closes closeLog
	reply := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	e := startEngine(t, Config{Handler: replyThenRefuse{Echo: Echo{Closed: closes.add}, reply: reply}})
	defer e.Close()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10) })
		return serr
	}}
	c, err := d.Dial("tcp", e.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() { // keeps writing after the server's close, as a pipelining client does
		chunk := bytes.Repeat([]byte("w"), 64<<10)
		for i := 0; i < 64; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}()
	waitFor(t, "the refusal", func() bool { return closes.count(errRefused) == 1 })
	time.Sleep(100 * time.Millisecond) // the old close reset the connection here
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	var got int
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		got += n
		if err != nil {
			if got != len(reply) {
				t.Fatalf("read %d of the %d bytes sent before the close, then %v", got, len(reply), err)
			}
			if err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("after the reply: %v, want the end of the stream", err)
			}
			break
		}
	}
	waitFor(t, "the drained socket closed", func() bool {
		for _, s := range e.Stats() {
			if s.Draining != 0 {
				return false
			}
		}
		return true
	})
}
