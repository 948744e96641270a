package edgews

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/edgedhq/edged/internal/testenv"
)

// clientFrame builds a masked client frame (b0 is FIN|RSV|opcode).
var clientFrame = testenv.WSClientFrame

// feed runs the decoder over wire in chunks of step bytes, keeping what it
// leaves undecoded as the engine does, and returns the payload.
func feed(t testing.TB, s *Server, wire []byte, step int) ([]byte, error) {
	ls, st := &loopState{}, &connState{flags: stLive}
	var out, pend []byte
	for i := 0; i < len(wire); i += step {
		in := append(pend, wire[i:min(i+step, len(wire))]...)
		n, used, err := s.decode(nil, ls, st, in)
		if n > used {
			t.Fatalf("decode gave %d payload bytes for %d consumed", n, used)
		}
		out = append(out, in[:n]...)
		if err != nil {
			return out, err
		}
		pend = append([]byte(nil), in[used:]...)
	}
	if len(pend) > 0 || st.remain > 0 {
		return out, fmt.Errorf("%d bytes left undecoded, %d of a frame to come", len(pend), st.remain)
	}
	return out, nil
}

func TestDecode(t *testing.T) {
	s := New(Config{MaxFrame: 100 << 10})
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	long := bytes.Repeat([]byte("0123456789abcdef"), 5000) // 80,000: a 64-bit length
	mid := long[:300]                                      // a 16-bit length
	var wire, want []byte
	add := func(b0 byte, p []byte) {
		wire = append(wire, clientFrame(b0, p, key)...)
		if b0&0x0F < 0x8 {
			want = append(want, p...)
		}
	}
	add(0x82, []byte("hello"))
	add(0x82, nil)
	add(0x02, []byte("frag-")) // a fragmented message ...
	add(0x89, []byte("ping in the middle"))
	add(0x8A, nil) // an unsolicited pong
	add(0x00, mid)
	add(0x80, []byte("-end")) // ... ends
	add(0x82, long)
	for _, step := range []int{1, 3, 7, 64, 1000, len(wire)} {
		t.Run(fmt.Sprint("step ", step), func(t *testing.T) {
			s.pings.Store(0)
			// feed's nil Conn: a ping would need one for its pong, so
			// decode control frames through a server that counts them.
			got, err := feedNoPong(t, s, wire, step)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("payload differs: %d bytes, want %d", len(got), len(want))
			}
		})
	}
}

// feedNoPong is feed with the ping frames dropped (a pong needs a live
// connection: the edge tests cover it).
func feedNoPong(t testing.TB, s *Server, wire []byte, step int) ([]byte, error) {
	var kept []byte
	for rest := wire; len(rest) > 0; {
		n := frameLen(rest)
		if rest[0]&0x0F != opPing {
			kept = append(kept, rest[:n]...)
		}
		rest = rest[n:]
	}
	return feed(t, s, kept, step)
}

// frameLen is the length of the complete client frame at the start of f.
func frameLen(f []byte) int {
	size, hl := int(f[1]&0x7F), 2
	switch size {
	case 126:
		size, hl = int(binary.BigEndian.Uint16(f[2:])), 4
	case 127:
		size, hl = int(binary.BigEndian.Uint64(f[2:])), 10
	}
	return hl + 4 + size
}

func TestDecodeBadFrames(t *testing.T) {
	s := New(Config{MaxFrame: 1000})
	key := [4]byte{1, 2, 3, 4}
	unmasked := []byte{0x82, 3, 'a', 'b', 'c'}
	for _, tc := range []struct {
		name string
		wire []byte
		want error
		code uint16
	}{
		{"text frame", clientFrame(0x81, []byte("{}"), key), ErrTextFrame, CloseUnsupported},
		{"unmasked frame", unmasked, ErrUnmasked, CloseProtocol},
		{"reserved bit 1", clientFrame(0xC2, []byte("x"), key), ErrBadFrame, CloseProtocol},
		{"reserved bit 3", clientFrame(0x92, []byte("x"), key), ErrBadFrame, CloseProtocol},
		{"opcode 3", clientFrame(0x83, []byte("x"), key), ErrBadFrame, CloseProtocol},
		{"opcode 0xB", clientFrame(0x8B, nil, key), ErrBadFrame, CloseProtocol},
		{"fragmented ping", clientFrame(0x09, []byte("x"), key), ErrBadFrame, CloseProtocol},
		{"ping of 126 bytes", clientFrame(0x89, make([]byte, 126), key), ErrBadFrame, CloseProtocol},
		{"continuation first", clientFrame(0x80, []byte("x"), key), ErrBadFrame, CloseProtocol},
		{"binary inside a fragmented message", append(clientFrame(0x02, []byte("x"), key), clientFrame(0x82, []byte("y"), key)...), ErrBadFrame, CloseProtocol},
		{"oversized frame (header alone)", []byte{0x82, 0x80 | 127, 0, 0, 0, 1, 0, 0, 0, 0}, ErrTooBig, CloseTooBig},
		{"oversized frame", clientFrame(0x82, make([]byte, 1001), key), ErrTooBig, CloseTooBig},
		{"non-minimal 16-bit length", []byte{0x82, 0x80 | 126, 0, 5, 1, 2, 3, 4}, ErrBadFrame, CloseProtocol},
		{"non-minimal 64-bit length", []byte{0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0, 1, 0, 1, 2, 3, 4}, ErrBadFrame, CloseProtocol},
		{"64-bit length with the top bit", []byte{0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, ErrBadFrame, CloseProtocol},
		{"close with 1 byte", clientFrame(0x88, []byte{3}, key), ErrBadFrame, CloseProtocol},
		{"close with code 1005", clientFrame(0x88, []byte{0x03, 0xED}, key), ErrBadFrame, CloseProtocol},
		{"close with code 999", clientFrame(0x88, []byte{0x03, 0xE7}, key), ErrBadFrame, CloseProtocol},
		{"close reason not UTF-8", clientFrame(0x88, []byte{0x03, 0xE8, 0xFF}, key), ErrBadFrame, CloseBadData},
		{"close frame", clientFrame(0x88, []byte{0x03, 0xE8, 'b', 'y', 'e'}, key), ErrPeerClose, CloseNormal},
		{"empty close frame", clientFrame(0x88, nil, key), ErrPeerClose, CloseNormal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, step := range []int{1, len(tc.wire)} {
				_, err := feed(t, s, tc.wire, step)
				var fe *frameError
				if !errors.Is(err, tc.want) || !errors.As(err, &fe) || fe.code != tc.code {
					t.Fatalf("step %d: got %v, want %v with code %d", step, err, tc.want, tc.code)
				}
			}
		})
	}
}

func TestUnmaskRotates(t *testing.T) {
	key := [4]byte{0xA1, 0xB2, 0xC3, 0xD4}
	plain := []byte("The quick brown fox jumps over the lazy dog, 45 bytes.")
	masked := clientFrame(0x82, plain, key)[6:]
	for split := range len(masked) + 1 {
		k := key
		got := append([]byte(nil), masked...)
		unmask(got[:split], &k)
		unmask(got[split:], &k)
		if !bytes.Equal(got, plain) {
			t.Fatalf("split at %d: %q", split, got)
		}
	}
}

// BenchmarkDecode decodes client frames in place, as the loop does with
// its read buffer: one op is one buffer of frames of the given payload.
func BenchmarkDecode(b *testing.B) {
	s := New(Config{})
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	for _, size := range []int{16, 64, 1024, 16 << 10} {
		b.Run(fmt.Sprintf("payload=%d", size), func(b *testing.B) {
			var wire []byte
			for len(wire) < 64<<10 {
				wire = append(wire, clientFrame(0x82, bytes.Repeat([]byte{'x'}, size), key)...)
			}
			buf := make([]byte, len(wire))
			ls, st := &loopState{}, &connState{flags: stLive}
			b.SetBytes(int64(len(wire)))
			b.ReportAllocs()
			for b.Loop() {
				copy(buf, wire)
				if _, used, err := s.decode(nil, ls, st, buf); err != nil || used != len(buf) {
					b.Fatalf("decode: %v, %d of %d", err, used, len(buf))
				}
			}
		})
	}
}
