package netpoll

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgedhq/edged/internal/testenv"
	"go.uber.org/goleak"
)

// closeLog records close reasons; safe for concurrent use.
type closeLog struct {
	mu      sync.Mutex
	reasons []error
}

func (c *closeLog) add(err error) { c.mu.Lock(); c.reasons = append(c.reasons, err); c.mu.Unlock() }
func (c *closeLog) total() int    { c.mu.Lock(); defer c.mu.Unlock(); return len(c.reasons) }

// all returns a copy of the reasons so far (for a failure message: the
// loops may still be adding).
func (c *closeLog) all() []error { c.mu.Lock(); defer c.mu.Unlock(); return slices.Clone(c.reasons) }

func (c *closeLog) count(target error) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, r := range c.reasons {
		if errors.Is(r, target) {
			n++
		}
	}
	return n
}

func startEngine(t *testing.T, cfg Config) *Engine {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Loops == 0 {
		cfg.Loops = 2
	}
	cfg.Logf = t.Logf
	if cfg.Handler == nil {
		cfg.Handler = Echo{}
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	return e
}

// checkLeaks records fds and goroutines and checks both after the test.
func checkLeaks(t *testing.T) {
	t.Helper()
	// The Go runtime's own poller opens its descriptors on first network
	// use and keeps them; start it before counting.
	if l, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		l.Close()
	}
	before := testenv.OpenFDs(t)
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := testenv.OpenFDs(t)
			if n <= before {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("leaked %d file descriptors", n-before)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		goleak.VerifyNone(t, goleak.IgnoreCurrent())
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func totalConns(e *Engine) int64 {
	var n int64
	for _, s := range e.Stats() {
		n += s.Conns
	}
	return n
}

// echoOnce writes msg and reads it back concurrently (large messages would
// otherwise deadlock on full socket buffers).
func echoOnce(c net.Conn, msg []byte) error {
	errc := make(chan error, 1)
	go func() { _, err := c.Write(msg); errc <- err }()
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("read back %d bytes: %w", len(msg), err)
	}
	if err := <-errc; err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return errors.New("echo differs from what was sent")
	}
	return nil
}

// logSize returns a size from 1 B to 256 KiB, uniform in its logarithm.
func logSize(rng *rand.Rand) int {
	return 1 + rng.IntN(1<<uint(rng.IntN(19)))
}

func TestEchoRandomSizes(t *testing.T) {
	checkLeaks(t)
	e := startEngine(t, Config{})
	defer e.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			c, err := net.Dial("tcp", e.Addr().String())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			for k := 0; k < 5; k++ {
				msg := make([]byte, logSize(rng))
				for j := range msg {
					msg[j] = byte(rng.Uint32())
				}
				if err := echoOnce(c, msg); err != nil {
					errs <- err
					return
				}
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitFor(t, "connections to close", func() bool { return totalConns(e) == 0 })
}

func TestPartialWritesSlowReader(t *testing.T) {
	checkLeaks(t)
	// A tiny send buffer forces the engine to queue and arm writability.
	e := startEngine(t, Config{SndBuf: 8192, Loops: 1})
	defer e.Close()
	c, err := net.Dial("tcp", e.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := make([]byte, 2<<20)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	go c.Write(msg)
	got := make([]byte, 0, len(msg))
	buf := make([]byte, 3000)
	for len(got) < len(msg) {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("after %d bytes: %v", len(got), err)
		}
		got = append(got, buf[:n]...)
		if len(got) < 64<<10 {
			time.Sleep(time.Millisecond) // slow at first, so output queues up
		}
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("echo differs")
	}
	var writes int64
	for _, s := range e.Stats() {
		writes += s.Writes
	}
	if writes < 10 {
		t.Fatalf("only %d write calls for 2 MiB through a 4 KiB send buffer: writes were not partial", writes)
	}
}

func TestBacklogCapClosesOnlyTheSlowConnection(t *testing.T) {
	checkLeaks(t)
	var closes closeLog
	e := startEngine(t, Config{SndBuf: 4096, MaxQueued: 256 << 10, Loops: 1, Handler: Echo{Closed: closes.add}})
	defer e.Close()
	stuck, err := net.Dial("tcp", e.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	stuck.(*net.TCPConn).SetReadBuffer(4096)
	good, err := net.Dial("tcp", e.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	// The stuck client writes and never reads.
	go func() {
		chunk := make([]byte, 64<<10)
		for i := 0; i < 64; i++ {
			if _, err := stuck.Write(chunk); err != nil {
				return
			}
		}
	}()
	waitFor(t, "ErrBacklog close", func() bool { return closes.count(ErrBacklog) == 1 })
	waitFor(t, "Backlogs to empty after the close", func() bool { return len(e.Backlogs()) == 0 })
	if err := echoOnce(good, []byte("still here")); err != nil {
		t.Fatalf("other connection affected: %v", err)
	}
}

func TestHalfCloseEchoesEverythingThenCloses(t *testing.T) {
	checkLeaks(t)
	var closes closeLog
	e := startEngine(t, Config{Handler: Echo{Closed: closes.add}})
	defer e.Close()
	c, err := net.Dial("tcp", e.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := bytes.Repeat([]byte("half-close "), 30000)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("got %d bytes back, want %d", len(got), len(msg))
	}
	waitFor(t, "EOF close", func() bool { return closes.count(io.EOF) == 1 })
}

func TestResetByPeer(t *testing.T) {
	checkLeaks(t)
	var closes closeLog
	e := startEngine(t, Config{Handler: Echo{Closed: closes.add}})
	defer e.Close()
	for i := 0; i < 50; i++ {
		c, err := net.Dial("tcp", e.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("x"))
		c.(*net.TCPConn).SetLinger(0) // close sends RST
		c.Close()
	}
	waitFor(t, "all resets handled", func() bool { return totalConns(e) == 0 && closes.total() == 50 })
}

func TestConnectCloseStorm(t *testing.T) {
	checkLeaks(t)
	var live [2]atomic.Int64
	var hookCalls atomic.Int64
	e := startEngine(t, Config{LiveHook: func(loop, n int) { live[loop].Store(int64(n)); hookCalls.Add(1) }})
	defer e.Close()
	var wg sync.WaitGroup
	var fails atomic.Int64
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				c, err := net.Dial("tcp", e.Addr().String())
				if err != nil {
					fails.Add(1)
					continue
				}
				if i%2 == 0 {
					c.Write([]byte("ping"))
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
	if fails.Load() > 0 {
		t.Fatalf("%d dials failed", fails.Load())
	}
	// A closed client's connection may still wait in the listen backlog:
	// wait until every one was accepted, then until all are closed again.
	accepts := func() int64 {
		var n int64
		for _, s := range e.Stats() {
			n += s.Accepts
		}
		return n
	}
	waitFor(t, "storm to drain", func() bool { return accepts() == 2400 && totalConns(e) == 0 })
	waitFor(t, "LiveHook to report zero", func() bool { return live[0].Load() == 0 && live[1].Load() == 0 })
	if hookCalls.Load() < 2 {
		t.Fatalf("LiveHook called %d times during a storm of 2400 connections", hookCalls.Load())
	}
}

// handleRecorder is an Echo that remembers the handles of open connections.
type handleRecorder struct {
	Echo
	mu      sync.Mutex
	handles []Handle
}

func (h *handleRecorder) OnOpen(c *Conn) {
	h.mu.Lock()
	h.handles = append(h.handles, c.Handle())
	h.mu.Unlock()
}

func (h *handleRecorder) last() Handle {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.handles[len(h.handles)-1]
}

func TestPostAndStaleHandle(t *testing.T) {
	checkLeaks(t)
	h := &handleRecorder{}
	e := startEngine(t, Config{Loops: 1, Handler: h})
	defer e.Close()
	c1, err := net.Dial("tcp", e.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "open", func() bool { h.mu.Lock(); defer h.mu.Unlock(); return len(h.handles) == 1 })
	h1 := h.last()
	if err := e.Post(h1, Message{Data: []byte("posted")}); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 6)
	if _, err := io.ReadFull(c1, got); err != nil || string(got) != "posted" {
		t.Fatalf("posted message: %q, %v", got, err)
	}
	c1.Close()
	waitFor(t, "close", func() bool { return totalConns(e) == 0 })
	// The next connection reuses the slot with a new generation.
	c2, err := net.Dial("tcp", e.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	waitFor(t, "second open", func() bool { h.mu.Lock(); defer h.mu.Unlock(); return len(h.handles) == 2 })
	h2 := h.last()
	if uint32(h2) != uint32(h1) {
		t.Fatalf("slot not reused (%d vs %d): test premise broken", uint32(h2), uint32(h1))
	}
	if err := e.Post(h1, Message{Data: []byte("stale!")}); !errors.Is(err, ErrStaleHandle) {
		t.Fatalf("Post to stale handle: %v, want ErrStaleHandle", err)
	}
	if err := e.Post(h2, Message{Data: []byte("fresh!")}); err != nil {
		t.Fatal(err)
	}
	got = make([]byte, 6)
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c2, got); err != nil || string(got) != "fresh!" {
		t.Fatalf("reused slot got %q, %v; want only the fresh message", got, err)
	}
	if err := e.Post(0, Message{}); !errors.Is(err, ErrStaleHandle) {
		t.Fatalf("zero handle: %v", err)
	}
}

func TestFallbackSharedListenerSpreadsConnections(t *testing.T) {
	checkLeaks(t)
	e := startEngine(t, Config{Loops: 2, DisableReusePort: true})
	defer e.Close()
	if e.ReusePort() || len(e.GroupFDs(0)) != 1 {
		t.Fatalf("fallback not in effect: reuse=%v listeners=%d", e.ReusePort(), len(e.GroupFDs(0)))
	}
	for i := 0; i < 20; i++ {
		c, err := net.Dial("tcp", e.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := echoOnce(c, []byte("hi")); err != nil {
			t.Fatal(err)
		}
	}
	st := e.Stats()
	if st[0].Conns != 10 || st[1].Conns != 10 {
		t.Fatalf("round robin gave %d and %d connections, want 10 and 10", st[0].Conns, st[1].Conns)
	}
}

func TestCloseClosesEverythingWithoutLeaks(t *testing.T) {
	checkLeaks(t)
	var closes closeLog
	e := startEngine(t, Config{Handler: Echo{Closed: closes.add}})
	var conns []net.Conn
	for i := 0; i < 100; i++ {
		c, err := net.Dial("tcp", e.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	waitFor(t, "100 open", func() bool { return totalConns(e) == 100 })
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if n := closes.count(ErrShutdown); n != 100 {
		t.Fatalf("handler told of %d shutdown closes, want 100", n)
	}
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("client still connected after Close")
		}
		c.Close()
	}
	if _, err := net.Dial("tcp", e.Addr().String()); err == nil {
		t.Fatal("still accepting after Close")
	}
	if err := e.Post(1<<32, Message{}); !errors.Is(err, ErrClosed) && !errors.Is(err, ErrStaleHandle) {
		t.Fatalf("Post after Close: %v", err)
	}
}

func TestNewFailsCleanly(t *testing.T) {
	checkLeaks(t)
	e := startEngine(t, Config{})
	defer e.Close()
	// The port is taken by a listener outside the reuseport group's owner
	// (different socket, no SO_REUSEPORT): binding must fail, leaking nothing.
	if _, err := New(Config{Addr: "127.0.0.1:99999", Handler: Echo{}}); err == nil {
		t.Fatal("bad address accepted")
	}
	if _, err := New(Config{Addr: "127.0.0.1:0"}); err == nil {
		t.Fatal("missing handler accepted")
	}
	if _, err := New(Config{Addr: "127.0.0.1:0", Loops: 300, Handler: Echo{}}); err == nil {
		t.Fatal("300 loops accepted")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := New(Config{Addr: l.Addr().String(), Handler: Echo{}, DisableReusePort: true}); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("bind to a used port: %v, want EADDRINUSE", err)
	}
}

func TestMain(m *testing.M) {
	if addr := os.Getenv("NETPOLL_TEST_CLIENT"); addr != "" {
		os.Exit(runClientProcess(addr))
	}
	os.Exit(m.Run())
}

func TestPauseAcceptsAndLiveQueueCap(t *testing.T) {
	checkLeaks(t)
	var closes closeLog
	e := startEngine(t, Config{Handler: Echo{Closed: closes.add}, SndBuf: 4096})
	defer e.Close()
	e.PauseAccepts(true)
	time.Sleep(50 * time.Millisecond)            // let the loops see it
	c, err := net.Dial("tcp", e.Addr().String()) // completes in the kernel's backlog
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(100 * time.Millisecond)
	var accepts int64
	for _, s := range e.Stats() {
		accepts += s.Accepts
	}
	if accepts != 0 || !e.AcceptsPaused() {
		t.Fatalf("accepted %d while paused", accepts)
	}
	e.PauseAccepts(false)
	if err := echoOnce(c, []byte("after resume")); err != nil {
		t.Fatal(err)
	}
	if err := e.SetMaxQueued(0); err == nil {
		t.Fatal("SetMaxQueued(0) accepted")
	}
	if err := e.SetMaxQueued(64 << 10); err != nil || e.MaxQueued() != 64<<10 {
		t.Fatalf("SetMaxQueued: %v, now %d", err, e.MaxQueued())
	}
	c.(*net.TCPConn).SetReadBuffer(4096)
	go func() {
		chunk := make([]byte, 32<<10)
		for i := 0; i < 64; i++ {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}()
	waitFor(t, "the lowered cap to close the non-reader", func() bool { return closes.count(ErrBacklog) == 1 })
}

// frameEcho echoes complete frames (one length byte, then that many bytes)
// and leaves partial frames to the engine, so input arrives in pieces while
// the handler writes: the write lends a buffer that can move the loop's
// buffer table under the pending input.
type frameEcho struct{ Echo }

func (frameEcho) OnData(c *Conn, data []byte) (int, error) {
	used := 0
	for len(data)-used >= 1 {
		n := int(data[used])
		if len(data)-used < 1+n {
			break
		}
		c.Write(data[used : used+1+n])
		used += 1 + n
	}
	return used, nil
}

func TestPartialFramesWhileWriting(t *testing.T) {
	checkLeaks(t)
	e := startEngine(t, Config{Loops: 1, Handler: frameEcho{}})
	defer e.Close()
	const n, rounds = 100, 130
	frame := func(k int) []byte { return append([]byte{5}, []byte(fmt.Sprintf("f%04d", k))...) }
	var stream []byte // every connection sends the same stream of 6-byte frames
	for k := 0; k < rounds; k++ {
		stream = append(stream, frame(k)...)
	}
	conns := make([]net.Conn, n)
	sent := make([]int, n)
	for i := range conns {
		c, err := net.Dial("tcp", e.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).SetNoDelay(true)
		defer c.Close()
		conns[i] = c
	}
	// Round r: connection r sends one byte (a partial frame the engine
	// must keep), and every earlier connection sends 6 bytes, completing
	// one frame and starting the next. So the number of connections holding
	// partial input grows each round while the handler writes, and the
	// loop's buffer table grows under pending input.
	for r := 0; r < rounds; r++ {
		for i := 0; i < n && i <= r; i++ {
			size := 6
			if sent[i] == 0 {
				size = 1
			}
			end := min(sent[i]+size, len(stream))
			if _, err := conns[i].Write(stream[sent[i]:end]); err != nil {
				t.Fatal(err)
			}
			sent[i] = end
		}
		time.Sleep(2 * time.Millisecond)
	}
	for i, c := range conns {
		want := stream[:sent[i]/6*6] // only complete frames come back
		got := make([]byte, len(want))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("conn %d: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("conn %d: framed echo differs:\n got %q\nwant %q", i, got, want)
		}
		c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if k, _ := c.Read(make([]byte, 64)); k != 0 {
			t.Fatalf("conn %d: %d extra bytes: frames were handled twice", i, k)
		}
	}
}

func TestBacklogsListsSlowReadersUntilTheyDrain(t *testing.T) {
	checkLeaks(t)
	e := startEngine(t, Config{Loops: 1, SndBuf: 4096})
	defer e.Close()
	// The small receive buffer is set before connect, so the window the
	// handshake advertises is small too and the server's queue is sure to
	// pass 64 KiB; the whole echo then lands within one publish interval,
	// which is what once left Backlogs stale on an idle loop (fixed in
	// Loop.run: it wakes when a skipped publish is due).
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		}); err != nil {
			return err
		}
		return serr
	}}
	c, err := d.Dial("tcp", e.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := bytes.Repeat([]byte("backlog!"), 32<<10) // 256 KiB, not read back yet
	go c.Write(msg)
	waitFor(t, "the slow reader in Backlogs", func() bool {
		b := e.Backlogs()
		return len(b) == 1 && b[0].Queued > 64<<10 && b[0].Loop == 0
	})
	if _, err := io.ReadFull(c, make([]byte, len(msg))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "Backlogs to empty once drained", func() bool { return len(e.Backlogs()) == 0 })
}

func TestExtraAddressGroups(t *testing.T) {
	checkLeaks(t)
	e := startEngine(t, Config{ExtraAddrs: []string{"127.0.0.2:0"}})
	defer e.Close()
	addrs := e.Addrs()
	if len(addrs) != 2 || len(e.GroupFDs(0)) != 2 || len(e.GroupFDs(1)) != 2 || e.GroupFDs(2) != nil {
		t.Fatalf("addrs %v, group fds %v %v", addrs, e.GroupFDs(0), e.GroupFDs(1))
	}
	if !strings.HasPrefix(addrs[1].String(), "127.0.0.2:") {
		t.Fatalf("second group bound to %v", addrs[1])
	}
	for _, a := range addrs {
		c, err := net.Dial("tcp", a.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := echoOnce(c, []byte("group "+a.String())); err != nil {
			t.Fatal(err)
		}
	}
	e.PauseAccepts(true)
	time.Sleep(50 * time.Millisecond)
	e.PauseAccepts(false) // both groups come back
	c, err := net.Dial("tcp", addrs[1].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := echoOnce(c, []byte("after pause")); err != nil {
		t.Fatal(err)
	}
}

// sideEffects closes the second connection and writes to the third from the
// first one's OnClose (found in review: work queued from OnClose was lost).
type sideEffects struct {
	Echo
	mu     sync.Mutex
	hs     []Handle
	closed map[Handle]error
}

func (h *sideEffects) OnOpen(c *Conn) {
	h.mu.Lock()
	h.hs = append(h.hs, c.Handle())
	h.mu.Unlock()
}

func (h *sideEffects) OnClose(c *Conn, reason error) {
	h.mu.Lock()
	h.closed[c.Handle()] = reason
	hs := append([]Handle(nil), h.hs...)
	h.mu.Unlock()
	if c.Handle() != hs[0] {
		return
	}
	l := c.Loop()
	if b := l.Conn(hs[1]); b != nil {
		b.Close(ErrClosedByHandler)
	}
	if cc := l.Conn(hs[2]); cc != nil {
		cc.Write([]byte("bye"))
	}
}

func TestWorkQueuedFromOnCloseIsDone(t *testing.T) {
	checkLeaks(t)
	h := &sideEffects{closed: map[Handle]error{}}
	e := startEngine(t, Config{Loops: 1, Handler: h})
	defer e.Close()
	var cs []net.Conn
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", e.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cs = append(cs, c)
		waitFor(t, "open", func() bool { h.mu.Lock(); defer h.mu.Unlock(); return len(h.hs) == i+1 })
	}
	cs[0].Close() // EOF: OnClose(A) closes B and writes to C
	cs[2].SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 3)
	if _, err := io.ReadFull(cs[2], got); err != nil || string(got) != "bye" {
		t.Fatalf("C got %q, %v: the write from OnClose was not flushed", got, err)
	}
	cs[1].SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := cs[1].Read(make([]byte, 8)); err == nil {
		t.Fatalf("B still open (read %d bytes): the close from OnClose was lost", n)
	}
	waitFor(t, "OnClose(B)", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return errors.Is(h.closed[h.hs[1]], ErrClosedByHandler)
	})
}

func TestExtraAddrsInFallback(t *testing.T) {
	checkLeaks(t)
	e := startEngine(t, Config{Loops: 2, DisableReusePort: true, ExtraAddrs: []string{"127.0.0.1:0"}})
	defer e.Close()
	for _, a := range e.Addrs() {
		c, err := net.Dial("tcp", a.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := echoOnce(c, []byte("fallback group")); err != nil {
			t.Fatal(err)
		}
	}
}

// addrRecorder records each connection's RemoteAddr at OnOpen.
type addrRecorder struct {
	Echo
	mu    sync.Mutex
	addrs []string
}

func (h *addrRecorder) OnOpen(c *Conn) {
	h.mu.Lock()
	h.addrs = append(h.addrs, c.RemoteAddr().String())
	h.mu.Unlock()
}

func TestRemoteAddr(t *testing.T) {
	checkLeaks(t)
	h := &addrRecorder{}
	e := startEngine(t, Config{Loops: 1, Handler: h})
	defer e.Close()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}}
	c, err := d.Dial("tcp", e.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, "open", func() bool { h.mu.Lock(); defer h.mu.Unlock(); return len(h.addrs) == 1 })
	if h.addrs[0] != c.LocalAddr().String() {
		t.Fatalf("RemoteAddr %s, the client is %s", h.addrs[0], c.LocalAddr())
	}
}

// TestPauseAcceptsWaitsForTheLoops: once PauseAccepts(true) returns, no
// loop hands on another socket, even with clients connecting all along (a
// handoff counts the handshakes in progress right after it).
func TestPauseAcceptsWaitsForTheLoops(t *testing.T) {
	checkLeaks(t)
	var handed atomic.Int64
	e := startEngine(t, Config{Handler: Echo{}, Loops: 2, Handoff: func(loop, group, fd int) bool {
		handed.Add(1)
		return false // the loop adopts it as usual
	}})
	defer e.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 3000; i++ { // bounded: at most 3,000 dials each
				select {
				case <-stop:
					return
				default:
				}
				d := net.Dialer{Timeout: 200 * time.Millisecond}
				if c, err := d.Dial("tcp", e.Addr().String()); err == nil {
					c.Close()
				}
			}
		}()
	}
	for handed.Load() < 200 {
		time.Sleep(time.Millisecond)
	}
	e.PauseAccepts(true)
	at := handed.Load()
	time.Sleep(200 * time.Millisecond) // dials go on, into the backlog
	after := handed.Load()
	close(stop)
	wg.Wait()
	if after != at {
		t.Fatalf("%d sockets handed on after PauseAccepts(true) returned", after-at)
	}
	e.PauseAccepts(false)
}
