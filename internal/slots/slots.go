// Package slots holds a transport's per-connection state beside the
// netpoll slab: a table indexed by Conn.Slot, one per loop (touched by that
// loop only), grown in chunks of 256 so that a loop with few connections
// does not pay for many. With a pointer-free T the table is pointer-free
// too: the GC does not scan it.
package slots

// ChunkShift sizes a Table's chunks: 1<<ChunkShift entries.
const ChunkShift = 8

// Table is the per-slot state of one loop; the zero value is ready.
type Table[T any] struct {
	chunks [][]T
}

// Get returns slot's entry, growing the table to hold it.
func (t *Table[T]) Get(slot uint32) *T {
	ci := int(slot >> ChunkShift)
	for ci >= len(t.chunks) {
		t.chunks = append(t.chunks, make([]T, 1<<ChunkShift))
	}
	return &t.chunks[ci][slot&(1<<ChunkShift-1)]
}
