package edge

import (
	"bytes"
	"math"
	"net/netip"
	"strconv"
	"time"
)

// The $SYS/broker/ tree: server statistics published the way mosquitto
// publishes them (mosquitto's sys_tree.c and mosquitto(8), "BROKER
// STATUS"), so that MQTT tools that read them (mosquitto_sub -t
// '$SYS/broker/#', MQTT Explorer, monitoring plugins) work unchanged.
//
//   - Every Config.SysInterval (edged: --sys-interval, default 10 s,
//     mosquitto's sys_interval) a goroutine off the event loops reads the
//     counters and publishes each topic as a retained QoS 0 message
//     through the topic tree (counted in the retained store, about 40
//     topics and a few KiB, as mosquitto counts them); like
//     mosquitto it republishes a value only when it changed, except
//     uptime, which is published every time.
//   - Access: a filter whose first level is $SYS is granted only to a
//     client connected from a loopback address (the rule of the admin API
//     without a token: what is on the host is the operator's); any other
//     client gets SUBACK 0x80. Clients never publish there (PUBLISH and
//     wills on $ topics are refused).
//   - Wildcards: a filter starting with + or # never matches a $ topic
//     (MQTT 3.1.1 section 4.7.2; reservedTopic), so '#' subscribers see
//     none of it.

// DefaultSysInterval is mosquitto's default sys_interval.
const DefaultSysInterval = 10 * time.Second

// sysFilter reports whether filter's first level is $SYS.
func sysFilter(filter []byte) bool {
	return bytes.HasPrefix(filter, []byte("$SYS")) && (len(filter) == 4 || filter[4] == '/')
}

// sysAllowed is the $SYS access rule: loopback peers only.
func sysAllowed(peer netip.Addr) bool { return peer.Unmap().IsLoopback() }

// sysLoad is one exponentially decaying load average, in events per
// minute, as mosquitto computes $SYS/broker/load/.../{1,5,15}min.
type sysLoad struct {
	value float64
	last  float64 // the counter at the previous update
}

// update folds the counter's new total, dt seconds after the previous
// one, into a load with the given window (seconds): mosquitto's calc_load,
// new = rate + exp(-dt/window) * (old - rate), rate per minute.
func (l *sysLoad) update(total float64, dt, window float64) {
	rate := (total - l.last) * 60 / dt
	l.last = total
	l.value = rate + math.Exp(-dt/window)*(l.value-rate)
}

// sysPublisher holds what the $SYS goroutine keeps between intervals.
type sysPublisher struct {
	s       *Server
	ls      loopState // scratch for publishGeneric (its subs slice only)
	start   time.Time
	lastAt  time.Time
	last    map[string]string // last published value per topic
	loads   map[string]*[3]sysLoad
	maxConn int64
	buf     []byte
}

// sysLoadWindows are the 1, 5 and 15 minute windows, in seconds.
var sysLoadWindows = [3]struct {
	name string
	secs float64
}{{"1min", 60}, {"5min", 300}, {"15min", 900}}

// runSys publishes the $SYS tree at once and then every interval until stop.
func (s *Server) runSys(interval time.Duration, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	p := &sysPublisher{s: s, start: time.Now(), last: map[string]string{}, loads: map[string]*[3]sysLoad{}}
	p.lastAt = p.start
	p.publishAll(p.start)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			p.publishAll(now)
		}
	}
}

// sysCounters returns the totals the tree reports.
func (s *Server) sysCounters() (received, sent, bytesIn, bytesOut uint64) {
	received, sent = s.stats.published.Load(), s.sentTotal()
	for _, l := range s.eng.Stats() {
		bytesIn += uint64(l.BytesIn)
		bytesOut += uint64(l.BytesOut)
	}
	return received, sent, bytesIn, bytesOut
}

// sentTotal is the number of PUBLISH packets the loops wrote to clients.
func (s *Server) sentTotal() (n uint64) {
	for _, ls := range s.loops {
		n += ls.sent.Load()
	}
	return n
}

func (p *sysPublisher) publishAll(now time.Time) {
	s := p.s
	conns, clients := s.conns.Load(), s.reg.count.Load()
	p.maxConn = max(p.maxConn, conns)
	recv, sent, bin, bout := s.sysCounters()
	retained := int64(s.tree.retainedCount())
	// mosquitto's "messages held in the message store": retained
	// messages plus every inbox's entries.
	stored := retained + s.entries.Load()

	p.pub("$SYS/broker/version", "edged version "+s.cfg.Version)
	p.pubAlways("$SYS/broker/uptime", strconv.FormatInt(int64(now.Sub(p.start)/time.Second), 10)+" seconds")
	p.pubInt("$SYS/broker/clients/connected", conns)
	p.pubInt("$SYS/broker/clients/active", conns) // mosquitto's deprecated alias of connected
	p.pubInt("$SYS/broker/clients/total", clients)
	p.pubInt("$SYS/broker/clients/disconnected", max(clients-conns, 0))
	p.pubInt("$SYS/broker/clients/inactive", max(clients-conns, 0))
	p.pubInt("$SYS/broker/clients/maximum", p.maxConn)
	p.pubInt("$SYS/broker/messages/received", int64(recv))
	p.pubInt("$SYS/broker/messages/sent", int64(sent))
	p.pubInt("$SYS/broker/publish/messages/received", int64(recv))
	p.pubInt("$SYS/broker/publish/messages/sent", int64(sent))
	p.pubInt("$SYS/broker/messages/stored", stored)
	p.pubInt("$SYS/broker/store/messages/count", stored)
	p.pubInt("$SYS/broker/store/messages/bytes", s.held.Load())
	p.pubInt("$SYS/broker/retained messages/count", retained)
	p.pubInt("$SYS/broker/bytes/received", int64(bin))
	p.pubInt("$SYS/broker/bytes/sent", int64(bout))

	if dt := now.Sub(p.lastAt).Seconds(); dt > 0 {
		p.lastAt = now
		p.load("messages/received", float64(recv), dt)
		p.load("messages/sent", float64(sent), dt)
		p.load("publish/received", float64(recv), dt)
		p.load("publish/sent", float64(sent), dt)
		p.load("bytes/received", float64(bin), dt)
		p.load("bytes/sent", float64(bout), dt)
	} else { // the first round: set the bases, publish zeros
		for _, k := range []struct {
			name string
			v    float64
		}{{"messages/received", float64(recv)}, {"messages/sent", float64(sent)}, {"publish/received", float64(recv)},
			{"publish/sent", float64(sent)}, {"bytes/received", float64(bin)}, {"bytes/sent", float64(bout)}} {
			l := p.loadOf(k.name)
			for i := range l {
				l[i].last = k.v
			}
			p.publishLoad(k.name, l)
		}
	}
}

func (p *sysPublisher) loadOf(name string) *[3]sysLoad {
	l := p.loads[name]
	if l == nil {
		l = new([3]sysLoad)
		p.loads[name] = l
	}
	return l
}

func (p *sysPublisher) load(name string, total, dt float64) {
	l := p.loadOf(name)
	for i, w := range sysLoadWindows {
		l[i].update(total, dt, w.secs)
	}
	p.publishLoad(name, l)
}

// publishLoad publishes a load's three windows with two decimals, as
// mosquitto does ("%.2f"); a value that did not change in its second
// decimal is not republished.
func (p *sysPublisher) publishLoad(name string, l *[3]sysLoad) {
	for i, w := range sysLoadWindows {
		p.pub("$SYS/broker/load/"+name+"/"+w.name, strconv.FormatFloat(l[i].value, 'f', 2, 64))
	}
}

func (p *sysPublisher) pubInt(topic string, v int64) { p.pub(topic, strconv.FormatInt(v, 10)) }

// pub publishes topic if its value changed since the last time.
func (p *sysPublisher) pub(topic, v string) {
	if old, ok := p.last[topic]; ok && old == v {
		return
	}
	p.pubAlways(topic, v)
}

func (p *sysPublisher) pubAlways(topic, v string) {
	p.last[topic] = v
	p.buf = append(p.buf[:0], v...)
	p.s.publishGeneric(&p.ls, []byte(topic), p.buf, 0, true)
}

// startSys starts the $SYS goroutine if Config.SysInterval is positive.
// Caller holds s.mu.
func (s *Server) startSys() {
	if s.cfg.SysInterval <= 0 {
		return
	}
	s.stopSysC, s.sysDone = make(chan struct{}), make(chan struct{})
	go s.runSys(s.cfg.SysInterval, s.stopSysC, s.sysDone)
}

// stopSys stops the $SYS goroutine and waits for it.
func (s *Server) stopSys() {
	s.mu.Lock()
	stop, done := s.stopSysC, s.sysDone
	s.stopSysC = nil
	s.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}
