//go:build linux

// Command floor is the least an MQTT broker can do per message: one thread,
// one epoll set, level-triggered, every syscall raw (the Go scheduler never
// sees it), no store, no limits, no timers, exact-topic routing in a map. It
// is a measuring stick for issue #12 part 3 (CPU per message at moderate
// load), not a broker: run it beside mosquitto and edged under
//
//	edgebench compare --workload pairs --pairs 1000 --qos 1 --rate R ... \
//	  --target floor=127.0.0.1:PORT,pid=PID,profile=generic
//
// and its CPU per message is what the kernel charges any epoll server for
// the socket work of a QoS 1 pair (read the PUBLISH, write the PUBACK, write
// the PUBLISH to the receiver, read its PUBACK) plus one wake-up per event
// batch. What a real server spends above it is its own.
//
// It speaks just enough MQTT 3.1.1 for edgebench's generic pairs: CONNECT,
// SUBSCRIBE (exact topics), PUBLISH QoS 0/1, PUBACK, PINGREQ, DISCONNECT.
// Anything else (QoS 2 included) closes the connection.
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"github.com/edgedhq/edged/edge/mqtt"
	"golang.org/x/sys/unix"
)

type conn struct {
	in   []byte
	out  []byte // bytes a short write left, sent on EPOLLOUT
	pid  uint16
	subs []string
	open bool
}

type sub struct {
	fd  int32
	qos byte // granted
}

type broker struct {
	ep    int
	conns []conn           // by fd
	subs  map[string][]sub // topic -> its subscribers
	buf   []byte           // reads
	obuf  []byte           // a PUBLISH being forwarded
	codes []byte           // a SUBACK's return codes
	ack   []byte           // a SUBACK
}

func main() {
	listen := flag.String("listen", "127.0.0.1:18999", "TCP address to listen on")
	gather := flag.Duration("gather", 0, "after handling the events a wait found, sleep this long before the next wait (`d`), so that the next one finds more: what coalescing wake-ups buys and costs")
	flag.Parse()
	// One P: the loop below blocks in a raw epoll_wait and no other
	// goroutine needs to run (see serve).
	runtime.GOMAXPROCS(1)
	lfd, err := listenTCP(*listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
	fmt.Printf("floor: listening on %s, pid %d\n", *listen, os.Getpid())
	err = serve(lfd, *gather)
	fmt.Fprintln(os.Stderr, "floor:", err)
	os.Exit(1)
}

// listenTCP opens a non-blocking listening socket on addr (IPv4).
func listenTCP(addr string) (int, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return -1, err
	}
	if !ap.Addr().Is4() {
		return -1, fmt.Errorf("listen %s: IPv4 only", addr)
	}
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("listen %s: %w", addr, err)
	}
	_ = unix.SetsockoptInt(lfd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err = unix.Bind(lfd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err == nil {
		err = unix.Listen(lfd, 4096)
	}
	if err != nil {
		unix.Close(lfd)
		return -1, fmt.Errorf("listen %s: %w", addr, err)
	}
	return lfd, nil
}

// serve runs the loop on the listening socket lfd; it returns only on an
// epoll failure.
func serve(lfd int, gather time.Duration) error {
	ts := unix.NsecToTimespec(gather.Nanoseconds())
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll: %w", err)
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, lfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(lfd)}); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	b := &broker{ep: ep, conns: make([]conn, 1<<16), subs: map[string][]sub{}, buf: make([]byte, 64<<10), obuf: make([]byte, 0, 64<<10)}
	var evs [256]unix.EpollEvent
	// The runtime sees a goroutine in a raw syscall as running: sysmon
	// signals one whose P ran the same goroutine for 10 ms (the wait
	// ends with EINTR), and a stop the world waits for it to reach a
	// preemption point, which nothing on this path is. So the wait is
	// bounded by yieldEvery and the loop passes through the scheduler
	// that often (one goroutine: a cheap Gosched, no thread hand-off),
	// and sysmon never has a reason to signal it (it looks at most every
	// 10 ms once idle, and signals a goroutine it saw on the same tick at
	// a look 10 ms before): an idle floor wakes ~110 times a second, and
	// sysmon ~100.
	const yieldEvery = 9 * time.Millisecond
	lastYield := time.Now()
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(&evs[0])), uintptr(len(evs)), uintptr(yieldEvery/time.Millisecond), 0, 0)
		if now := time.Now(); e == unix.EINTR || now.Sub(lastYield) >= yieldEvery {
			lastYield = now
			runtime.Gosched()
		}
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return fmt.Errorf("epoll_wait: %w", e)
		}
		for i := 0; i < int(n); i++ {
			fd := int(evs[i].Fd)
			if fd == lfd {
				b.acceptAll(lfd)
				continue
			}
			if evs[i].Events&unix.EPOLLOUT != 0 {
				b.flush(fd)
			}
			if evs[i].Events&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				b.readConn(fd)
			}
		}
		if n > 0 && gather > 0 {
			unix.RawSyscall(unix.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&ts)), 0, 0)
		}
	}
}

func rawRead(fd int, p []byte) (int, syscall.Errno) {
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), e
}

func rawWrite(fd int, p []byte) (int, syscall.Errno) {
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), e
}

func (b *broker) acceptAll(lfd int) {
	for {
		nfd, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(lfd), 0, 0, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
		if e != 0 {
			return
		}
		fd := int(nfd)
		if fd >= len(b.conns) {
			unix.Close(fd)
			continue
		}
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		b.conns[fd] = conn{open: true}
		if err := unix.EpollCtl(b.ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)}); err != nil {
			unix.Close(fd)
			b.conns[fd] = conn{}
		}
	}
}

func (b *broker) readConn(fd int) {
	c := &b.conns[fd]
	if !c.open {
		return
	}
	n, e := rawRead(fd, b.buf)
	if e == unix.EAGAIN {
		return
	}
	if e != 0 || n == 0 {
		b.closeConn(fd)
		return
	}
	data := b.buf[:n]
	if len(c.in) > 0 {
		c.in = append(c.in, data...)
		data = c.in
	}
	used, ok := b.packets(fd, data)
	if !ok {
		b.closeConn(fd)
		return
	}
	c = &b.conns[fd]
	rest := data[used:]
	if len(rest) == 0 {
		c.in = c.in[:0]
		return
	}
	c.in = append(c.in[:0], rest...)
}

// packets handles the whole packets at the front of data and returns how
// many bytes they took.
func (b *broker) packets(fd int, data []byte) (int, bool) {
	used := 0
	for {
		p := data[used:]
		if len(p) < 2 {
			return used, true
		}
		rl, mult, hl := 0, 1, 1
		for {
			if hl >= len(p) {
				return used, true
			}
			d := p[hl]
			rl += int(d&0x7f) * mult
			mult *= 128
			hl++
			if d&0x80 == 0 {
				break
			}
			if hl > 4 {
				return used, false
			}
		}
		if len(p) < hl+rl {
			return used, true
		}
		if !b.packet(fd, p[0], p[hl:hl+rl]) {
			return used, false
		}
		used += hl + rl
	}
}

func (b *broker) packet(fd int, hdr byte, body []byte) bool {
	switch hdr >> 4 {
	case 1: // CONNECT
		b.send(fd, []byte{0x20, 2, 0, 0})
	case 3: // PUBLISH
		qos := (hdr >> 1) & 3
		if qos > 1 || len(body) < 2 { // no QoS 2 here
			return false
		}
		tl := int(binary.BigEndian.Uint16(body))
		if len(body) < 2+tl {
			return false
		}
		topic := body[2 : 2+tl]
		rest := body[2+tl:]
		if qos > 0 {
			if len(rest) < 2 {
				return false
			}
			b.send(fd, []byte{0x40, 2, rest[0], rest[1]})
			rest = rest[2:]
		}
		for _, s := range b.subs[string(topic)] {
			b.forward(int(s.fd), min(qos, s.qos), topic, rest)
		}
	case 4: // PUBACK
	case 8: // SUBSCRIBE
		if len(body) < 2 {
			return false
		}
		codes := b.codes[:0]
		for p := body[2:]; len(p) > 0; {
			if len(p) < 3 {
				return false
			}
			tl := int(binary.BigEndian.Uint16(p))
			if len(p) < 3+tl {
				return false
			}
			t := string(p[2 : 2+tl])
			q := p[2+tl] & 3
			if q > 1 {
				q = 1
			}
			b.subscribe(fd, t, q)
			codes = append(codes, q)
			p = p[3+tl:]
		}
		b.codes = codes
		if len(codes) == 0 || body[0] == 0 && body[1] == 0 { // no filters, or packet id 0: a protocol violation
			return false
		}
		b.ack = mqtt.AppendSuback(b.ack[:0], binary.BigEndian.Uint16(body), codes)
		b.send(fd, b.ack)
	case 12: // PINGREQ
		b.send(fd, []byte{0xd0, 0})
	default: // DISCONNECT and everything this stick does not speak
		return false
	}
	return true
}

func (b *broker) forward(fd int, qos byte, topic, payload []byte) {
	c := &b.conns[fd]
	if !c.open {
		return
	}
	if qos > 0 {
		if c.pid++; c.pid == 0 {
			c.pid = 1
		}
	}
	p := mqtt.AppendPublish(b.obuf[:0], topic, payload, qos, false, false, c.pid)
	b.obuf = p
	b.send(fd, p)
}

// send writes p now; what the socket does not take waits for EPOLLOUT.
func (b *broker) send(fd int, p []byte) {
	c := &b.conns[fd]
	if len(c.out) > 0 {
		c.out = append(c.out, p...)
		return
	}
	n, e := rawWrite(fd, p)
	if e == unix.EAGAIN {
		n = 0
	} else if e != 0 {
		return // the read side sees the error and closes
	}
	if n < len(p) {
		c.out = append(c.out[:0], p[n:]...)
		_ = unix.EpollCtl(b.ep, unix.EPOLL_CTL_MOD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP, Fd: int32(fd)})
	}
}

func (b *broker) flush(fd int) {
	c := &b.conns[fd]
	for len(c.out) > 0 {
		n, e := rawWrite(fd, c.out)
		if e != 0 {
			return
		}
		c.out = c.out[n:]
	}
	c.out = nil
	_ = unix.EpollCtl(b.ep, unix.EPOLL_CTL_MOD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)})
}

// subscribe adds fd to topic's subscribers, or, subscribed already,
// replaces its QoS (as MQTT says).
func (b *broker) subscribe(fd int, topic string, qos byte) {
	s := b.subs[topic]
	for i := range s {
		if int(s[i].fd) == fd {
			s[i].qos = qos
			return
		}
	}
	b.subs[topic] = append(s, sub{fd: int32(fd), qos: qos})
	b.conns[fd].subs = append(b.conns[fd].subs, topic)
}

func (b *broker) closeConn(fd int) {
	c := &b.conns[fd]
	for _, t := range c.subs {
		s := b.subs[t]
		for i, x := range s {
			if int(x.fd) == fd {
				s = append(s[:i], s[i+1:]...)
				break
			}
		}
		if len(s) == 0 {
			delete(b.subs, t)
		} else {
			b.subs[t] = s
		}
	}
	*c = conn{}
	unix.Close(fd)
}
