package edgews

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// check is the reference parseUpgrade is held to: the same rules over
// net/http's ReadRequest.
func check(head []byte, path string) (string, Fail, error) {
	req, err := http.ReadRequest(bufio.NewReaderSize(bytes.NewReader(head), len(head)))
	if err != nil {
		return "", FailRequest, fmt.Errorf("edgews: parse request: %w", err)
	}
	switch {
	case req.Method != http.MethodGet:
		return "", FailRequest, fmt.Errorf("edgews: method %s, want GET", req.Method)
	case !req.ProtoAtLeast(1, 1):
		return "", FailRequest, fmt.Errorf("edgews: %s, want HTTP/1.1", req.Proto)
	case !hasToken(req.Header, "Upgrade", "websocket"):
		return "", FailRequest, errors.New("edgews: no Upgrade: websocket")
	case !hasToken(req.Header, "Connection", "upgrade"):
		return "", FailRequest, errors.New("edgews: no Connection: Upgrade")
	case req.URL.Path != path:
		return "", FailPath, fmt.Errorf("edgews: path %q, want %q", req.URL.Path, path)
	case req.Header.Get("Sec-WebSocket-Version") != "13":
		return "", FailVersion, fmt.Errorf("edgews: Sec-WebSocket-Version %q, want 13", req.Header.Get("Sec-WebSocket-Version"))
	}
	key := req.Header.Get("Sec-WebSocket-Key")
	if k, err := base64.StdEncoding.DecodeString(key); err != nil || len(k) != 16 {
		return "", FailRequest, fmt.Errorf("edgews: Sec-WebSocket-Key %q is not 16 bytes in base64", key)
	}
	if !hasToken(req.Header, "Sec-WebSocket-Protocol", Subprotocol) {
		return "", FailSubprotocol, errors.New("edgews: no mqtt subprotocol")
	}
	return key, 0, nil
}

func hasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

const goodRequest = "GET /mqtt HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqttv3.1, mqtt\r\n" +
	"Origin: http://example.com\r\n\r\n"

// TestParseUpgrade: the cases that decide a Fail, each as net/http's
// reference decides it, and the RFC 6455 1.3 example's accept value.
func TestParseUpgrade(t *testing.T) {
	edit := func(old, new string) string { return strings.Replace(goodRequest, old, new, 1) }
	for _, tc := range []struct {
		name, req string
		want      Fail
		ok        bool
	}{
		{"good", goodRequest, 0, true},
		{"lower-case method", "get" + goodRequest[3:], FailRequest, false}, // methods are case-sensitive
		{"header names any case", edit("Sec-WebSocket-Key:", "sec-websocket-KEY:"), 0, true},
		{"query ignored", edit("/mqtt ", "/mqtt?x=1 "), 0, true},
		{"escaped path", edit("/mqtt ", "/mq%74t "), 0, true},
		{"POST", edit("GET", "POST"), FailRequest, false},
		{"HTTP/1.0", edit("HTTP/1.1", "HTTP/1.0"), FailRequest, false},
		{"no Upgrade", edit("Upgrade: websocket\r\n", ""), FailRequest, false},
		{"no Connection: Upgrade", edit("keep-alive, Upgrade", "keep-alive"), FailRequest, false},
		{"other path", edit("/mqtt ", "/other "), FailPath, false},
		{"version 8", edit("Version: 13", "Version: 8"), FailVersion, false},
		{"short key", edit("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="), FailRequest, false},
		{"no mqtt", edit("mqttv3.1, mqtt", "mqttv3.1"), FailSubprotocol, false},
		{"second protocol line", edit("mqttv3.1, mqtt\r\n", "wamp\r\nSec-WebSocket-Protocol: mqtt\r\n"), 0, true},
		{"no colon", edit("Origin: ", "Origin "), FailRequest, false},
		{"folded line", edit("Origin: http://example.com\r\n", "Origin: http://example.com\r\n more\r\n"), FailRequest, false},
		{"bare LF", edit("Host: example.com\r\n", "Host: example.com\n"), FailRequest, false},
		{"no Host", edit("Host: example.com\r\n", ""), FailRequest, false},
		{"Content-Length: 0", edit("Origin:", "Content-Length: 0\r\nOrigin:"), 0, true},
		{"Content-Length: 5", edit("Origin:", "Content-Length: 5\r\nOrigin:"), FailRequest, false},
		{"Content-Length: x", edit("Origin:", "Content-Length: x\r\nOrigin:"), FailRequest, false},
		{"two Content-Lengths", edit("Origin:", "Content-Length: 0\r\nContent-Length: 6\r\nOrigin:"), FailRequest, false},
		{"Transfer-Encoding", edit("Origin:", "Transfer-Encoding: chunked\r\nOrigin:"), FailRequest, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, f, err := parseUpgrade([]byte(tc.req), "/mqtt")
			if (err == nil) != tc.ok || !tc.ok && f != tc.want {
				t.Fatalf("parseUpgrade: key %q fail %v err %v; want ok %v fail %v", key, f, err, tc.ok, tc.want)
			}
			if tc.ok {
				rkey, _, rerr := check([]byte(tc.req), "/mqtt")
				if rerr != nil || rkey != string(key) {
					t.Fatalf("net/http disagrees: key %q err %v", rkey, rerr)
				}
			}
		})
	}
	key, _, _ := parseUpgrade([]byte(goodRequest), "/mqtt")
	if got := string(appendAccept(nil, key)); !strings.Contains(got, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") {
		t.Fatalf("101 %q lacks RFC 6455's example accept value", got)
	}
}

// TestParseUpgradeAllocs: the success path allocates nothing (it runs on
// the loop for every ws:// connection).
func TestParseUpgradeAllocs(t *testing.T) {
	head := []byte(goodRequest)
	var out []byte
	if n := testing.AllocsPerRun(100, func() {
		key, _, err := parseUpgrade(head, "/mqtt")
		if err != nil {
			t.Fatal(err)
		}
		out = appendAccept(out[:0], key)
	}); n != 0 {
		t.Fatalf("%v allocations per upgrade, want 0", n)
	}
}

// FuzzParseUpgrade: parseUpgrade never accepts what net/http's parse (with
// the same rules) refuses, and agrees on the key; what it refuses with a
// Fail other than FailRequest the reference does not accept, and when the
// reference refuses it too (and did not fail in its parse) it gives the
// same Fail.
func FuzzParseUpgrade(f *testing.F) {
	f.Add([]byte(goodRequest))
	f.Add([]byte(strings.Replace(goodRequest, "/mqtt", "/x%2", 1)))
	f.Add([]byte(strings.Replace(goodRequest, "Origin:", "Content-Length: 0\r\nContent-Length: 0\r\nOrigin:", 1)))
	f.Add([]byte(strings.Replace(goodRequest, "Origin:", "Transfer-Encoding: gzip\r\nContent-Length: 5\r\nOrigin:", 1)))
	f.Add([]byte("GET /mqtt HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"))
	f.Fuzz(func(t *testing.T, head []byte) {
		if len(head) > MaxRequest {
			return
		}
		key, fail, err := parseUpgrade(head, "/mqtt")
		rkey, rfail, rerr := check(head, "/mqtt")
		if err == nil && (rerr != nil || rkey != string(key)) {
			t.Fatalf("parseUpgrade accepted %q (key %q); net/http: key %q, %v", head, key, rkey, rerr)
		}
		if err != nil && fail != FailRequest && rerr == nil {
			t.Fatalf("parseUpgrade refused %q as %v (%v); net/http accepts", head, fail, err)
		}
		if err != nil && fail != FailRequest && rfail != FailRequest && rfail != fail {
			t.Fatalf("parseUpgrade refused %q as %v (%v); net/http as %v (%v)", head, fail, err, rfail, rerr)
		}
	})
}
