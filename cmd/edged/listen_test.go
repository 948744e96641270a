package main

import "testing"

func TestParseListener(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want listener
		back string // String(), if not in
	}{
		{"127.0.0.1:1883", listener{addr: "127.0.0.1:1883"}, ""},
		{"tcp://127.0.0.1:1883", listener{addr: "127.0.0.1:1883"}, "127.0.0.1:1883"},
		{"tls://0.0.0.0:8883", listener{addr: "0.0.0.0:8883", tls: true}, ""},
		{"ws://0.0.0.0:8080/mqtt", listener{addr: "0.0.0.0:8080", path: "/mqtt"}, ""},
		{"ws://0.0.0.0:8080", listener{addr: "0.0.0.0:8080", path: "/mqtt"}, "ws://0.0.0.0:8080/mqtt"},
		{"wss://[::1]:8443/a/b", listener{addr: "[::1]:8443", path: "/a/b", tls: true}, ""},
		{"web=ws://198.18.0.1:80/mqtt%eth0", listener{name: "web", addr: "198.18.0.1:80", path: "/mqtt", iface: "eth0"}, ""},
	} {
		got, err := parseListener(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseListener(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			continue
		}
		back := tc.back
		if back == "" {
			back = tc.in
		}
		if got.String() != back {
			t.Errorf("%q prints as %q, want %q", tc.in, got.String(), back)
		}
	}
	for _, bad := range []string{"127.0.0.1:1883/mqtt", "tls://127.0.0.1:1/x", "ws://nohost"} {
		if l, err := parseListener(bad); err == nil {
			t.Errorf("parseListener(%q) = %+v, want an error", bad, l)
		}
	}
}
