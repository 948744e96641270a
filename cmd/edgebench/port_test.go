package main

import (
	"net"
	"strconv"
	"testing"
)

// freeClosedPort returns a loopback port with no listener.
func freeClosedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return strconv.Itoa(p)
}
