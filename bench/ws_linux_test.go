package bench

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// serverFrame builds an unmasked server frame.
func serverFrame(b0 byte, p []byte) []byte {
	f := []byte{b0}
	switch n := len(p); {
	case n < 126:
		f = append(f, byte(n))
	case n <= 0xFFFF:
		f = binary.BigEndian.AppendUint16(append(f, 126), uint16(n))
	default:
		f = binary.BigEndian.AppendUint64(append(f, 127), uint64(n))
	}
	return append(f, p...)
}

func TestUnframe(t *testing.T) {
	long := bytes.Repeat([]byte("abc"), 30000)
	wire := append(serverFrame(0x82, []byte("one")), serverFrame(0x89, []byte("ping"))...)
	wire = append(wire, serverFrame(0x82, long[:300])...)
	wire = append(wire, serverFrame(0x82, nil)...)
	wire = append(wire, serverFrame(0x82, long)...)
	want := append(append([]byte("one"), long[:300]...), long...)
	for _, step := range []int{1, 2, 5, 333, len(wire)} {
		var w wsIn
		var got []byte
		for i := 0; i < len(wire); i += step {
			chunk := append([]byte(nil), wire[i:min(i+step, len(wire))]...)
			out, err := w.unframe(chunk)
			if err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
			got = append(got, out...)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("step %d: %d bytes, want %d", step, len(got), len(want))
		}
	}
	for _, tc := range []struct {
		wire []byte
		want error
	}{
		{serverFrame(0x88, []byte{3, 0xE8}), errWSClosed},
		{[]byte{0x82, 0x81, 1, 2, 3, 4, 5}, errWSFrame}, // masked
		{serverFrame(0x81, []byte("text")), errWSFrame},
	} {
		var w wsIn
		if _, err := w.unframe(tc.wire); !errors.Is(err, tc.want) {
			t.Errorf("% x: %v, want %v", tc.wire, err, tc.want)
		}
	}
	// A masked client frame from appendWSFrame unmasks to its payload.
	key := [4]byte{9, 8, 7, 6}
	f := appendWSFrame(nil, long[:200], key)
	if f[0] != 0x82 || f[1] != 0x80|126 || binary.BigEndian.Uint16(f[2:]) != 200 {
		t.Fatalf("header % x", f[:4])
	}
	for i, b := range f[8:] {
		if b^key[i&3] != long[i] {
			t.Fatalf("byte %d", i)
		}
	}
}
