package edge

import (
	"context"
	"math"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/internal/testenv"
)

// sysServer is a server publishing $SYS every 100 ms.
func sysServer(t *testing.T, mod func(*Config)) *Server {
	return startServer(t, func(c *Config) {
		c.SysInterval, c.Version = 100*time.Millisecond, "1.2.3-test"
		if mod != nil {
			mod(c)
		}
	})
}

// waitSys reads the $SYS PUBLISHes c subscribed to, keeping the latest
// value of each topic (what the retained store holds), until ok holds.
func waitSys(c *rawClient, ok func(latest map[string]string) bool) {
	c.t.Helper()
	latest := map[string]string{}
	for !ok(latest) {
		p := c.expect(mqtt.TypePublish)
		latest[p.Topic] = p.Payload
	}
}

// TestSysTreeMosquittoSub: the $SYS/broker/ tree as mosquitto_sub reads
// it from a loopback client: the topics mosquitto publishes, retained, with
// values that follow the traffic.
func TestSysTreeMosquittoSub(t *testing.T) {
	requireMosquitto(t)
	s := sysServer(t, nil)
	pub := dial(t, s)
	pub.connect("alice", false)
	pub.publish("u/bob/m1", "hi", 1)
	pub.expect(mqtt.TypePuback)
	watch := dial(t, s)
	watch.connect("watch", false)
	if code := watch.subscribe("$SYS/broker/#", 0); code != 0 {
		t.Fatalf("loopback SUBSCRIBE $SYS/broker/#: SUBACK %#x", code)
	}
	// A round reads the counters before it publishes, so wait for one that
	// read them after both clients connected and watch got a message: the
	// retained values mosquitto_sub reads below are then at least these.
	waitSys(watch, func(v map[string]string) bool {
		return v["$SYS/broker/messages/received"] == "1" && atLeast(v["$SYS/broker/clients/connected"], 2) &&
			atLeast(v["$SYS/broker/messages/sent"], 1)
	})

	// --retained-only prints the retained values and exits at the first
	// live message (uptime is republished every interval).
	// -F with '=': a topic may hold a space ("retained messages/count").
	out := mosqSub(t, s, "-t", "$SYS/broker/#", "-F", "%t=%p", "--retained-only", "-W", "10")()
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		topic, v, _ := strings.Cut(line, "=")
		got[topic] = v
	}
	want := map[string]func(string) bool{
		"$SYS/broker/version":              func(v string) bool { return v == "edged version 1.2.3-test" },
		"$SYS/broker/uptime":               func(v string) bool { return strings.HasSuffix(v, " seconds") },
		"$SYS/broker/clients/connected":    func(v string) bool { return atLeast(v, 2) },
		"$SYS/broker/clients/total":        func(v string) bool { return atLeast(v, 3) }, // alice, watch, bob's inbox
		"$SYS/broker/clients/maximum":      func(v string) bool { return atLeast(v, 2) },
		"$SYS/broker/messages/received":    func(v string) bool { return v == "1" },
		"$SYS/broker/messages/sent":        func(v string) bool { return atLeast(v, 1) }, // the $SYS values to watch
		"$SYS/broker/store/messages/bytes": func(v string) bool { return atLeast(v, 1) },
		"$SYS/broker/bytes/received":       func(v string) bool { return atLeast(v, 1) },
		"$SYS/broker/bytes/sent":           func(v string) bool { return atLeast(v, 1) },
	}
	for _, w := range sysLoadWindows {
		for _, k := range []string{"messages/received", "messages/sent", "bytes/received", "bytes/sent"} {
			want["$SYS/broker/load/"+k+"/"+w.name] = func(v string) bool {
				f, err := strconv.ParseFloat(v, 64)
				return err == nil && f >= 0 && strings.Count(v, ".") == 1 && len(v)-strings.IndexByte(v, '.') == 3
			}
		}
	}
	// The same round read both: the retained topics plus bob's message
	// (watch's QoS 0 deliveries leave its inbox as they are written).
	if r, err := strconv.Atoi(got["$SYS/broker/retained messages/count"]); err != nil || r < 1 ||
		got["$SYS/broker/messages/stored"] != strconv.Itoa(r+1) {
		t.Errorf("messages/stored %q, retained messages/count %q: want retained + 1",
			got["$SYS/broker/messages/stored"], got["$SYS/broker/retained messages/count"])
	}
	for topic, ok := range want {
		v, have := got[topic]
		if !have || !ok(v) {
			t.Errorf("%s = %q (present %v)", topic, v, have)
		}
	}
	if t.Failed() {
		t.Logf("mosquitto_sub printed:\n%s", out)
	}
}

func atLeast(v string, n int64) bool {
	i, err := strconv.ParseInt(v, 10, 64)
	return err == nil && i >= n
}

// TestSysKeptOutOfWildcards: '#' and '+/...' never match $SYS topics
// (MQTT 3.1.1 section 4.7.2), neither live nor retained.
func TestSysKeptOutOfWildcards(t *testing.T) {
	s := sysServer(t, nil)
	// The first round is published by the $SYS goroutine after Start:
	// a SUBSCRIBE before it would get a live uptime, not the retained one.
	waitFor(t, "the first $SYS round", func() bool { _, _, ok := s.tree.retained("$SYS/broker/uptime"); return ok })
	sys := dial(t, s)
	sys.connect("sys", false)
	if code := sys.subscribe("$SYS/broker/uptime", 0); code != 0 {
		t.Fatalf("SUBSCRIBE $SYS/broker/uptime: %#x", code)
	}
	if p := sys.expect(mqtt.TypePublish); !p.Retain {
		t.Fatalf("first uptime not retained: %+v", p)
	}
	all := dial(t, s)
	all.connect("all", false)
	for _, f := range []string{"#", "+/broker/#", "+"} {
		if code := all.subscribe(f, 0); code != 0 {
			t.Fatalf("SUBSCRIBE %s: %#x", f, code)
		}
	}
	// Two live uptimes after all's subscriptions: the second one's round
	// started after them, and its uptime went through the tree (to all too,
	// if a wildcard matched it) before the marker below was published.
	sys.expect(mqtt.TypePublish)
	sys.expect(mqtt.TypePublish)
	mark := dial(t, s)
	mark.connect("mark", false)
	mark.publish("marker", "x", 0)
	if p := all.expect(mqtt.TypePublish); p.Topic != "marker" {
		t.Fatalf("wildcard subscriber got %q before the marker", p.Topic)
	}
}

// TestSysRefusedOffLoopback: a client connected from a non-loopback
// address gets SUBACK 0x80 for every $SYS filter (mosquitto_sub: "All
// subscription requests were denied."); other filters are granted.
func TestSysRefusedOffLoopback(t *testing.T) {
	requireMosquitto(t)
	ip := nonLoopbackIP(t)
	s := sysServer(t, func(c *Config) { c.Addr, c.Auth = net.JoinHostPort(ip, "0"), AuthAnonymous })
	c := dial(t, s)
	c.connect("remote", false)
	for _, f := range []string{"$SYS/broker/#", "$SYS/#", "$SYS", "$SYS/broker/uptime", "$SYS/+/version"} {
		if code := c.subscribe(f, 0); code != mqtt.SubackFailure {
			t.Errorf("SUBSCRIBE %s from %s: SUBACK %#x, want 0x80", f, ip, code)
		}
	}
	for _, f := range []string{"#", "$SYSTEM/x", "sys/broker/#"} {
		if code := c.subscribe(f, 0); code != 0 {
			t.Errorf("SUBSCRIBE %s from %s: SUBACK %#x, want 0", f, ip, code)
		}
	}
	_, port := hostPort(s)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "mosquitto_sub", "-h", ip, "-p", port, "-t", "$SYS/broker/#", "-C", "1", "-W", "5").CombinedOutput()
	if !strings.Contains(string(out), "All subscription requests were denied") {
		t.Errorf("mosquitto_sub from %s printed %q, want the denial", ip, out)
	}
}

// nonLoopbackIP returns an IPv4 address of this host that is not loopback,
// or fails (CI) / skips the test.
func nonLoopbackIP(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatalf("interface addresses: %v", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	testenv.Require(t, false, "no non-loopback IPv4 address on this host to connect from")
	return ""
}

// TestSysLoad checks the load average against mosquitto's formula: a
// steady rate converges to that rate per minute, and one step from 0 is
// rate*(1-exp(-dt/window)).
func TestSysLoad(t *testing.T) {
	var l sysLoad
	l.update(100, 10, 60) // 100 events in 10 s: 600/min
	if want := 600 * (1 - math.Exp(-10.0/60)); math.Abs(l.value-want) > 1e-9 {
		t.Fatalf("one step: %v, want %v", l.value, want)
	}
	total := 100.0
	for range 200 {
		total += 100
		l.update(total, 10, 60)
	}
	if math.Abs(l.value-600) > 0.01 {
		t.Fatalf("steady 600/min converged to %v", l.value)
	}
}
