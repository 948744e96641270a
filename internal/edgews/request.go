package edgews

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/url"
)

// parseUpgrade checks an upgrade request's head (RFC 6455 4.2.1: up to and
// including its blank line) for the listener's path and returns its key.
//
// Hand-written rather than net/http's ReadRequest (which check uses, and
// which the fuzz test holds this one to): it runs on the event loop for
// every ws:// connection, and ReadRequest's few KB of garbage per upgrade,
// interleaved with the sessions' long-lived allocations, left ~80 B per
// idle session of partly used heap spans after a burst of 10,000 (see
// BENCHMARKS.md). This parser allocates nothing on the success path; the
// key it returns is a slice of head. It is stricter than net/http where
// the two differ (no obsolete line folding, no control bytes in a value),
// never laxer: whatever it accepts, ReadRequest accepts with the same key
// (FuzzParseUpgrade). A request that announces a body (Transfer-Encoding,
// or a Content-Length other than 0) is refused: a GET upgrade has none, and
// whatever follows the head is WebSocket frames, so a proxy in front that
// framed the request by its body would disagree with us about where it
// ends. On success f is 0 (FailRequest's value): look at err first.
func parseUpgrade(head []byte, path string) (key []byte, f Fail, err error) {
	line, rest, ok := cutLine(head)
	if !ok {
		return nil, FailRequest, errNoLine
	}
	method, line, ok1 := bytes.Cut(line, sp)
	target, proto, ok2 := bytes.Cut(line, sp)
	switch {
	case !ok1 || !ok2 || len(method) == 0 || len(target) == 0 || bytes.IndexByte(proto, ' ') >= 0:
		return nil, FailRequest, errRequestLine
	case string(method) != "GET":
		return nil, FailRequest, errMethod
	case string(proto) != "HTTP/1.1":
		return nil, FailRequest, errProto
	case target[0] != '/':
		return nil, FailRequest, errTarget
	}
	for _, b := range target {
		if b <= ' ' || b == 0x7f {
			return nil, FailRequest, errTarget
		}
	}
	var h upgradeHeaders
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			return nil, FailRequest, errNoLine
		}
		if len(line) == 0 {
			break // the blank line
		}
		name, value, ok := bytes.Cut(line, colon)
		if !ok || !validName(name) || !validValue(value) {
			return nil, FailRequest, errHeader
		}
		h.add(name, bytes.Trim(value, " \t"))
	}
	switch {
	case h.host == 0 || h.host > 1:
		return nil, FailRequest, errHost
	case h.body:
		return nil, FailRequest, errBody
	case !h.upgrade:
		return nil, FailRequest, errUpgradeHdr
	case !h.connection:
		return nil, FailRequest, errConnectionHdr
	}
	if p, _, _ := bytes.Cut(target, question); !samePath(p, path) {
		return nil, FailPath, errPath
	}
	if string(h.version) != "13" {
		return nil, FailVersion, errVersion
	}
	var k [18]byte // base64.StdEncoding.DecodedLen(24)
	if len(h.key) != base64.StdEncoding.EncodedLen(16) {
		return nil, FailRequest, errKey
	}
	if n, err := base64.StdEncoding.Decode(k[:], h.key); err != nil || n != 16 {
		return nil, FailRequest, errKey
	}
	if !h.mqtt {
		return nil, FailSubprotocol, errSubprotocol
	}
	return h.key, 0, nil
}

// upgradeHeaders is what parseUpgrade keeps of the header lines: for the
// single-valued ones the first value (as http.Header.Get), for the token
// lists whether the token is in any of them.
type upgradeHeaders struct {
	host                      int
	upgrade, connection, mqtt bool
	version, key              []byte
	versionSeen, keySeen      bool
	body                      bool // Transfer-Encoding, or a Content-Length other than 0
}

func (h *upgradeHeaders) add(name, value []byte) {
	switch {
	case equalFold(name, "Host"):
		h.host++
	case equalFold(name, "Transfer-Encoding"):
		h.body = true
	case equalFold(name, "Content-Length"):
		h.body = h.body || string(value) != "0"
	case equalFold(name, "Upgrade"):
		h.upgrade = h.upgrade || hasTokenIn(value, "websocket")
	case equalFold(name, "Connection"):
		h.connection = h.connection || hasTokenIn(value, "upgrade")
	case equalFold(name, "Sec-WebSocket-Protocol"):
		h.mqtt = h.mqtt || hasTokenIn(value, Subprotocol)
	case equalFold(name, "Sec-WebSocket-Version"):
		if !h.versionSeen {
			h.version, h.versionSeen = value, true
		}
	case equalFold(name, "Sec-WebSocket-Key"):
		if !h.keySeen {
			h.key, h.keySeen = value, true
		}
	}
}

// samePath compares a request target's path with the listener's, decoding
// percent escapes as url.URL.Path does (rare: allocating is fine then).
func samePath(p []byte, path string) bool {
	if bytes.IndexByte(p, '%') < 0 {
		return string(p) == path
	}
	d, err := url.PathUnescape(string(p))
	return err == nil && d == path
}

// cutLine cuts b at its first CRLF; a bare LF or CR ends nothing (a
// request that uses one is refused: net/http would take a bare LF).
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.Index(b, crlf)
	if i < 0 {
		return nil, nil, false
	}
	line = b[:i]
	if bytes.IndexByte(line, '\n') >= 0 || bytes.IndexByte(line, '\r') >= 0 {
		return nil, nil, false
	}
	return line, b[i+2:], true
}

// validName reports whether name is an RFC 7230 token.
func validName(name []byte) bool {
	if len(name) == 0 {
		return false
	}
	for _, b := range name {
		if b >= 0x80 || !tchar[b] {
			return false
		}
	}
	return true
}

// validValue refuses control bytes other than HT (and so obsolete folding,
// whose continuation line would have no colon or start with a space).
func validValue(v []byte) bool {
	for _, b := range v {
		if b < ' ' && b != '\t' || b == 0x7f {
			return false
		}
	}
	return true
}

// tchar is RFC 7230's token character set.
var tchar = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// equalFold is bytes.EqualFold for an ASCII constant, without converting.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// hasTokenIn reports whether the comma-separated list v holds token,
// case-insensitively (as hasToken does for http.Header).
func hasTokenIn(v []byte, token string) bool {
	for len(v) > 0 {
		var t []byte
		t, v, _ = bytes.Cut(v, comma)
		if equalFold(bytes.Trim(t, " \t"), token) {
			return true
		}
	}
	return false
}

var (
	sp, colon, comma, question, crlf = []byte(" "), []byte(":"), []byte(","), []byte("?"), []byte("\r\n")

	errNoLine        = errors.New("edgews: request line or header not ended by CRLF")
	errRequestLine   = errors.New("edgews: malformed request line")
	errMethod        = errors.New("edgews: method not GET")
	errProto         = errors.New("edgews: not HTTP/1.1")
	errTarget        = errors.New("edgews: request target not a path")
	errHeader        = errors.New("edgews: malformed header line")
	errHost          = errors.New("edgews: no Host header, or more than one")
	errBody          = errors.New("edgews: an upgrade request with a body (Transfer-Encoding or Content-Length)")
	errUpgradeHdr    = errors.New("edgews: no Upgrade: websocket")
	errConnectionHdr = errors.New("edgews: no Connection: Upgrade")
	errPath          = errors.New("edgews: another path than the listener's")
	errVersion       = errors.New("edgews: Sec-WebSocket-Version not 13")
	errKey           = errors.New("edgews: Sec-WebSocket-Key not 16 bytes in base64")
	errSubprotocol   = errors.New("edgews: the subprotocol mqtt not offered")
)
