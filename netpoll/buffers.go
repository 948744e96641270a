package netpoll

// ioBuf is a pooled byte buffer on loan to one connection: partial input, or
// output not yet written (b[off:]).
type ioBuf struct {
	b   []byte
	off int
	// since is when the incomplete frame at the start of a partial-input
	// buffer began (nanoseconds from the loop's start); unused for output.
	since int64
	// plain counts payload bytes of a connection with a Transport: in a
	// partial-input buffer the leading bytes already unwrapped (the rest
	// is an incomplete wire unit); in an output buffer the trailing bytes
	// not yet wrapped (before them: wire bytes).
	plain int
}

// Buffer size classes: 512 B to 8 MiB by factors of 4. A class's pool keeps
// at most poolKeep buffers so a burst does not pin memory for ever: a
// connect storm lends one small buffer per new connection for a moment, and
// keeping thousands afterwards cost more RSS per idle connection (measured:
// 4,096 kept per loop was ~280 B per connection at 15,000) than the
// allocations it saves. 64 small ones per loop (32 KiB) are what a burst of
// partial packets on one loop reuses; 256 kept 96 KiB more per loop after
// a storm, ~13 B per idle connection at 15,000 on 2 loops (issue #12).
const (
	minBufShift = 9
	numClasses  = 8
)

var poolKeep = [numClasses]int{64, 64, 32, 8, 4, 2, 1, 1}

func classOf(n int) int {
	c := 0
	for size := 1 << minBufShift; size < n && c < numClasses-1; size <<= 2 {
		c++
	}
	return c
}

// capFor returns the capacity newBytes(n) gives.
func capFor(n int) int {
	size := 1 << (minBufShift + 2*classOf(n))
	return max(n, size)
}

// grownCap returns cap(b.b) after grow(b, n): grow's decision, without
// doing it, so the partial-frame budget can refuse before memory is taken.
func grownCap(b *ioBuf, n int) int {
	live := len(b.b) - b.off
	if len(b.b)+n <= cap(b.b) || b.off > 0 && live+n <= cap(b.b) {
		return cap(b.b)
	}
	return capFor(live + n)
}

func (l *Loop) newBytes(n int) []byte {
	c := classOf(n)
	size := 1 << (minBufShift + 2*c)
	if n > size {
		return make([]byte, 0, n) // beyond the largest class: not pooled
	}
	if k := len(l.pool[c]); k > 0 {
		b := l.pool[c][k-1]
		l.pool[c][k-1] = nil
		l.pool[c] = l.pool[c][:k-1]
		return b[:0]
	}
	return make([]byte, 0, size)
}

func (l *Loop) putBytes(b []byte) {
	c := classOf(cap(b))
	if cap(b) != 1<<(minBufShift+2*c) || len(l.pool[c]) >= poolKeep[c] {
		return
	}
	l.pool[c] = append(l.pool[c], b[:0])
}

// takeBuf lends a table entry with room for n bytes and returns its index.
func (l *Loop) takeBuf(n int) uint32 {
	var i uint32
	if k := len(l.freeBufs); k > 0 {
		i = l.freeBufs[k-1]
		l.freeBufs = l.freeBufs[:k-1]
	} else {
		l.bufs = append(l.bufs, ioBuf{})
		i = uint32(len(l.bufs) - 1)
	}
	l.bufs[i] = ioBuf{b: l.newBytes(n)}
	return i
}

// releaseBuf returns a table entry and its bytes to the pools.
func (l *Loop) releaseBuf(i uint32) {
	l.putBytes(l.bufs[i].b)
	l.bufs[i] = ioBuf{}
	l.freeBufs = append(l.freeBufs, i)
}

// grow makes room for n more bytes in b, compacting consumed bytes away or
// moving to a larger pooled buffer, and returns the slice to append to.
func (l *Loop) grow(b *ioBuf, n int) []byte {
	if len(b.b)+n <= cap(b.b) {
		return b.b
	}
	live := len(b.b) - b.off
	if b.off > 0 && live+n <= cap(b.b) {
		copy(b.b, b.b[b.off:])
		b.b = b.b[:live]
		b.off = 0
		return b.b
	}
	nb := l.newBytes(live + n)
	nb = append(nb, b.b[b.off:]...)
	l.putBytes(b.b)
	b.off = 0
	return nb
}
