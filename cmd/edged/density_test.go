package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
)

// BenchmarkIdleConnections starts the edged binary and connects clients in
// two batches of n (each client a distinct user, from 127.0.0.2 and
// 127.0.0.3, each carrying one direct message to itself with its receipt),
// and reports the server's RSS growth per connection over both batches and
// for the second batch alone (the marginal cost, once the fixed per-loop
// pools and buffers were paid for by the first batch).
func BenchmarkIdleConnections(b *testing.B) {
	const n = 5_000
	bin := buildEdgedB(b)
	for b.Loop() {
		total, marginal := idleRSS(b, bin, n)
		b.ReportMetric(total, "rss-B/conn")
		b.ReportMetric(marginal, "marginal-rss-B/conn")
	}
}

var listenRE = regexp.MustCompile(`listen=(\S+)`)

func idleRSS(b *testing.B, bin string, n int) (total, marginal float64) {
	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--admin", "off", "--loops", "2", "--in-memory")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	sc := bufio.NewScanner(stderr)
	var addr string
	for sc.Scan() {
		if m := listenRE.FindStringSubmatch(sc.Text()); m != nil {
			addr = m[1]
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	if addr == "" {
		b.Fatal("no listen address in edged's log")
	}
	time.Sleep(200 * time.Millisecond)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	r0 := rss(b, cmd.Process.Pid)
	conns = connectBatch(b, addr, conns, 0, n)
	r1 := rss(b, cmd.Process.Pid)
	conns = connectBatch(b, addr, conns, n, n)
	r2 := rss(b, cmd.Process.Pid)
	return float64(r2-r0) / float64(2*n), float64(r2-r1) / float64(n)
}

// connectBatch connects n clients numbered from first and lets each carry
// one message; it returns conns with the new ones appended.
func connectBatch(b *testing.B, addr string, conns []net.Conn, first, n int) []net.Conn {
	buf := make([]byte, 4096)
	start := len(conns)
	for i := first; i < first+n; i++ {
		src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%2))}
		d := net.Dialer{LocalAddr: src, Timeout: 10 * time.Second}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			b.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
		id := fmt.Sprint("1415555", 1000+i)
		c.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: []byte("MQTT"), ProtocolLevel: 4, ClientID: []byte(id), CleanSession: true, KeepAlive: 600}))
		// One direct message to oneself: message, PUBACK, receipt.
		if os.Getenv("NOMSG") == "" {
			c.Write(mqtt.AppendPublish(nil, "u/"+id+"/m1", []byte("hello"), 1, false, false, 1))
		}
	}
	// Drain: CONNACK, PUBACK, the message (ack it), the receipt (ack it).
	for i, c := range conns[start:] {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		var pend []byte
		pubs := 0
		connOnly := os.Getenv("NOMSG") != ""
		for pubs < 2 {
			var p mqtt.Packet
			k, err := mqtt.Decode(pend, 0, &p)
			if err != nil {
				b.Fatal(err)
			}
			if k == 0 {
				m, err := c.Read(buf)
				if err != nil {
					b.Fatalf("conn %d: %v", i, err)
				}
				pend = append(pend, buf[:m]...)
				continue
			}
			if connOnly && p.Type == mqtt.TypeConnack {
				break
			}
			if p.Type == mqtt.TypePublish {
				c.Write(mqtt.AppendPuback(nil, p.PacketID))
				pubs++
			}
			pend = pend[k:]
		}
	}
	time.Sleep(500 * time.Millisecond)
	return conns
}

func rss(b *testing.B, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no VmRSS")
	return 0
}
