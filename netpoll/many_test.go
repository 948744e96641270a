package netpoll

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"
)

// runClientProcess is the client side of TestEcho10kConnections, run in a
// child process so that neither process nears the 20,000 open-file limit:
// it opens NETPOLL_TEST_CONNS connections from NETPOLL_TEST_SRC, echoes one
// message of random size (1 B to 256 KiB) on each while all stay open, then
// closes them all.
func runClientProcess(addr string) int {
	n, _ := strconv.Atoi(os.Getenv("NETPOLL_TEST_CONNS"))
	src := os.Getenv("NETPOLL_TEST_SRC")
	d := net.Dialer{Timeout: 20 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		conns    []net.Conn
		firstErr error
		bytes    int64
	)
	sem := make(chan struct{}, 256) // dials in flight: stay under the listen backlog
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			c, err := d.Dial("tcp", addr)
			<-sem
			if err == nil {
				rng := rand.New(rand.NewPCG(uint64(i), 99))
				msg := make([]byte, logSize(rng))
				for j := range msg {
					msg[j] = byte(rng.Uint32())
				}
				c.SetDeadline(time.Now().Add(60 * time.Second))
				err = echoOnce(c, msg)
				mu.Lock()
				bytes += int64(len(msg))
				conns = append(conns, c)
				mu.Unlock()
			}
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("connection %d: %w", i, err)
				}
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	held := len(conns)
	for _, c := range conns {
		c.Close()
	}
	if firstErr != nil {
		fmt.Fprintln(os.Stderr, firstErr)
		return 1
	}
	fmt.Printf("echoed %d connections, %d bytes, %d held at once\n", n, bytes, held)
	return 0
}

func TestEcho10kConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: 10,000 connections take a while")
	}
	checkLeaks(t)
	e := startEngine(t, Config{})
	defer e.Close()
	peak := int64(0)
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				if n := totalConns(e); n > peak {
					peak = n
				}
			}
		}
	}()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "NETPOLL_TEST_CLIENT="+e.Addr().String(), "NETPOLL_TEST_CONNS=10000", "NETPOLL_TEST_SRC=127.0.0.2")
	out, err := cmd.CombinedOutput()
	close(stop)
	<-stopped
	t.Logf("client: %s", out)
	if err != nil {
		t.Fatalf("client process: %v", err)
	}
	waitFor(t, "all 10,000 to close", func() bool { return totalConns(e) == 0 })
	if peak < 9000 {
		t.Errorf("peak %d concurrent connections seen by the engine; the client holds all 10,000 open", peak)
	}
	var accepts int64
	for _, s := range e.Stats() {
		accepts += s.Accepts
	}
	if accepts != 10000 {
		t.Fatalf("accepted %d, want 10000", accepts)
	}
}
