package main

import (
	"math"
	"testing"

	"github.com/edgedhq/edged/edge"
)

func TestMaxPartialBytesDefault(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name      string
		flag      int64
		memLimit  int64
		maxPacket int
		want      int64
	}{
		{"no memory limit", 0, math.MaxInt64, edge.DefaultMaxPacketSize, edge.DefaultMaxPartialBytes},
		{"a quarter of a low GOMEMLIMIT", 0, 512 * mib, edge.DefaultMaxPacketSize, 128 * mib},
		{"never below 4 x max packet", 0, 16 * mib, 8 * mib, 32 * mib},
		{"explicit", 1000 * mib, 512 * mib, edge.DefaultMaxPacketSize, 1000 * mib},
		{"no cap", -1, 512 * mib, edge.DefaultMaxPacketSize, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := maxPartialBytes(tc.flag, tc.memLimit, tc.maxPacket); got != tc.want {
				t.Fatalf("maxPartialBytes(%d, %d, %d) = %d, want %d", tc.flag, tc.memLimit, tc.maxPacket, got, tc.want)
			}
		})
	}
}
