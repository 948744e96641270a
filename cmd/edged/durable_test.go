package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// freeAddr returns a loopback address with a port nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// pahoConnect connects a fresh Paho client (no automatic reconnect, so it
// never resends on its own: a publish it lost is "unknown" to the test).
func pahoConnect(addr, id string, h paho.MessageHandler) (paho.Client, error) {
	return pahoConnectVia(addr, id, h, nil)
}

// pahoConnectVia is pahoConnect with dial making the socket (nil: Paho's).
func pahoConnectVia(addr, id string, h paho.MessageHandler, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (paho.Client, error) {
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(2 * time.Second).
		SetOrderMatters(true).SetKeepAlive(30 * time.Second)
	if dial != nil {
		o.SetCustomOpenConnectionFn(func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
			return dial(context.Background(), "tcp", u.Host)
		})
	}
	if h != nil {
		o.SetDefaultPublishHandler(h)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(3*time.Second) || tok.Error() != nil {
		c.Disconnect(0)
		return nil, fmt.Errorf("connect %s: %v", id, tok.Error())
	}
	return c, nil
}

// delivery is one message the receiver got.
type delivery struct {
	sender string
	seq    int
	dup    bool
}

// TestChaosKill9 kill -9s a real edged again and again while Paho
// publishers send QoS 1 direct messages to one user, restarts it on the
// same data dir each time, and proves with the receiver's deliveries that
// every PUBACKed message arrived, none twice unless marked DUP, and in
// order per sender. Then a SIGTERM stop and start lose nothing either.
func TestChaosKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test: several edged restarts")
	}
	bin := buildEdged(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	args := []string{"--listen", addr, "--admin", "off", "--data-dir", dir, "--loops", "2"}
	cmd, errb := startBinary(t, bin, args...)
	defer func() {
		if cmd != nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()

	const senders = 4
	var (
		mu       sync.Mutex
		acked    = make(map[string][]int) // sender -> seqs PUBACKed
		got      []delivery
		stopPubs atomic.Bool
		wg       sync.WaitGroup
	)
	for i := range senders {
		name := fmt.Sprintf("s%d", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			seq := 0
			var c paho.Client
			for !stopPubs.Load() {
				if c == nil || !c.IsConnectionOpen() {
					if c != nil {
						c.Disconnect(0)
					}
					var err error
					if c, err = pahoConnect(addr, name, nil); err != nil {
						c = nil
						time.Sleep(20 * time.Millisecond)
						continue
					}
				}
				seq++
				tok := c.Publish(fmt.Sprintf("u/rcv/%s-%d", name, seq), 1, false, "payload "+strconv.Itoa(seq))
				if tok.WaitTimeout(2*time.Second) && tok.Error() == nil {
					mu.Lock()
					acked[name] = append(acked[name], seq)
					mu.Unlock()
				} // else unknown: it may or may not have been stored
			}
			if c != nil {
				c.Disconnect(0)
			}
		}()
	}
	onMsg := func(_ paho.Client, m paho.Message) {
		// u/rcv/m/<sender>/<sender>-<seq>
		parts := strings.Split(m.Topic(), "/")
		sender, seqs, _ := strings.Cut(parts[len(parts)-1], "-")
		seq, _ := strconv.Atoi(seqs)
		mu.Lock()
		got = append(got, delivery{sender: sender, seq: seq, dup: m.Duplicate()})
		mu.Unlock()
	}
	var rcv paho.Client
	var rcvStop atomic.Bool
	wg.Add(1)
	go func() { // the receiver, reconnecting after every crash
		defer wg.Done()
		for !rcvStop.Load() {
			if rcv == nil || !rcv.IsConnectionOpen() {
				if rcv != nil {
					rcv.Disconnect(0)
				}
				c, err := pahoConnect(addr, "rcv", onMsg)
				if err != nil {
					rcv = nil
					time.Sleep(20 * time.Millisecond)
					continue
				}
				rcv = c
			}
			time.Sleep(10 * time.Millisecond)
		}
		if rcv != nil {
			rcv.Disconnect(100)
		}
	}()

	const kills = 5
	for k := range kills {
		time.Sleep(time.Duration(400+k*150) * time.Millisecond)
		mu.Lock()
		n := len(got)
		mu.Unlock()
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		t.Logf("kill %d: %d deliveries so far", k+1, n)
		cmd, errb = startBinary(t, bin, args...)
		if !strings.Contains(errb.String(), "store recovered") {
			t.Fatalf("restart %d: no recovery line: %s", k+1, errb.String())
		}
	}
	time.Sleep(300 * time.Millisecond)
	stopPubs.Store(true)
	// Drain: wait until the receiver has everything that was acknowledged.
	deadline := time.Now().Add(30 * time.Second)
	missing := func() int {
		mu.Lock()
		defer mu.Unlock()
		seen := map[string]bool{}
		for _, d := range got {
			seen[d.sender+"-"+strconv.Itoa(d.seq)] = true
		}
		n := 0
		for s, seqs := range acked {
			for _, q := range seqs {
				if !seen[s+"-"+strconv.Itoa(q)] {
					n++
				}
			}
		}
		return n
	}
	for missing() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	// A clean stop and start lose nothing either: what the receiver
	// has not acknowledged comes back.
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("SIGTERM: %v: %s", err, errb.String())
	}
	cmd, _ = startBinary(t, bin, args...)
	time.Sleep(500 * time.Millisecond)
	rcvStop.Store(true)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	total, dups := 0, 0
	for _, seqs := range acked {
		total += len(seqs)
	}
	if total < 100 {
		t.Fatalf("only %d messages acknowledged over %d kills: the load did not run", total, kills)
	}
	last := map[string]int{}
	seen := map[string]bool{}
	for _, d := range got {
		key := d.sender + "-" + strconv.Itoa(d.seq)
		if seen[key] {
			if !d.dup {
				t.Errorf("%s delivered again without DUP", key)
			}
			dups++
			continue
		}
		seen[key] = true
		if d.seq <= last[d.sender] {
			t.Errorf("%s delivered after %s-%d: out of order", key, d.sender, last[d.sender])
		}
		last[d.sender] = d.seq
	}
	lost := 0
	for s, seqs := range acked {
		for _, q := range seqs {
			if !seen[s+"-"+strconv.Itoa(q)] {
				lost++
				if lost <= 10 {
					t.Errorf("%s-%d was PUBACKed and never delivered", s, q)
				}
			}
		}
	}
	t.Logf("%d kills: %d messages PUBACKed, %d deliveries (%d DUP redeliveries), %d lost", kills, total, len(got), dups, lost)
}

// TestStoreCorruptionRefusesStart: a damaged record in the middle of the
// log stops edged at start with exit 1 and an error naming the file and
// offset; --repair drops it and starts.
func TestStoreCorruptionRefusesStart(t *testing.T) {
	bin := buildEdged(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	args := []string{"--listen", addr, "--admin", "off", "--data-dir", dir}
	cmd, _ := startBinary(t, bin, args...)
	c, err := pahoConnect(addr, "alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if tok := c.Publish(fmt.Sprintf("u/bob/m%d", i), 1, false, "some payload"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	c.Disconnect(100)
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
	slices.Sort(segs)
	seg := segs[0]
	b, _ := os.ReadFile(seg)
	i := strings.Index(string(b), "m/alice/m2")
	b[i] ^= 0x20
	os.WriteFile(seg, b, 0o600)

	out, err := exec.Command(bin, args...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("edged on a corrupt store: %v, want exit 1: %s", err, out)
	}
	if !strings.Contains(string(out), seg) || !strings.Contains(string(out), "offset") || !strings.Contains(string(out), "--repair") {
		t.Fatalf("error does not name the file, the offset and --repair: %s", out)
	}
	cmd, errb := startBinary(t, bin, append(args, "--repair")...)
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if !strings.Contains(errb.String(), "dropped") || !strings.Contains(errb.String(), "messages=4") {
		t.Fatalf("repair start: %s", errb.String())
	}
}
