package steer

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/edgedhq/edged/internal/testenv"
	"golang.org/x/sys/unix"
)

var serviceAddr = [4]byte{198, 18, 0, 1}

// dualNIC builds the dual-NIC test host: a server namespace with two veth
// links ("pub" and "priv") to a client namespace, the service address
// 198.18.0.1 on the server's lo, and client routes to it through either
// link (picked per socket with SO_BINDTODEVICE).
func dualNIC(t *testing.T) (srv, cli *netns, pubIf, privIf int) {
	srv, cli = newNetns(t), newNetns(t)
	srv.ip(t, "link", "add", "pub-s", "type", "veth", "peer", "name", "pub-c", "netns", cli.name)
	srv.ip(t, "link", "add", "priv-s", "type", "veth", "peer", "name", "priv-c", "netns", cli.name)
	for _, c := range [][]string{
		{"addr", "add", "198.18.1.1/24", "dev", "pub-s"},
		{"addr", "add", "198.18.2.1/24", "dev", "priv-s"},
		{"addr", "add", "198.18.0.1/32", "dev", "lo"},
		{"link", "set", "pub-s", "up"},
		{"link", "set", "priv-s", "up"},
	} {
		srv.ip(t, c...)
	}
	for _, c := range [][]string{
		{"addr", "add", "198.18.1.2/24", "dev", "pub-c"},
		{"addr", "add", "198.18.2.2/24", "dev", "priv-c"},
		{"link", "set", "pub-c", "up"},
		{"link", "set", "priv-c", "up"},
		{"route", "add", "198.18.0.1/32", "via", "198.18.1.1", "dev", "pub-c"},
		{"route", "add", "198.18.0.1/32", "via", "198.18.2.1", "dev", "priv-c", "metric", "10"},
	} {
		cli.ip(t, c...)
	}
	var err error
	srv.do(func() {
		var pub, priv *net.Interface
		if pub, err = net.InterfaceByName("pub-s"); err != nil {
			return
		}
		if priv, err = net.InterfaceByName("priv-s"); err != nil {
			return
		}
		pubIf, privIf = pub.Index, priv.Index
	})
	if err != nil {
		t.Fatal(err)
	}
	return srv, cli, pubIf, privIf
}

// TestDualNIC: connections to one service address land only on the group
// of the NIC they arrived on, and each group spreads over its loops.
func TestDualNIC(t *testing.T) {
	srv, cli, pubIf, privIf := dualNIC(t)
	const port, perNIC = 8883, 200

	// Nothing listens on the service address: without the program the
	// connection is refused.
	if err := dialMany(cli, serviceAddr, port, 1, "pub-c"); !errors.Is(err, unix.ECONNREFUSED) {
		t.Fatalf("connect before AttachLookup: %v, want ECONNREFUSED", err)
	}

	pubFds, _ := listenGroup(t, srv, 2, loopback, 0)
	privFds, _ := listenGroup(t, srv, 2, loopback, 0)
	pubSteer := attachT(t, Config{Policy: PolicyHash, Listeners: pubFds, SockMap: true})
	privSteer := attachT(t, Config{Policy: PolicyLeast, Listeners: privFds, SockMap: true})
	pub := startAcceptors(t, pubFds, pubSteer, nil)
	priv := startAcceptors(t, privFds, privSteer, nil)

	l, err := AttachLookup(LookupConfig{NetnsPath: "/run/netns/" + srv.name, Groups: []NICGroup{
		{Name: "public", Ifindex: pubIf, Port: port, Listeners: pubFds},
		{Name: "private", Ifindex: privIf, Port: port, Listeners: privFds},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Lookup.Close: %v", err)
		}
	})

	if err := dialMany(cli, serviceAddr, port, perNIC, "pub-c"); err != nil {
		t.Fatal(err)
	}
	pub.waitTotal(t, perNIC)
	if err := dialMany(cli, serviceAddr, port, perNIC, "priv-c"); err != nil {
		t.Fatal(err)
	}
	priv.waitTotal(t, perNIC)
	time.Sleep(50 * time.Millisecond) // let any stray accept show up
	pubLive, privLive := pub.live(), priv.live()
	t.Logf("public group %v, private group %v", pubLive, privLive)
	if pubLive[0]+pubLive[1] != perNIC || privLive[0]+privLive[1] != perNIC {
		t.Fatalf("public %v private %v: want %d on each group", pubLive, privLive, perNIC)
	}
	for _, g := range [][]int{pubLive, privLive} {
		if g[0] == 0 || g[1] == 0 {
			t.Errorf("group %v: the reuseport program did not spread over both loops", g)
		}
	}
	st, dropped, err := l.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st[0].Assigned != perNIC || st[1].Assigned != perNIC || dropped != 0 {
		t.Errorf("lookup stats %+v dropped %d, want %d per group", st, dropped, perNIC)
	}

	// Fail closed: with the private group's listeners gone, a connection
	// through the private NIC is dropped, never given to the public group.
	priv.close() // no accept(2) may hold a listener open any more
	for i, fd := range privFds {
		unix.Close(fd)
		privFds[i] = -1 // closed: listenGroup's cleanup skips it
	}
	if err := dialTimeout(cli, serviceAddr, port, "priv-c", 1500*time.Millisecond); err == nil {
		t.Fatal("connection through the private NIC succeeded with no private listener")
	}
	if _, dropped, _ := l.Stats(); dropped == 0 {
		t.Error("no drop counted for the private connection")
	}
	if got := pub.live(); got[0]+got[1] != perNIC {
		t.Errorf("public group now holds %v: the private connection leaked into it", got)
	}
}

// dialTimeout makes one non-blocking connect through dev and waits at most
// d for it to complete; it returns nil only if the connection completed.
func dialTimeout(ns *netns, addr [4]byte, port int, dev string, d time.Duration) error {
	var err error
	ns.do(func() {
		var fd int
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0); err != nil {
			return
		}
		defer unix.Close(fd)
		if err = unix.BindToDevice(fd, dev); err != nil {
			return
		}
		if err = unix.Connect(fd, &unix.SockaddrInet4{Addr: addr, Port: port}); err != nil && !errors.Is(err, unix.EINPROGRESS) {
			return
		}
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		var n int
		if n, err = unix.Poll(p, int(d/time.Millisecond)); err != nil {
			return
		}
		if n == 0 {
			err = errors.New("connect timed out")
			return
		}
		var soerr int
		if soerr, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); err == nil && soerr != 0 {
			err = unix.Errno(soerr)
		}
	})
	return err
}

func TestAttachLookupRejectsBadConfig(t *testing.T) {
	ns := newNetns(t)
	fds, _ := listenGroup(t, ns, 1, loopback, 0)
	for _, tc := range []struct {
		name   string
		groups []NICGroup
		want   string
	}{
		{"no groups", nil, "0 groups"},
		{"no ifindex", []NICGroup{{Name: "a", Listeners: fds}}, "ifindex 0"},
		{"no listeners", []NICGroup{{Name: "a", Ifindex: 1}}, "0 listeners"},
		{"duplicate", []NICGroup{{Name: "a", Ifindex: 1, Port: 1, Listeners: fds}, {Name: "b", Ifindex: 1, Port: 1, Listeners: fds}}, "both match"},
		{"not a listener", []NICGroup{{Name: "a", Ifindex: 1, Listeners: []int{0}}}, "listener fd 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := AttachLookup(LookupConfig{NetnsPath: "/run/netns/" + ns.name, Groups: tc.groups})
			if !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("AttachLookup: %v, want ErrBadConfig mentioning %q", err, tc.want)
			}
		})
	}
}

// TestLookupFamily: an IPv6 connection on a group's NIC and port, where the
// group's listeners are IPv4-only, takes the normal lookup (refused here:
// nothing listens on [::1]) instead of being dropped by the group.
func TestLookupFamily(t *testing.T) {
	ns := newNetns(t)
	fds, _ := listenGroup(t, ns, 1, loopback, 0)
	const port = 8883
	l, err := AttachLookup(LookupConfig{NetnsPath: "/run/netns/" + ns.name,
		Groups: []NICGroup{{Name: "v4", Ifindex: 1, Port: port, Listeners: fds}}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a := startAcceptors(t, fds, nil, nil)
	if err := dialMany(ns, loopback, port, 3, ""); err != nil {
		t.Fatal(err)
	}
	a.waitTotal(t, 3)
	var err6 error
	ns.do(func() {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			err6 = err
			return
		}
		defer unix.Close(fd)
		err6 = unix.Connect(fd, &unix.SockaddrInet6{Addr: [16]byte{15: 1}, Port: port})
	})
	if errors.Is(err6, unix.EAFNOSUPPORT) || errors.Is(err6, unix.EADDRNOTAVAIL) || errors.Is(err6, unix.ENETUNREACH) {
		testenv.Require(t, false, "IPv6 on loopback is needed: "+err6.Error())
	}
	if !errors.Is(err6, unix.ECONNREFUSED) {
		t.Fatalf("IPv6 connect: %v, want ECONNREFUSED from the normal lookup", err6)
	}
	st, dropped, err := l.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st[0].Assigned != 3 || dropped != 0 {
		t.Fatalf("stats %+v dropped %d: want 3 assigned, none dropped", st, dropped)
	}
}
