//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/internal/testenv"
	"golang.org/x/sys/unix"
)

// startFloor serves on a free loopback port in this process and returns
// its address. The loop never returns; it ends with the test binary.
func startFloor(t *testing.T) string {
	t.Helper()
	lfd, err := listenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(lfd)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = serve(lfd, 0) }()
	return fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
}

// TestStockClients: mosquitto_sub gets at QoS 1 what mosquitto_pub sends at
// QoS 1 through the floor (the stick must carry real MQTT, or its figures
// measure nothing).
func TestStockClients(t *testing.T) {
	subBin, err := exec.LookPath("mosquitto_sub")
	testenv.Require(t, err == nil, "needs mosquitto_sub (apt-get install mosquitto-clients)")
	pubBin, err := exec.LookPath("mosquitto_pub")
	testenv.Require(t, err == nil, "needs mosquitto_pub (apt-get install mosquitto-clients)")
	_, port, _ := net.SplitHostPort(startFloor(t))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// -v: the topic too; -C 1: one message, then exit.
	sub := exec.CommandContext(ctx, subBin, "-h", "127.0.0.1", "-p", port, "-q", "1", "-t", "floor/t", "-C", "1", "-W", "10", "-v")
	var out strings.Builder
	sub.Stdout = &out
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Process.Kill() })
	done := make(chan error, 1)
	go func() { done <- sub.Wait() }()
	// The subscriber has no ready signal: publish until it has one.
	for i := 0; ; i++ {
		if b, err := exec.CommandContext(ctx, pubBin, "-h", "127.0.0.1", "-p", port, "-q", "1", "-t", "floor/t", "-m", "hello").CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub: %v: %s", err, b)
		}
		select {
		case err := <-done:
			if err != nil || out.String() != "floor/t hello\n" {
				t.Fatalf("mosquitto_sub = %q, %v", out.String(), err)
			}
			return
		case <-time.After(100 * time.Millisecond):
		}
		if i == 50 {
			t.Fatal("mosquitto_sub got nothing in 5 s")
		}
	}
}

// TestUnknownPacket: a packet the stick does not speak closes that
// connection only.
func TestUnknownPacket(t *testing.T) {
	addr := startFloor(t)
	other, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{0xf0, 0}) // AUTH: MQTT 5 only
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after AUTH: %v, want EOF", err)
	}
	other.Write([]byte{0xc0, 0}) // PINGREQ on the other connection
	other.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 2)
	if _, err := io.ReadFull(other, b); err != nil || b[0] != 0xd0 || b[1] != 0 {
		t.Fatalf("PINGRESP = %x, %v", b, err)
	}
}

// client is a raw MQTT connection: it checks every packet the floor sends.
type client struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, addr, id string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cl := &client{t: t, c: c, r: bufio.NewReader(c)}
	cl.send(mqtt.AppendConnect(nil, &mqtt.Connect{CleanSession: true, KeepAlive: 30, ClientID: []byte(id)}))
	cl.want(0x20, []byte{0, 0})
	return cl
}

func (cl *client) send(p []byte) {
	cl.t.Helper()
	if _, err := cl.c.Write(p); err != nil {
		cl.t.Fatal(err)
	}
}

// next reads one packet: its first byte and body.
func (cl *client) next() (byte, []byte) {
	cl.t.Helper()
	cl.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	h, err := cl.r.ReadByte()
	if err != nil {
		cl.t.Fatalf("read: %v", err)
	}
	n, err := binary.ReadUvarint(cl.r) // MQTT's remaining length is a little-endian base-128 varint
	if err != nil {
		cl.t.Fatalf("read length: %v", err)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(cl.r, body); err != nil {
		cl.t.Fatalf("read body of %d: %v", n, err)
	}
	return h, body
}

func (cl *client) want(h byte, body []byte) {
	cl.t.Helper()
	if gh, gb := cl.next(); gh != h || !bytes.Equal(gb, body) {
		cl.t.Fatalf("got %#x %x, want %#x %x", gh, gb, h, body)
	}
}

// publish wants the PUBLISH of topic, payload at qos with packet id pid.
func (cl *client) publish(topic, payload string, qos byte, pid uint16) {
	cl.t.Helper()
	want := mqtt.AppendPublish(nil, topic, []byte(payload), qos, false, false, pid)
	h, body := cl.next() // the remaining length was len(body): next read exactly that
	if h != want[0] || !bytes.HasSuffix(want, body) || len(want)-len(body) > 5 {
		cl.t.Fatalf("got PUBLISH %#x %x, want %x", h, body, want)
	}
}

func (cl *client) closed() {
	cl.t.Helper()
	cl.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := cl.r.ReadByte(); err != io.EOF {
		cl.t.Fatalf("read: %v, want EOF (closed)", err)
	}
}

// TestRouting: PUBACKs carry the publisher's ids; each subscriber gets
// the message at the lower of the two QoS, with ids of its own in order;
// a second SUBSCRIBE to the same topic replaces the first (one copy, the
// new QoS); a subscriber that left gets nothing and breaks nothing.
func TestRouting(t *testing.T) {
	addr := startFloor(t)
	s1, s0, gone, pub := dial(t, addr, "s1"), dial(t, addr, "s0"), dial(t, addr, "gone"), dial(t, addr, "pub")
	s1.send(mqtt.AppendSubscribe(nil, 7, mqtt.Subscription{Filter: "a/b", QoS: 1}))
	s1.want(0x90, []byte{0, 7, 1})
	s0.send(mqtt.AppendSubscribe(nil, 8, mqtt.Subscription{Filter: "a/b", QoS: 1}))
	s0.want(0x90, []byte{0, 8, 1})
	s0.send(mqtt.AppendSubscribe(nil, 9, mqtt.Subscription{Filter: "a/b", QoS: 0}))
	s0.want(0x90, []byte{0, 9, 0})
	gone.send(mqtt.AppendSubscribe(nil, 1, mqtt.Subscription{Filter: "a/b", QoS: 2}))
	gone.want(0x90, []byte{0, 1, 1}) // QoS 2 granted as 1
	gone.c.Close()
	time.Sleep(50 * time.Millisecond)
	for i, qos := range []byte{1, 0, 1} {
		pub.send(mqtt.AppendPublish(nil, "a/b", []byte(fmt.Sprint("m", i)), qos, false, false, uint16(100+i)))
		if qos == 1 {
			pub.want(0x40, []byte{0, byte(100 + i)})
		}
	}
	s1.publish("a/b", "m0", 1, 1)
	s1.publish("a/b", "m1", 0, 0)
	s1.publish("a/b", "m2", 1, 2)
	for i := 0; i < 3; i++ {
		s0.publish("a/b", fmt.Sprint("m", i), 0, 0)
	}
	pub.send([]byte{0xc0, 0})
	pub.want(0xd0, nil)
	s0.send([]byte{0xc0, 0}) // nothing more came before the PINGRESP: one copy each
	s0.want(0xd0, nil)
}

// TestPartialAndLarge: a publisher that sends one byte at a time, a
// SUBACK of 130 return codes (a two-byte remaining length) and 400
// messages of 60 KB to a subscriber that reads slowly (short writes, held
// until EPOLLOUT), all in order.
func TestPartialAndLarge(t *testing.T) {
	addr := startFloor(t)
	sub, pub := dial(t, addr, "sub"), dial(t, addr, "pub")
	filters := make([]mqtt.Subscription, 130)
	codes := []byte{0, 3}
	for i := range filters {
		filters[i] = mqtt.Subscription{Filter: fmt.Sprint("t/", i), QoS: 1}
		codes = append(codes, 1)
	}
	sub.send(mqtt.AppendSubscribe(nil, 3, filters...))
	sub.want(0x90, codes)
	for _, c := range mqtt.AppendPublish(nil, "t/5", []byte("slow"), 1, false, false, 9) {
		pub.send([]byte{c})
		time.Sleep(time.Millisecond)
	}
	pub.want(0x40, []byte{0, 9})
	sub.publish("t/5", "slow", 1, 1)
	big := strings.Repeat("x", 60<<10)
	go func() {
		for i := 0; i < 400; i++ {
			pub.c.Write(mqtt.AppendPublish(nil, "t/7", []byte(fmt.Sprint(i, big)), 0, false, false, 0))
		}
	}()
	time.Sleep(300 * time.Millisecond) // the socket buffers fill: the floor holds the rest
	for i := 0; i < 400; i++ {
		sub.publish("t/7", fmt.Sprint(i, big), 0, 0)
	}
}

// TestRefused: a PUBLISH at QoS 2 (the floor speaks none), a SUBSCRIBE
// with packet id 0 and one with no filters close the connection, without
// an answer.
func TestRefused(t *testing.T) {
	addr := startFloor(t)
	c := dial(t, addr, "q2")
	c.send(mqtt.AppendPublish(nil, "a", []byte("x"), 2, false, false, 5))
	c.closed()
	c = dial(t, addr, "id0")
	c.send([]byte{0x82, 6, 0, 0, 0, 1, 'a', 0})
	c.closed()
	c = dial(t, addr, "none")
	c.send([]byte{0x82, 2, 0, 1})
	c.closed()
}
