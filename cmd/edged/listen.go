package main

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// listener is one --listen value:
// [NAME=][tcp://|tls://|ws://|wss://]ADDR[/PATH][%IFACE]; tls:// terminates
// TLS (--tls-cert, --tls-key), ws:// serves MQTT over WebSocket on PATH
// (default /mqtt), wss:// both, a bare ADDR is plain TCP.
// A listener that
// names an interface is a NIC group: its sockets bind ADDR's IP on an
// ephemeral port, so only eBPF SK_LOOKUP steering, which sends connections
// that arrive on IFACE for ADDR's port to the group, reaches them; without
// the program the port is closed (fail closed).
type listener struct {
	name  string
	addr  string // as given: host:port
	iface string
	tls   bool
	path  string // ws:// and wss://: the upgrade requests' path; "" = not WebSocket
}

func (l listener) String() string {
	s := l.addr
	switch {
	case l.path != "" && l.tls:
		s = "wss://" + s + l.path
	case l.path != "":
		s = "ws://" + s + l.path
	case l.tls:
		s = "tls://" + s
	}
	if l.name != "" {
		s = l.name + "=" + s
	}
	if l.iface != "" {
		s += "%" + l.iface
	}
	return s
}

// bindAddr is where the group's sockets bind.
func (l listener) bindAddr() string {
	if l.iface == "" {
		return l.addr
	}
	host, _, _ := net.SplitHostPort(l.addr)
	return net.JoinHostPort(host, "0")
}

// listenFlag is a repeatable --listen; the first Set replaces the default.
type listenFlag struct {
	list []listener
	set  bool
}

func (f *listenFlag) String() string {
	var parts []string
	for _, l := range f.list {
		parts = append(parts, l.String())
	}
	return strings.Join(parts, ",")
}

func (f *listenFlag) Set(v string) error {
	if !f.set {
		f.list, f.set = nil, true
	}
	for _, one := range strings.Split(v, ",") {
		l, err := parseListener(strings.TrimSpace(one))
		if err != nil {
			return err
		}
		f.list = append(f.list, l)
	}
	return nil
}

func parseListener(v string) (listener, error) {
	var l listener
	if name, rest, ok := strings.Cut(v, "="); ok {
		l.name, v = name, rest
		if name == "" {
			return l, fmt.Errorf("listener %q: empty name before '='", v)
		}
	}
	ws := false
	switch {
	case strings.HasPrefix(v, "tls://"):
		v, l.tls = v[len("tls://"):], true
	case strings.HasPrefix(v, "wss://"):
		v, l.tls, ws = v[len("wss://"):], true, true
	case strings.HasPrefix(v, "ws://"):
		v, ws = v[len("ws://"):], true
	default:
		v = strings.TrimPrefix(v, "tcp://")
	}
	if addr, iface, ok := strings.Cut(v, "%"); ok {
		v, l.iface = addr, iface
		if iface == "" {
			return l, fmt.Errorf("listener %q: empty interface after '%%'", v)
		}
	}
	if i := strings.IndexByte(v, '/'); i >= 0 {
		if !ws {
			return l, fmt.Errorf("listener %q: a path is for ws:// and wss:// listeners only", v)
		}
		v, l.path = v[:i], v[i:]
	}
	if ws && l.path == "" {
		l.path = "/mqtt"
	}
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return l, fmt.Errorf("listener %q: %w", v, err)
	}
	if l.iface != "" {
		if _, err := netip.ParseAddr(host); err != nil || port == "0" {
			return l, fmt.Errorf("listener %q on interface %s: want a literal IP and a fixed port", v, l.iface)
		}
	}
	l.addr = v
	return l, nil
}
