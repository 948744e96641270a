// Command tlsfloor is the least a server built on crypto/tls does per MQTT
// handshake: Go's own netpoller and a goroutine per connection (the
// cheapest way to drive crypto/tls, which edged cannot afford at its
// density but a stick for CPU need not), tls.Server with session tickets
// on (Go's defaults: TLS 1.2 and 1.3, X25519 preferred), a CONNACK for the
// CONNECT and nothing else. It is a measuring stick for issue #15's
// handshakes per second, not a broker: run it beside mosquitto and edged
// under
//
//	edgebench churn --tls [--tls-resume] --cafile ca.pem --target 127.0.0.1:PORT --server-pid PID ...
//
// and its CPU per handshake is what the standard library (crypto/tls) and
// the kernel charge any Go server for one TCP connection, one TLS handshake
// and one MQTT CONNECT/CONNACK. What edged spends above it is its own.
//
// MQTT: CONNECT gets CONNACK (accepted, unparsed: a stick checks nothing),
// PINGREQ gets PINGRESP, a QoS 0 PUBLISH of any size is read and dropped
// (so mosquitto_pub can be pointed at it); DISCONNECT or anything else
// closes the connection. The handshake and the CONNECT must come within
// 10 s; after that no keepalive is enforced (a peer that vanishes without
// a FIN keeps its goroutine: fine on loopback, not for a real network).
package main

import (
	"bufio"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18998", "TCP address to listen on")
	cert := flag.String("tls-cert", "", "PEM certificate chain `file`")
	key := flag.String("tls-key", "", "PEM private key `file`")
	flag.Parse()
	ln, err := listenTLS(*listen, *cert, *key)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tlsfloor:", err)
		os.Exit(2)
	}
	fmt.Printf("tlsfloor: listening on %s, pid %d\n", ln.Addr(), os.Getpid())
	err = serve(ln)
	fmt.Fprintln(os.Stderr, "tlsfloor:", err)
	os.Exit(1)
}

// listenTLS listens on addr with the certificate and key in certFile and
// keyFile.
func listenTLS(addr, certFile, keyFile string) (net.Listener, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("--tls-cert and --tls-key are required")
	}
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load certificate: %w", err)
	}
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		return nil, err // "listen tcp4 ADDR: ..."
	}
	return tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{c}}), nil
}

// serve accepts until the listener fails.
func serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
			time.Sleep(5 * time.Millisecond) // out of descriptors: let some close
			continue
		}
		if err != nil {
			return err
		}
		go handle(c)
	}
}

// handle answers one connection's packets until it ends. The handshake
// runs on the first read; one that has not finished within 10 s is cut.
func handle(c net.Conn) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReaderSize(c, 512)
	var body [256]byte
	for {
		hdr, err := r.ReadByte()
		if err != nil {
			return
		}
		var n, shift int
		for {
			b, err := r.ReadByte()
			if err != nil || shift > 21 {
				return
			}
			n |= int(b&0x7f) << shift
			shift += 7
			if b < 0x80 {
				break
			}
		}
		if hdr&0xf0 == 0x30 && hdr&0x06 == 0 { // PUBLISH, QoS 0: nobody to forward it to
			if _, err := io.CopyN(io.Discard, r, int64(n)); err != nil {
				return
			}
			continue
		}
		if n > len(body) {
			return
		}
		if _, err := io.ReadFull(r, body[:n]); err != nil {
			return
		}
		var reply []byte
		switch hdr {
		case 0x10: // CONNECT
			reply = []byte{0x20, 2, 0, 0}
			c.SetReadDeadline(time.Time{})
		case 0xc0: // PINGREQ
			reply = []byte{0xd0, 0}
		default: // DISCONNECT, or what a stick does not speak
			return
		}
		if _, err := c.Write(reply); err != nil {
			return
		}
	}
}
