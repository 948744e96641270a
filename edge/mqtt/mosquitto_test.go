package mqtt

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/edgedhq/edged/internal/testenv"
)

// startMosquitto runs a real mosquitto broker on a loopback port and returns
// its address. The broker is stopped when the test ends.
func startMosquitto(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/mosquitto"); serr == nil {
			bin, err = "/usr/sbin/mosquitto", nil
		}
	}
	testenv.Require(t, err == nil, "needs the mosquitto broker (apt-get install mosquitto)")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := filepath.Join(t.TempDir(), "mosquitto.conf")
	cfg := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n", port)
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "-c", conf)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start mosquitto: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", logs.String())
		}
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto did not listen on %s: %v\n%s", addr, err, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wireConn speaks MQTT over a TCP connection with this package only.
type wireConn struct {
	t   *testing.T
	c   net.Conn
	buf []byte // received bytes not yet decoded
}

func dialWire(t *testing.T, addr string) *wireConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &wireConn{t: t, c: c}
}

func (w *wireConn) send(pkt []byte) {
	w.t.Helper()
	w.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := w.c.Write(pkt); err != nil {
		w.t.Fatalf("write: %v", err)
	}
}

// next returns the next packet. Its slices alias a private copy, so they
// stay valid.
func (w *wireConn) next() Packet {
	w.t.Helper()
	var tmp [4096]byte
	for {
		var p Packet
		n, err := Decode(w.buf, 1<<20, &p)
		if err != nil {
			w.t.Fatalf("decode % x: %v", w.buf, err)
		}
		if n > 0 {
			own := append([]byte(nil), w.buf[:n]...)
			w.buf = w.buf[n:]
			if _, err := Decode(own, 0, &p); err != nil {
				w.t.Fatal(err)
			}
			return p
		}
		w.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		m, err := w.c.Read(tmp[:])
		if err != nil {
			w.t.Fatalf("read: %v", err)
		}
		w.buf = append(w.buf, tmp[:m]...)
	}
}

func (w *wireConn) expect(typ Type) Packet {
	w.t.Helper()
	p := w.next()
	if p.Type != typ {
		w.t.Fatalf("got %v (%+v); want %v", p.Type, p, typ)
	}
	return p
}

// TestMosquittoInterop runs every packet type through a real mosquitto
// broker: the broker must accept what we encode, and we must decode what it
// sends, including what a stock client (mosquitto_pub) published.
func TestMosquittoInterop(t *testing.T) {
	addr := startMosquitto(t)
	pubBin, err := exec.LookPath("mosquitto_pub")
	testenv.Require(t, err == nil, "needs mosquitto_pub (apt-get install mosquitto-clients)")
	subBin, err := exec.LookPath("mosquitto_sub")
	testenv.Require(t, err == nil, "needs mosquitto_sub (apt-get install mosquitto-clients)")
	host, port, _ := net.SplitHostPort(addr)

	sub := dialWire(t, addr)
	sub.send(AppendConnect(nil, &Connect{CleanSession: true, KeepAlive: 30, ClientID: []byte("edged-sub")}))
	if p := sub.expect(TypeConnack); p.ReturnCode != ConnAccepted || p.SessionPresent {
		t.Fatalf("CONNACK %+v", p)
	}
	sub.send(AppendSubscribe(nil, 1, Subscription{"a/+/c", 1}, Subscription{"x/#", 2}, Subscription{"cli/#", 0}))
	if p := sub.expect(TypeSuback); p.PacketID != 1 || !bytes.Equal(p.ReturnCodes, []byte{1, 2, 0}) {
		t.Fatalf("SUBACK %+v", p)
	}

	pub := dialWire(t, addr)
	pub.send(AppendConnect(nil, &Connect{ProtocolName: []byte("MQIsdp"), ProtocolLevel: 3, CleanSession: true, KeepAlive: 30,
		ClientID: []byte("edged-pub"), WillFlag: true, WillQoS: 1, WillTopic: []byte("x/will"), WillMessage: []byte("gone"),
		UsernameFlag: true, Username: []byte("user"), PasswordFlag: true, Password: []byte("pw")}))
	if p := pub.expect(TypeConnack); p.ReturnCode != ConnAccepted {
		t.Fatalf("CONNACK %+v", p)
	}

	// QoS 1: PUBLISH -> PUBACK; subscriber gets it at QoS 1.
	pub.send(AppendPublish(nil, "a/b/c", []byte("one"), 1, false, false, 10))
	if p := pub.expect(TypePuback); p.PacketID != 10 {
		t.Fatalf("PUBACK %+v", p)
	}
	p := sub.expect(TypePublish)
	if string(p.Topic) != "a/b/c" || string(p.Payload) != "one" || p.QoS != 1 || p.PacketID == 0 {
		t.Fatalf("delivered %+v", p)
	}
	sub.send(AppendPuback(nil, p.PacketID))

	// QoS 2 with a 200 KiB payload (3-byte remaining length).
	big := bytes.Repeat([]byte("0123456789abcdef"), 200<<10/16)
	pub.send(AppendPublish(nil, []byte("x/y"), big, 2, false, false, 11))
	if p := pub.expect(TypePubrec); p.PacketID != 11 {
		t.Fatalf("PUBREC %+v", p)
	}
	pub.send(AppendPubrel(nil, 11))
	if p := pub.expect(TypePubcomp); p.PacketID != 11 {
		t.Fatalf("PUBCOMP %+v", p)
	}
	p = sub.expect(TypePublish)
	if string(p.Topic) != "x/y" || !bytes.Equal(p.Payload, big) || p.QoS != 2 {
		t.Fatalf("delivered %v qos %d, %d bytes", string(p.Topic), p.QoS, len(p.Payload))
	}
	sub.send(AppendPubrec(nil, p.PacketID))
	if r := sub.expect(TypePubrel); r.PacketID != p.PacketID {
		t.Fatalf("PUBREL %+v", r)
	}
	sub.send(AppendPubcomp(nil, p.PacketID))

	// A stock client publishes; we decode what the broker forwards.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	out, err := exec.CommandContext(ctx, pubBin, "-h", host, "-p", port, "-t", "cli/t", "-m", "from mosquitto_pub", "-q", "1", "-r").CombinedOutput()
	cancel()
	if err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}
	p = sub.expect(TypePublish)
	if string(p.Topic) != "cli/t" || string(p.Payload) != "from mosquitto_pub" || p.QoS != 0 || p.Retain {
		t.Fatalf("delivered %+v", p)
	}

	// A stock client decodes what we encode: a retained QoS 1 message is
	// delivered to mosquitto_sub when it subscribes (no subscribe race).
	pub.send(AppendPublish(nil, "enc/t", []byte("encoded by edged"), 1, true, false, 12))
	if p := pub.expect(TypePuback); p.PacketID != 12 {
		t.Fatalf("PUBACK %+v", p)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Second)
	out, err = exec.CommandContext(ctx, subBin, "-h", host, "-p", port, "-t", "enc/t", "-q", "1", "-C", "1", "-W", "15", "-v").CombinedOutput()
	cancel()
	if err != nil || string(out) != "enc/t encoded by edged\n" {
		t.Fatalf("mosquitto_sub = %q, %v", out, err)
	}

	sub.send(AppendPingreq(nil))
	sub.expect(TypePingresp)
	sub.send(AppendUnsubscribe(nil, 2, "a/+/c", "x/#"))
	if p := sub.expect(TypeUnsuback); p.PacketID != 2 {
		t.Fatalf("UNSUBACK %+v", p)
	}
	// Retained message: a new subscription gets it with RETAIN set.
	sub.send(AppendSubscribe(nil, 3, Subscription{"cli/t", 1}))
	sub.expect(TypeSuback)
	p = sub.expect(TypePublish)
	if !p.Retain || string(p.Payload) != "from mosquitto_pub" {
		t.Fatalf("retained %+v", p)
	}
	pub.send(AppendDisconnect(nil))
	sub.send(AppendDisconnect(nil))
}
