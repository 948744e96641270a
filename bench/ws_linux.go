package bench

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
)

// MQTT over WebSocket (Setup.WS without TLS) in the engine itself: the
// upgrade request goes out when the TCP connect completes, the CONNECT
// after the 101, and from then on every queued write is one masked binary
// frame and the server's frames are taken apart as they are read. So a ws
// run costs the load generator about what a TCP run does (no relay), and
// the two can be compared. (wss:// goes through the TLS relay instead.)

// wsIn is a connection's state while it reads the server's frames.
type wsIn struct {
	remain uint32 // payload bytes of the current frame still to come
	skip   bool   // the current frame is a control frame: its payload is dropped
	n      uint8  // header bytes in hdr
	hdr    [10]byte
	head   []byte // the upgrade response read so far
}

// maxUpgradeResponse bounds the server's 101 response head.
const maxUpgradeResponse = 8 << 10

// wsGUID is RFC 6455's key suffix (section 1.3).
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// Errors that end a WebSocket connection, named as the error table counts them.
var (
	errWSClosed   = errors.New("ws_closed_by_server")
	errWSFrame    = errors.New("ws_bad_frame")
	errWSUpgrade  = errors.New("ws_upgrade_refused")
	errWSResponse = errors.New("ws_bad_upgrade_response")
)

// wsRequest builds the engine's upgrade request and the Sec-WebSocket-Accept
// it expects. One key serves every connection: the server only hashes it.
func wsRequest(host, path string, key [16]byte) (req, accept []byte) {
	k := base64.StdEncoding.EncodeToString(key[:])
	sum := sha1.Sum([]byte(k + wsGUID)) // RFC 6455 4.2.2: SHA-1 is the protocol's
	req = fmt.Appendf(nil, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n", path, host, k)
	return req, []byte("Sec-WebSocket-Accept: " + base64.StdEncoding.EncodeToString(sum[:]) + "\r\n")
}

// sendUpgrade sends connection i's upgrade request (not framed).
func (e *engine) sendUpgrade(i int) {
	c := &e.conns[i]
	c.st = stUpgrade
	c.out = append(c.out, e.wsReq...)
	if !c.dirty {
		c.dirty = true
		e.dirty = append(e.dirty, int32(i))
	}
}

// wsRead turns bytes read from connection i into MQTT bytes, in place: the
// upgrade response first (then the CONNECT goes out), then frames.
func (e *engine) wsRead(i int, data []byte) ([]byte, error) {
	c := &e.conns[i]
	if c.st == stUpgrade {
		c.ws.head = append(c.ws.head, data...)
		end := bytes.Index(c.ws.head, []byte("\r\n\r\n"))
		if end < 0 {
			if len(c.ws.head) > maxUpgradeResponse {
				return nil, errWSResponse
			}
			return nil, nil
		}
		head := c.ws.head[:end+2]
		switch {
		case !bytes.HasPrefix(head, []byte("HTTP/1.1 101 ")):
			return nil, errWSUpgrade
		case !bytes.Contains(head, e.wsAccept) || !bytes.Contains(head, []byte("Sec-WebSocket-Protocol: mqtt\r\n")):
			return nil, errWSResponse
		}
		// The rest came in this read (else the end was found before).
		data = data[:copy(data, c.ws.head[end+4:])]
		c.ws.head = nil
		e.sendConnect(i)
	}
	return c.ws.unframe(data)
}

// unframe takes the server's frames apart in place and returns their
// payload; control frames are dropped (a server does not ping), a close
// frame ends the connection.
func (w *wsIn) unframe(b []byte) ([]byte, error) {
	out := b[:0]
	for len(b) > 0 {
		if w.remain > 0 {
			k := min(int(w.remain), len(b))
			if !w.skip {
				out = append(out, b[:k]...) // moves left within b's array
			}
			b = b[k:]
			w.remain -= uint32(k)
			continue
		}
		w.hdr[w.n] = b[0]
		w.n++
		b = b[1:]
		need := 2
		if w.n >= 2 {
			switch w.hdr[1] & 0x7F {
			case 126:
				need = 4
			case 127:
				need = 10
			}
		}
		if int(w.n) < need {
			continue
		}
		size := uint64(w.hdr[1] & 0x7F)
		switch need {
		case 4:
			size = uint64(binary.BigEndian.Uint16(w.hdr[2:]))
		case 10:
			size = binary.BigEndian.Uint64(w.hdr[2:])
		}
		w.n = 0
		if w.hdr[1]&0x80 != 0 || w.hdr[0]&0x70 != 0 || size > 1<<30 {
			return out, errWSFrame // a server never masks (RFC 6455 5.1)
		}
		switch w.hdr[0] & 0x0F {
		case 0x0, 0x2:
			w.skip = false
		case 0x8:
			return out, errWSClosed
		case 0x9, 0xA:
			w.skip = true
		default:
			return out, errWSFrame
		}
		w.remain = uint32(size)
	}
	return out, nil
}

// appendWSFrame appends p as one masked binary frame.
func appendWSFrame(dst, p []byte, key [4]byte) []byte {
	switch n := len(p); {
	case n < 126:
		dst = append(dst, 0x82, 0x80|byte(n))
	case n <= 0xFFFF:
		dst = binary.BigEndian.AppendUint16(append(dst, 0x82, 0x80|126), uint16(n))
	default:
		dst = binary.BigEndian.AppendUint64(append(dst, 0x82, 0x80|127), uint64(n))
	}
	dst = append(dst, key[:]...)
	for i, b := range p {
		dst = append(dst, b^key[i&3])
	}
	return dst
}
