package edge

import (
	"math/bits"
	"sync"
)

// Packet buffers for stored messages come from size-classed pools, so a
// message that is stored, delivered and acknowledged allocates nothing in
// steady state. Classes are powers of two from minBufClass to maxBufClass.
const (
	minBufShift = 6  // 64 bytes
	maxBufShift = 19 // 512 KiB: above the 256 KiB default packet limit plus topic rewrite
	numBufClass = maxBufShift - minBufShift + 1
)

var bufPools [numBufClass]sync.Pool

func bufClass(n int) int {
	if n <= 1<<minBufShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minBufShift
}

// getBuf returns a pooled buffer with capacity >= n and length 0.
func getBuf(n int) *[]byte {
	c := bufClass(n)
	if c >= numBufClass {
		b := make([]byte, 0, n)
		return &b
	}
	if v := bufPools[c].Get(); v != nil {
		b := v.(*[]byte)
		*b = (*b)[:0]
		return b
	}
	b := make([]byte, 0, 1<<(c+minBufShift))
	return &b
}

// putBuf returns b to its pool; b must not be used afterwards.
func putBuf(b *[]byte) {
	c := bufClass(cap(*b))
	if c >= numBufClass || cap(*b) != 1<<(c+minBufShift) {
		return
	}
	bufPools[c].Put(b)
}
