package edge

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/internal/testenv"
)

func requireMosquitto(t *testing.T) {
	t.Helper()
	_, e1 := exec.LookPath("mosquitto_pub")
	_, e2 := exec.LookPath("mosquitto_sub")
	testenv.Require(t, e1 == nil && e2 == nil, "mosquitto_pub/mosquitto_sub not installed (apt-get install mosquitto-clients)")
}

func hostPort(s *Server) (string, string) {
	a := s.Addr().String()
	i := strings.LastIndexByte(a, ':')
	return a[:i], a[i+1:]
}

// mosqSub starts mosquitto_sub with args and returns a func that waits for
// it and returns its output.
func mosqSub(t *testing.T, s *Server, args ...string) func() string {
	t.Helper()
	return mosqSubExit(t, s, 0, args...)
}

// mosqSubExit is mosqSub expecting exit status code.
func mosqSubExit(t *testing.T, s *Server, code int, args ...string) func() string {
	t.Helper()
	h, p := hostPort(s)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	cmd := exec.CommandContext(ctx, "mosquitto_sub", append([]string{"-h", h, "-p", p}, args...)...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start mosquitto_sub: %v", err)
	}
	var once sync.Once
	var res string
	wait := func() string {
		once.Do(func() {
			err := cmd.Wait()
			cancel()
			res = out.String()
			if cmd.ProcessState.ExitCode() != code {
				t.Errorf("mosquitto_sub %v: %v (want exit %d): %s", args, err, code, res)
			}
		})
		return res
	}
	t.Cleanup(func() { cancel(); wait() })
	return wait
}

func mosqPub(t *testing.T, s *Server, args ...string) {
	t.Helper()
	h, p := hostPort(s)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "mosquitto_pub", append([]string{"-h", h, "-p", p}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub %v: %v: %s", args, err, out)
	}
}

// waitSubscribed waits until topic has a subscriber in the tree.
func waitSubscribed(t *testing.T, s *Server, topic string) {
	t.Helper()
	waitFor(t, "a subscriber of "+topic, func() bool {
		return len(s.tree.match([]byte(topic), nil)) > 0
	})
}

func TestMosquittoGeneric(t *testing.T) {
	requireMosquitto(t)
	s := startServer(t, nil)
	for _, qos := range []string{"0", "1", "2"} {
		t.Run("qos"+qos, func(t *testing.T) {
			topic := "sensors/" + qos + "/temp"
			wait := mosqSub(t, s, "-q", qos, "-t", "sensors/"+qos+"/+", "-C", "3", "-v")
			waitSubscribed(t, s, topic)
			for i := range 3 {
				// Order holds per connection only: a QoS 0 mosquitto_pub
				// exits before the server has read it, so wait until v<i>
				// is routed before v<i+1> comes on another connection.
				n := s.Stats().Published
				mosqPub(t, s, "-q", qos, "-t", topic, "-m", fmt.Sprint("v", i))
				waitFor(t, "the publish routed", func() bool { return s.Stats().Published > n })
			}
			want := fmt.Sprintf("%s v0\n%s v1\n%s v2\n", topic, topic, topic)
			if got := wait(); got != want {
				t.Fatalf("mosquitto_sub printed %q, want %q", got, want)
			}
		})
	}
	t.Run("retained", func(t *testing.T) {
		mosqPub(t, s, "-q", "1", "-r", "-t", "cfg/mode", "-m", "eco")
		if got := mosqSub(t, s, "-q", "1", "-t", "cfg/#", "-C", "1", "-v")(); got != "cfg/mode eco\n" {
			t.Fatalf("retained: got %q", got)
		}
		mosqPub(t, s, "-q", "1", "-r", "-t", "cfg/mode", "-n") // clear it
		if got := mosqSubExit(t, s, 27, "-t", "cfg/#", "-W", "1")(); got != "Timed out\n" {
			t.Fatalf("cleared retained message still delivered: %q", got)
		}
	})
	t.Run("wildcards-skip-profile", func(t *testing.T) {
		wait := mosqSub(t, s, "-q", "1", "-t", "#", "-C", "1", "-v", "-i", "watcher")
		waitSubscribed(t, s, "x/y")
		mosqPub(t, s, "-q", "1", "-i", "alice", "-t", "u/watcher/m1", "-m", "secret") // goes to watcher's inbox only
		mosqPub(t, s, "-q", "1", "-i", "alice", "-t", "u/bob/m1", "-m", "secret")
		mosqPub(t, s, "-q", "1", "-t", "x/y", "-m", "public")
		got := wait()
		// watcher gets its own inbox message (implicit subscription) or the
		// public one, never bob's.
		if strings.Contains(got, "u/bob") || got == "" {
			t.Fatalf("'#' subscriber got %q", got)
		}
	})
}

func TestMosquittoProfile(t *testing.T) {
	requireMosquitto(t)
	s := startServer(t, nil)
	// bob offline: the message is stored.
	mosqPub(t, s, "-q", "1", "-i", "alice", "-t", "u/bob/m1", "-m", "hi bob")
	if n := s.InboxLen("bob"); n != 1 {
		t.Fatalf("bob's inbox holds %d, want 1", n)
	}
	// bob connects: delivered without SUBSCRIBE (mosquitto_sub needs a -t;
	// his own u/bob/# is allowed and harmless).
	if got := mosqSub(t, s, "-q", "1", "-i", "bob", "-t", "u/bob/#", "-C", "1", "-v")(); got != "u/bob/m/alice/m1 hi bob\n" {
		t.Fatalf("bob got %q", got)
	}
	if got := mosqSub(t, s, "-q", "1", "-i", "alice", "-t", "u/alice/#", "-C", "1", "-v")(); got != "u/alice/d/bob/m1 (null)\n" {
		t.Fatalf("alice got %q, want the delivered receipt", got)
	}
	// Another user's inbox is refused.
	got := mosqSubExit(t, s, 0, "-q", "1", "-i", "mallory", "-t", "u/bob/#", "-W", "5")()
	if !strings.Contains(got, "denied") {
		t.Fatalf("mosquitto_sub on another user's inbox printed %q, want a denial", got)
	}
}

func pahoClient(t *testing.T, s *Server, id string, clean bool, opts func(*paho.ClientOptions)) paho.Client {
	t.Helper()
	o := paho.NewClientOptions().AddBroker("tcp://" + s.Addr().String()).SetClientID(id).
		SetCleanSession(clean).SetAutoReconnect(false).SetConnectRetry(false).
		SetProtocolVersion(4).SetConnectTimeout(10 * time.Second).SetKeepAlive(30 * time.Second)
	if opts != nil {
		opts(o)
	}
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

func waitTok(t *testing.T, tok paho.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: %v", what, tok.Error())
	}
}

func TestPaho(t *testing.T) {
	s := startServer(t, nil)
	got := make(chan paho.Message, 100)
	sub := pahoClient(t, s, "sub1", true, nil)
	waitTok(t, sub.Subscribe("room/+/msg", 2, func(_ paho.Client, m paho.Message) { got <- m }), "subscribe")
	pub := pahoClient(t, s, "pub1", true, nil)
	for qos := range byte(3) {
		waitTok(t, pub.Publish(fmt.Sprint("room/", qos, "/msg"), qos, false, fmt.Sprint("q", qos)), "publish")
		select {
		case m := <-got:
			if m.Topic() != fmt.Sprint("room/", qos, "/msg") || string(m.Payload()) != fmt.Sprint("q", qos) || m.Qos() != qos {
				t.Fatalf("got %s %q qos %d", m.Topic(), m.Payload(), m.Qos())
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("qos %d: nothing received", qos)
		}
	}

	t.Run("persistent-session", func(t *testing.T) {
		ch := make(chan paho.Message, 100)
		h := func(_ paho.Client, m paho.Message) { ch <- m }
		p := pahoClient(t, s, "durable", false, func(o *paho.ClientOptions) { o.SetDefaultPublishHandler(h) })
		waitTok(t, p.Subscribe("jobs/#", 1, h), "subscribe")
		p.Disconnect(100)
		waitFor(t, "durable offline", func() bool { return s.Connections() == 2 })
		for i := range 5 {
			waitTok(t, pub.Publish("jobs/"+fmt.Sprint(i), 1, false, fmt.Sprint(i)), "publish")
		}
		pahoClient(t, s, "durable", false, func(o *paho.ClientOptions) { o.SetDefaultPublishHandler(h) })
		for i := range 5 {
			select {
			case m := <-ch:
				if string(m.Payload()) != fmt.Sprint(i) {
					t.Fatalf("queued message %d: got %q", i, m.Payload())
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("queued message %d not delivered", i)
			}
		}
	})

	t.Run("will", func(t *testing.T) {
		ch := make(chan paho.Message, 10)
		w := pahoClient(t, s, "willwatch", true, nil)
		waitTok(t, w.Subscribe("status/+", 1, func(_ paho.Client, m paho.Message) { ch <- m }), "subscribe")
		rc := dial(t, s)
		rc.connectWith(mqttConnectWill("dev1", "status/dev1", "gone"))
		rc.conn.Close() // no DISCONNECT: the will is published
		select {
		case m := <-ch:
			if m.Topic() != "status/dev1" || string(m.Payload()) != "gone" {
				t.Fatalf("will: got %s %q", m.Topic(), m.Payload())
			}
		case <-time.After(10 * time.Second):
			t.Fatal("will not published")
		}
		// A DISCONNECT discards the will (3.14.4).
		rc = dial(t, s)
		rc.connectWith(mqttConnectWill("dev2", "status/dev2", "gone"))
		rc.send(mqtt.AppendDisconnect(nil))
		rc.expectClosed()
		select {
		case m := <-ch:
			t.Fatalf("will published after DISCONNECT: %s %q", m.Topic(), m.Payload())
		case <-time.After(200 * time.Millisecond):
		}
	})
}

func TestPahoProfile(t *testing.T) {
	s := startServer(t, nil)
	alice := pahoClient(t, s, "alice", true, nil)
	// bob is offline: stored.
	waitTok(t, alice.Publish("u/bob/p1", 1, false, "hello from paho"), "publish")
	if n := s.InboxLen("bob"); n != 1 {
		t.Fatalf("bob's inbox %d, want 1", n)
	}
	got := make(chan paho.Message, 10)
	// No SUBSCRIBE: the inbox arrives at the default handler.
	pahoClient(t, s, "bob", true, func(o *paho.ClientOptions) {
		o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { got <- m })
	})
	select {
	case m := <-got:
		if m.Topic() != "u/bob/m/alice/p1" || string(m.Payload()) != "hello from paho" {
			t.Fatalf("bob got %s %q", m.Topic(), m.Payload())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("bob got nothing")
	}
	// paho acknowledged it: the inbox is empty and alice's receipt is stored
	// (alice's connection has no handler for it, so watch the inbox).
	waitFor(t, "bob's inbox empty", func() bool { return s.InboxLen("bob") == 0 })
	alice.Disconnect(100)
	waitFor(t, "receipt stored for alice", func() bool { return s.InboxLen("alice") == 1 })
	rcpt := make(chan paho.Message, 10)
	pahoClient(t, s, "alice", true, func(o *paho.ClientOptions) {
		o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { rcpt <- m })
	})
	select {
	case m := <-rcpt:
		if m.Topic() != "u/alice/d/bob/p1" {
			t.Fatalf("alice got %s", m.Topic())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("alice got no receipt")
	}
}

func TestMosquittoWill(t *testing.T) {
	requireMosquitto(t)
	s := startServer(t, nil)
	wait := mosqSub(t, s, "-q", "1", "-t", "devices/+/state", "-C", "1", "-v")
	waitSubscribed(t, s, "devices/x/state")
	h, p := hostPort(s)
	dev := exec.Command("mosquitto_sub", "-h", h, "-p", p, "-i", "dev7", "-t", "cmd/dev7",
		"--will-topic", "devices/dev7/state", "--will-payload", "lost", "--will-qos", "1")
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	waitSubscribed(t, s, "cmd/dev7")
	dev.Process.Kill() // no DISCONNECT: the will goes out
	dev.Wait()
	if got := wait(); got != "devices/dev7/state lost\n" {
		t.Fatalf("will: got %q", got)
	}
}
