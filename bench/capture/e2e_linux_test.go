package capture

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge"
	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/internal/testenv"
	"golang.org/x/sys/unix"
)

// inNetns runs fn on an OS thread that has joined network namespace ns and
// is never the main thread; the thread is discarded afterwards (the
// goroutine exits locked), so no other goroutine ever runs in ns.
func inNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// This is the main thread: keep it, and with it locked here the
			// nested goroutine runs on another thread.
			errc <- inNetns(ns, fn)
			runtime.UnlockOSThread()
			return
		}
		f, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			errc <- err
			return
		}
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		f.Close()
		if err != nil {
			errc <- os.NewSyscallError("setns", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// nsDialer dials from inside a namespace: the sockets belong to the
// namespace of the thread that creates them.
type nsDialer struct{ req chan dialReq }

type dialReq struct {
	addr  string
	reply chan dialRes
}

type dialRes struct {
	c   net.Conn
	err error
}

func startNsDialer(t *testing.T, ns string) *nsDialer {
	d := &nsDialer{req: make(chan dialReq)}
	done := make(chan error, 1)
	go func() {
		done <- inNetns(ns, func() error {
			for r := range d.req {
				c, err := net.DialTimeout("tcp", r.addr, 5*time.Second)
				r.reply <- dialRes{c, err}
			}
			return nil
		})
	}()
	t.Cleanup(func() {
		close(d.req)
		if err := <-done; err != nil {
			t.Errorf("namespace dialer: %v", err)
		}
	})
	return d
}

func (d *nsDialer) dial(addr string) (net.Conn, error) {
	r := dialReq{addr: addr, reply: make(chan dialRes, 1)}
	d.req <- r
	res := <-r.reply
	return res.c, res.err
}

// wlClient is the workload's MQTT client, written against the codec
// directly so that the replay is checked against an independent client.
type wlClient struct {
	id      string
	nc      net.Conn
	wmu     sync.Mutex
	connack chan byte
	done    chan struct{}

	mu                   sync.Mutex // guards the counters
	sentMsgs, recvMsgs   int64
	sentBytes, recvBytes int64
}

func (c *wlClient) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.nc.Write(b)
	return err
}

func (c *wlClient) readLoop() {
	defer close(c.done)
	var p mqtt.Packet
	var buf []byte
	chunk := make([]byte, 64<<10)
	for {
		n, err := c.nc.Read(chunk)
		buf = append(buf, chunk[:n]...)
		for {
			k, derr := mqtt.Decode(buf, maxMQTTPacket, &p)
			if derr != nil || k == 0 {
				break
			}
			switch p.Type {
			case mqtt.TypeConnack:
				c.connack <- p.ReturnCode
			case mqtt.TypePublish:
				c.mu.Lock()
				c.recvMsgs++
				c.recvBytes += int64(len(p.Payload))
				c.mu.Unlock()
				if p.QoS == 1 {
					c.write(mqtt.AppendPuback(nil, p.PacketID))
				}
			}
			buf = buf[k:]
		}
		buf = append([]byte(nil), buf...)
		if err != nil {
			return
		}
	}
}

func (c *wlClient) publish(topic string, size int, qos byte, id uint16) error {
	payload := make([]byte, size)
	rand.Read(payload)
	c.mu.Lock()
	c.sentMsgs++
	c.sentBytes += int64(size)
	c.mu.Unlock()
	return c.write(mqtt.AppendPublish(nil, topic, payload, qos, false, false, id))
}

// runWorkload drives four users against addr (dialled inside the
// namespace) for about 1.5 s: they connect 30 ms apart and subscribe to a
// shared room, send ten direct messages of 1 B to 70 KB to each other (the
// server stores, delivers and sends receipts), two room messages, and
// DISCONNECT. It returns the clients with their counters.
func runWorkload(t *testing.T, d *nsDialer, addr string) []*wlClient {
	ids := []string{"alice001", "bob00002", "carol003", "dave0004"}
	sizes := []int{10, 100, 1000, 5000, 70000, 3, 300, 3000, 20000, 1}
	cl := make([]*wlClient, len(ids))
	type action struct {
		at time.Duration
		do func() error
	}
	var acts []action
	for i, id := range ids {
		acts = append(acts, action{time.Duration(i) * 30 * time.Millisecond, func() error {
			nc, err := d.dial(addr)
			if err != nil {
				return err
			}
			c := &wlClient{id: id, nc: nc, connack: make(chan byte, 1), done: make(chan struct{})}
			cl[i] = c
			go c.readLoop()
			if err := c.write(mqtt.AppendConnect(nil, &mqtt.Connect{CleanSession: true, KeepAlive: 30, ClientID: []byte(id)})); err != nil {
				return err
			}
			select {
			case rc := <-c.connack:
				if rc != 0 {
					return fmt.Errorf("%s: CONNACK %d", id, rc)
				}
			case <-time.After(5 * time.Second):
				return fmt.Errorf("%s: no CONNACK", id)
			}
			return c.write(mqtt.AppendSubscribe(nil, 1, mqtt.Subscription{Filter: "room/lobby", QoS: 0}))
		}})
	}
	for j, size := range sizes {
		acts = append(acts, action{300*time.Millisecond + time.Duration(j)*80*time.Millisecond, func() error {
			from, to := cl[j%4], ids[(j+1)%4]
			return from.publish(fmt.Sprintf("u/%s/m%d", to, j), size, 1, uint16(j+1))
		}})
	}
	acts = append(acts,
		action{340 * time.Millisecond, func() error { return cl[0].publish("room/lobby", 500, 0, 0) }},
		action{740 * time.Millisecond, func() error { return cl[1].publish("room/lobby", 12345, 0, 0) }},
	)
	for i := range ids {
		acts = append(acts, action{1400*time.Millisecond + time.Duration(i)*20*time.Millisecond, func() error {
			if err := cl[i].write(mqtt.AppendDisconnect(nil)); err != nil {
				return err
			}
			select {
			case <-cl[i].done: // the server closes after DISCONNECT
			case <-time.After(5 * time.Second):
				return fmt.Errorf("%s: server did not close after DISCONNECT", ids[i])
			}
			return cl[i].nc.Close()
		}})
	}
	// Run the actions in time order (stable: equal times keep their order).
	for i := 1; i < len(acts); i++ {
		for j := i; j > 0 && acts[j].at < acts[j-1].at; j-- {
			acts[j], acts[j-1] = acts[j-1], acts[j]
		}
	}
	t0 := time.Now()
	for _, a := range acts {
		time.Sleep(time.Until(t0.Add(a.at)))
		if err := a.do(); err != nil {
			for _, c := range cl {
				if c != nil {
					c.nc.Close()
				}
			}
			t.Fatalf("workload: %v", err)
		}
	}
	return cl
}

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// startNsServer starts this test binary as an anonymous-loopback edged
// inside ns (TestMain's serve mode) and returns once it listens.
func startNsServer(t *testing.T, ns, addr string) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, exe)
	cmd.Env = append(os.Environ(), serveEnv+"="+addr)
	// No Pdeathsig: it fires when the forking thread exits, and this test
	// discards threads. The server stops when its stdin closes, which also
	// happens when this process dies.
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		stdin.Close()
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("server in %s: %v: %s", ns, err, stderr.String())
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Errorf("server in %s did not stop", ns)
		}
	})
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- s
		io.Copy(io.Discard, stdout)
		exited <- cmd.Wait()
	}()
	select {
	case s := <-line:
		if !strings.HasPrefix(s, "ready ") {
			t.Fatalf("server in %s: %q: %s", ns, s, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("server in %s did not start: %s", ns, stderr.String())
	}
}

// TestRecordReplayNetns is the acceptance test: record a real workload
// against edged inside a network namespace (capture on the namespace's lo,
// from a thread that joined it), check that the capture holds what the
// clients did, replay it at speed 2 against a second edged that requires
// tokens, and check that the same sessions, message counts and payload
// sizes arrive, on time within the tolerance below; then once more with
// --scale 2 at speed 4.
func TestRecordReplayNetns(t *testing.T) {
	testenv.RequirePriv(t, "capture in a network namespace")
	_, err := exec.LookPath("ip")
	testenv.Require(t, err == nil, "ip (iproute2) is not installed")

	ns := fmt.Sprintf("edgecap%d", os.Getpid())
	mustRun(t, "ip", "netns", "add", ns)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", ns).CombinedOutput(); err != nil {
			t.Errorf("delete netns %s: %v: %s", ns, err, out)
		}
	})
	mustRun(t, "ip", "-n", ns, "link", "set", "lo", "up")
	const addrA = "127.0.0.1:1883"
	startNsServer(t, ns, addrA)
	d := startNsDialer(t, ns)

	// Record.
	pcap := filepath.Join(t.TempDir(), "workload.pcap")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan struct{})
	type recResult struct {
		st  RecordStats
		err error
	}
	recDone := make(chan recResult, 1)
	go func() {
		var r recResult
		r.err = inNetns(ns, func() error {
			var err error
			r.st, err = Record(ctx, RecordOptions{Iface: "lo", Port: 1883, Duration: 30 * time.Second, Out: pcap, Ready: func() { close(ready) }})
			return err
		})
		recDone <- r
	}()
	select {
	case <-ready:
	case r := <-recDone:
		t.Fatalf("record: %v", r.err)
	}
	truth := runWorkload(t, d, addrA)
	time.Sleep(200 * time.Millisecond) // the last FINs reach the capture
	cancel()
	rec := <-recDone
	if rec.err != nil {
		t.Fatalf("record: %v", rec.err)
	}
	if rec.st.Packets == 0 || rec.st.Truncated != 0 || rec.st.Dropped != 0 {
		t.Fatalf("record stats %+v", rec.st)
	}

	// The capture holds exactly what the clients sent and received.
	w, err := Load(pcap, 1883)
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Sessions) != len(truth) || w.Skipped != 0 {
		t.Fatalf("capture: %d sessions, %d skipped; want %d, 0", len(w.Sessions), w.Skipped, len(truth))
	}
	for _, s := range w.Sessions {
		var c *wlClient
		for _, x := range truth {
			if x.id == s.ClientID {
				c = x
			}
		}
		if c == nil {
			t.Fatalf("capture has unknown client id %q", s.ClientID)
		}
		sm, sb := publishes(s.Sent)
		rm, rb := publishes(s.Recv)
		if sm != c.sentMsgs || sb != c.sentBytes || rm != c.recvMsgs || rb != c.recvBytes || s.Partial {
			t.Errorf("%s: capture has sent %d/%dB received %d/%dB (partial %v); the client sent %d/%dB received %d/%dB",
				c.id, sm, sb, rm, rb, s.Partial, c.sentMsgs, c.sentBytes, c.recvMsgs, c.recvBytes)
		}
	}

	// Replay against a second server that only admits tokens.
	secret := []byte("replay-test-secret-0123456789abcdef")
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, append(secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	srvB := startServer(t, edge.Config{Auth: edge.AuthToken, Secret: secret})
	for _, tc := range []struct {
		speed float64
		scale int
	}{{2, 1}, {4, 2}} {
		t.Run(fmt.Sprintf("speed %g scale %d", tc.speed, tc.scale), func(t *testing.T) {
			fds := testenv.OpenFDs(t)
			probe := testenv.StartStallProbe()
			code, out, errs := runMain("replay", "--pcap", pcap, "--target", srvB.Addr().String(),
				"--speed", fmt.Sprint(tc.speed), "--scale", fmt.Sprint(tc.scale), "--secret-file", secretFile, "--json")
			stall, stalled := probe.Stop()
			if code != 0 {
				t.Fatalf("replay exit %d: %s%s", code, errs, out)
			}
			var rep Report
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatalf("report: %v\n%s", err, out)
			}
			t.Logf("\n%s", rep.Text())
			if after := testenv.OpenFDs(t); after > fds {
				t.Errorf("open fds %d before the replay, %d after", fds, after)
			}
			if rep.Sessions != len(truth)*tc.scale || rep.Connected != rep.Sessions {
				t.Fatalf("sessions %d connected %d, want %d", rep.Sessions, rep.Connected, len(truth)*tc.scale)
			}
			for _, s := range rep.PerSession {
				if s.Messages != s.RecordedMessages || s.MessageBytes != s.RecordedMessageBytes || s.Error != "" {
					t.Errorf("session %d copy %d (%s): received %d messages/%dB, recorded %d/%dB, error %q",
						s.Session, s.Copy, s.ID, s.Messages, s.MessageBytes, s.RecordedMessages, s.RecordedMessageBytes, s.Error)
				}
			}
			check := []string{"PUBLISH", "SUBSCRIBE", "DISCONNECT"}
			if tc.scale == 1 { // identities keep their length: byte-exact
				for _, typ := range check {
					if rep.Sent[typ] != rep.RecordedSent[typ] {
						t.Errorf("sent %s %+v, recorded %+v", typ, rep.Sent[typ], rep.RecordedSent[typ])
					}
				}
				if rep.Received["PUBLISH"] != rep.RecordedReceived["PUBLISH"] {
					t.Errorf("received PUBLISH %+v, recorded %+v", rep.Received["PUBLISH"], rep.RecordedReceived["PUBLISH"])
				}
			}
			for _, typ := range check {
				if rep.Sent[typ].Packets != rep.RecordedSent[typ].Packets {
					t.Errorf("sent %d %s, recorded %d", rep.Sent[typ].Packets, typ, rep.RecordedSent[typ].Packets)
				}
			}
			// Speed. The schedule is the recorded span divided by the
			// speed. The replay waits for each scheduled time, so it is
			// never early: its span (first dial to last close) is at
			// least the schedule's, less 25% + 0.5 s. Lateness is the machine's
			// as much as the code's: the span may exceed the schedule by
			// 25% + 0.5 s plus all the time this process was seen stalled
			// (testenv.StallProbe), and the p99 lateness may be 250 ms
			// plus the longest stall, so a loaded machine cannot fail
			// this by chance while a replay that ignores --speed (at
			// least twice as long) still does.
			want := rep.RecordedSeconds / tc.speed
			if math.Abs(rep.ScheduledSeconds-want) > 1e-9 {
				t.Errorf("scheduled %.3fs, want recorded %.3fs / %g", rep.ScheduledSeconds, rep.RecordedSeconds, tc.speed)
			}
			t.Logf("replay took %.3fs for a %.3fs schedule; process stalled %v in all, %v at most", rep.ElapsedSeconds, want, stalled, stall)
			if rep.ElapsedSeconds < 0.75*want-0.5 || rep.ElapsedSeconds > 1.25*want+0.5+stalled.Seconds() {
				t.Errorf("replay took %.3fs, want %.3fs - (25%% + 0.5s) .. + (25%% + 0.5s + %v stalled)", rep.ElapsedSeconds, want, stalled)
			}
			if rep.Timing.P99us > 250_000+stall.Microseconds() || rep.Timing.Count == 0 {
				t.Errorf("timing %+v: p99 lateness over 250ms + %v stalled", rep.Timing, stall)
			}
		})
	}
}

func publishes(steps []Step) (n, bytes int64) {
	for _, s := range steps {
		if s.Type == mqtt.TypePublish {
			n++
			bytes += int64(s.PayloadLen)
		}
	}
	return n, bytes
}
