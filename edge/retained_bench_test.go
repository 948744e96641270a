package edge

import (
	"fmt"
	"math"
	"net"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
)

// BenchmarkRetainedSubscribe measures a wildcard SUBSCRIBE over 1M retained
// topics (dev/<0..999>/<0..999>) on a one-loop server, over loopback: the
// time to the SUBACK, the time until the last matching retained message
// arrived, the longest slice the loop spent serving scans in one iteration,
// and the worst PINGREQ round trip of a canary connection on the same loop
// meanwhile (loop stall plus client and scheduler noise). The subscriber
// asks for QoS 0 and reads as fast as it can; a delivery that does not come
// within 2 s ends the op (the count then says what arrived).
func BenchmarkRetainedSubscribe(b *testing.B) {
	const groups, perGroup = 1000, 1000
	s := startServer(b, func(c *Config) { c.Loops = 1; c.AdminAddr = "" })
	payload := []byte("21.5C")
	topic := make([]byte, 0, 32)
	for g := range groups {
		for i := range perGroup {
			topic = strconv.AppendInt(append(strconv.AppendInt(append(topic[:0], "dev/"...), int64(g), 10), '/'), int64(i), 10)
			if !s.tree.setRetained(topic, payload, 0, s.cfg.MaxRetained, s.cfg.RetainedMaxBytes, s.storeSoft) {
				b.Fatal("set retained: store full")
			}
		}
	}
	hundred := make([]string, 100)
	for g := range hundred {
		hundred[g] = fmt.Sprintf("dev/%d/+", g)
	}
	for _, bc := range []struct {
		name    string
		filters []string
		want    int
	}{
		{"filters=100xdev-g-+/matching=100k", hundred, 100 * perGroup},
		{"filters=1x#/matching=1M", []string{"#"}, groups * perGroup},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var suback, deliver, worstPing time.Duration
			got := 0
			longestSlice(s)
			for b.Loop() {
				suback, deliver, worstPing, got = retainedSubscribeOnce(b, s, bc.filters, bc.want)
			}
			b.ReportMetric(float64(suback.Microseconds())/1000, "suback-ms")
			b.ReportMetric(float64(deliver.Microseconds())/1000, "deliver-ms")
			b.ReportMetric(float64(got), "msgs")
			b.ReportMetric(float64(longestSlice(s).Microseconds())/1000, "longest-slice-ms")
			b.ReportMetric(float64(worstPing.Microseconds())/1000, "canary-ping-max-ms")
		})
	}
}

func retainedSubscribeOnce(b *testing.B, s *Server, filters []string, want int) (suback, deliver, worstPing time.Duration, got int) {
	canary := newBenchConn(b, s, "canary")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ping := mqtt.AppendPingreq(nil)
		for i := 0; i < 1_000_000; i++ { // bounded; stop ends it
			select {
			case <-stop:
				return
			default:
			}
			t0 := time.Now()
			canary.write(ping)
			if canary.next().Type != mqtt.TypePingresp {
				panic("canary: want PINGRESP")
			}
			worstPing = max(worstPing, time.Since(t0))
			time.Sleep(time.Millisecond)
		}
	}()
	sub := newBenchConn(b, s, "sub")
	subs := make([]mqtt.Subscription, len(filters))
	for i, f := range filters {
		subs[i] = mqtt.Subscription{Filter: f}
	}
	t0 := time.Now()
	sub.write(mqtt.AppendSubscribe(nil, 1, subs...))
	if p := sub.next(); p.Type != mqtt.TypeSuback {
		b.Fatalf("first packet %v, want SUBACK", p.Type)
	}
	suback = time.Since(t0)
	last := t0
	for got < want {
		sub.c.SetReadDeadline(time.Now().Add(2 * time.Second))
		p, err := sub.tryNext()
		if err != nil {
			break
		}
		if p.Type == mqtt.TypePublish {
			got++
			last = time.Now()
		}
	}
	deliver = last.Sub(t0)
	close(stop)
	wg.Wait()
	sub.c.Close()
	canary.c.Close()
	waitFor(b, "the subscriber to go", func() bool { return s.Connections() == 0 })
	return suback, deliver, worstPing, got
}

// tryNext is next that returns read errors (a deadline) instead of panicking.
func (bc *benchConn) tryNext() (p *mqtt.Packet, err error) {
	defer func() {
		if r := recover(); r != nil {
			if e, ok := r.(error); ok {
				if ne, ok := e.(net.Error); ok && ne.Timeout() {
					p, err = nil, e
					return
				}
			}
			panic(r)
		}
	}()
	return bc.next(), nil
}

// BenchmarkSubscribeInsert measures one SUBSCRIBE of 100 new filters
// (load/<n>) from a client that already holds existing filters, over
// loopback: ns/filter should not grow with existing.
func BenchmarkSubscribeInsert(b *testing.B) {
	for _, existing := range []int{0, 200_000} {
		b.Run(fmt.Sprintf("existing=%d", existing), func(b *testing.B) {
			s := startServer(b, func(c *Config) { c.AdminAddr = ""; c.MaxSubscriptions = 1 << 30 })
			c := newBenchConn(b, s, "many")
			next, id := 0, uint16(0)
			batch := func() {
				subs := make([]mqtt.Subscription, 100)
				for i := range subs {
					subs[i] = mqtt.Subscription{Filter: "load/" + strconv.Itoa(next), QoS: 1}
					next++
				}
				id = id%60000 + 1
				c.write(mqtt.AppendSubscribe(nil, id, subs...))
				if p := c.next(); p.Type != mqtt.TypeSuback || p.ReturnCodes[99] != 1 {
					b.Fatalf("got %v %x, want SUBACK granting 100 filters", p.Type, p.ReturnCodes)
				}
			}
			for next < existing {
				batch()
			}
			b.ResetTimer()
			start := time.Now()
			n := 0
			for b.Loop() {
				batch()
				n += 100
			}
			b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(n), "ns/filter")
		})
	}
}

// BenchmarkTreeSubscribe measures, in process, subscribing and then
// unsubscribing one client at a filter node that already holds subs other
// clients' subscriptions: the cost should not grow with subs.
func BenchmarkTreeSubscribe(b *testing.B) {
	for _, subs := range []int{0, 200_000} {
		b.Run(fmt.Sprintf("subs-at-node=%d", subs), func(b *testing.B) {
			tr := newTopicTree()
			reg := newRegistry()
			for i := range subs {
				cl := reg.lock([]byte("c"+strconv.Itoa(i)), true)
				tr.subscribe("sensors/+/temp", cl, 1)
				cl.mu.Unlock()
			}
			me := reg.lock([]byte("me"), true)
			defer me.mu.Unlock()
			b.ReportAllocs()
			for b.Loop() {
				tr.subscribe("sensors/+/temp", me, 1)
				if !tr.unsubscribe("sensors/+/temp", me) {
					b.Fatal("unsubscribe: not found")
				}
			}
		})
	}
}

// longestSlice returns and resets the longest scan slice of s's loops.
func longestSlice(s *Server) time.Duration {
	d := s.longestScanSlice()
	for _, ls := range s.loops {
		ls.longestSlice.Store(0)
	}
	return d
}

// BenchmarkScanSlice measures, in process and without sockets, one loop
// iteration's worth of scan work (scanBudget visits) over 1M retained
// topics: the trie walk, each matching message pushed into the client's
// inbox as a PUBLISH and taken out again as a QoS 0 send would, with its
// bytes appended to an output buffer. This is the loop time a scan costs
// per iteration, free of the socket and scheduler noise of a shared
// machine; the socket benchmark above adds those.
func BenchmarkScanSlice(b *testing.B) {
	s, err := New(Config{Addr: "127.0.0.1:0", Loops: 1, Auth: AuthAnonymous})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	topic := make([]byte, 0, 32)
	for g := range 1000 {
		for i := range 1000 {
			topic = strconv.AppendInt(append(strconv.AppendInt(append(topic[:0], "dev/"...), int64(g), 10), '/'), int64(i), 10)
			s.tree.setRetained(topic, []byte("21.5C"), 0, s.cfg.MaxRetained, s.cfg.RetainedMaxBytes, s.storeSoft)
		}
	}
	cl := s.reg.lock([]byte("sub"), true)
	defer cl.mu.Unlock()
	for _, filter := range []string{"#", "dev/+/7", "+/+/+"} {
		b.Run("filter="+filter, func(b *testing.B) {
			sc := s.tree.startScan(filter, 0, 0)
			out := make([]byte, 0, 1<<20)
			msgs := 0
			b.ReportAllocs()
			for b.Loop() {
				budget := scanBudget
				s.tree.rmu.RLock()
				done := s.tree.step(sc, &budget, func(r *rnode) bool {
					s.pushLocked(cl, []byte(r.topic), r.payload, min(sc.qos, r.qos), true, 0)
					q := cl.box()
					out = append(out[:0], *q.at(0).buf...)
					q.remove(0)
					msgs++
					return true
				})
				s.tree.rmu.RUnlock()
				if done { // start over: every op is a full slice
					s.tree.endScan(sc)
					sc = s.tree.startScan(filter, 0, 0)
				}
			}
			s.tree.endScan(sc)
			cl.kick = false
			b.ReportMetric(float64(msgs)/float64(b.N), "msgs/slice")
		})
	}
}

// BenchmarkRetainedHeap measures the heap held per retained topic with 1M
// topics dev/<0..999>/<0..999> and 5-byte payloads (HeapAlloc after
// minus before, after a GC each).
func BenchmarkRetainedHeap(b *testing.B) {
	var perTopic float64
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		tr := newTopicTree()
		topic := make([]byte, 0, 32)
		for g := range 1000 {
			for i := range 1000 {
				topic = strconv.AppendInt(append(strconv.AppendInt(append(topic[:0], "dev/"...), int64(g), 10), '/'), int64(i), 10)
				tr.setRetained(topic, []byte("21.5C"), 0, 1<<30, math.MaxInt64, math.MaxInt64)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perTopic = float64(after.HeapAlloc-before.HeapAlloc) / 1e6
		runtime.KeepAlive(tr)
	}
	b.ReportMetric(perTopic, "heap-B/topic")
}
