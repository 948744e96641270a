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

// bufCap returns the capacity getBuf(n) gives: the size class, or for a
// buffer above the largest class, n rounded up to the runtime's 8 KiB pages
// (a large allocation holds whole pages).
func bufCap(n int) int {
	if c := bufClass(n); c < numBufClass {
		return 1 << (c + minBufShift)
	}
	return (n + 8191) &^ 8191
}

// Memory held per stored message beyond its buffer, for the bounds: the
// entry in the inbox's items array (24 bytes, doubled for the array's
// growth), the *[]byte slice header getBuf allocates (24 bytes) and the
// allocator's rounding of both.
const entryOverhead = 80

// inboxOverhead is what an inbox that holds anything costs beyond its
// entries: the client record (128), its clientExt (about 100), the user
// table slot and the items array header. Charged while the inbox is not
// empty, so that many one-message inboxes (the 8.4M-users attack) are
// counted at their real cost.
const inboxOverhead = 256

// heldSize is the memory a stored PUBLISH of n encoded bytes holds: what
// the bounds count (bytes held, not bytes used).
func heldSize(n int) int { return bufCap(n) + entryOverhead }
