package netpoll

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestSecondEngineOnALivePortRefused starts two engines on one fixed port:
// the second must fail with ErrAddrInUse instead of joining the first's
// SO_REUSEPORT group (which would split new connections between them), and
// the first must keep every connection. Port 0 is never refused, and a
// port whose server closed (leaving TIME_WAIT sockets) is free again.
func TestSecondEngineOnALivePortRefused(t *testing.T) {
	checkLeaks(t)
	a := startEngine(t, Config{})
	addr := a.Addr().String()
	for _, cfg := range []Config{
		{Addr: addr, Handler: Echo{}, Loops: 2},
		{Addr: addr, Handler: Echo{}, Loops: 1},
		{Addr: "127.0.0.1:0", ExtraAddrs: []string{addr}, Handler: Echo{}, Loops: 2}, // as a second listener group
	} {
		b, err := New(cfg)
		if err == nil {
			b.Close()
			t.Fatalf("second engine on %s (%+v) started", addr, cfg.ExtraAddrs)
		}
		if !errors.Is(err, ErrAddrInUse) || !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("second engine on %s: %v, want ErrAddrInUse wrapping EADDRINUSE", addr, err)
		}
	}
	// The wildcard address overlaps 127.0.0.1:PORT.
	_, port, _ := net.SplitHostPort(addr)
	if b, err := New(Config{Addr: "0.0.0.0:" + port, Handler: Echo{}}); !errors.Is(err, ErrAddrInUse) {
		if b != nil {
			b.Close()
		}
		t.Fatalf("engine on 0.0.0.0:%s beside a live 127.0.0.1:%s: %v, want ErrAddrInUse", port, port, err)
	}
	// Every new connection still reaches the first engine.
	for i := 0; i < 20; i++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := echoOnce(c, []byte("ping")); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		c.Close()
	}
	if n := a.Stats()[0].Accepts + a.Stats()[1].Accepts; n != 20 {
		t.Fatalf("first engine accepted %d of 20 connections", n)
	}
	// Two engines on port 0 get two ports.
	b := startEngine(t, Config{})
	c := startEngine(t, Config{})
	if b.Addr().String() == c.Addr().String() {
		t.Fatalf("two engines on port 0 share %s", b.Addr())
	}
	b.Close()
	c.Close()
	// The server closes a live connection first, so its port keeps a
	// TIME_WAIT socket; a new engine on the port must start anyway.
	cl, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	cl.SetDeadline(time.Now().Add(10 * time.Second))
	if err := echoOnce(cl, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	cl.Read(buf) // the server's FIN
	cl.Close()
	d := startEngine(t, Config{Addr: addr})
	d.Close()
}
