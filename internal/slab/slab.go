// Package slab holds fixed-size, pointer-free records indexed by slot with a
// generation: netpoll's connection records, and the simulations that
// measure their cost. It is internal so that netpoll's public face does not
// carry it.
package slab

import (
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"
)

// Slab holds fixed-size, pointer-free records in chunks that never move, so a
// *T stays valid while its slot is live and the garbage collector never scans
// the records (a chunk without pointers is allocated in a no-scan span): GC
// work does not grow with the number of connections.
//
// Each slot carries a generation. A (slot, generation) pair names one life of
// a slot; releasing the slot bumps the generation, so a stale pair is
// detected instead of reaching the slot's next occupant. The generation is 24
// bits wide (it travels in a Handle) and skips 0 when it wraps.
//
// Alloc, Free and Get belong to the slab's owner (one loop); Valid and Gen
// are safe from any goroutine.
type Slab[T any] struct {
	chunks [slabMaxChunks]atomic.Pointer[slabChunk[T]]
	next   uint32   // slots ever handed out (the high-water mark)
	free   []uint32 // released slots, reused last-in first-out
	live   int
}

const (
	slabChunkBits = 12
	slabChunkSize = 1 << slabChunkBits // 4096 records per chunk: one allocation per 4096 connections
	slabMaxChunks = 1024               // 4M slots per slab (per loop); the chunk table is 8 KiB
	// MaxSlots is the most slots one Slab can hold.
	MaxSlots = slabChunkSize * slabMaxChunks

	genBits = 24
	genMask = 1<<genBits - 1
	// GenMask masks a generation: the bits of it that a (slot, generation)
	// pair carries.
	GenMask = genMask
	liveBit = 1 << 31
)

// ErrFull is returned by Alloc when every slot is in use.
var ErrFull = errors.New("netpoll: slab full")

type slabChunk[T any] struct {
	state [slabChunkSize]atomic.Uint32 // generation | liveBit
	rec   [slabChunkSize]T
}

// New returns an empty slab. It panics if T holds pointers: the records
// must be invisible to the garbage collector.
func New[T any]() *Slab[T] {
	var zero T
	if t := reflect.TypeOf(zero); HasPointers(t) {
		panic(fmt.Sprintf("netpoll: slab record %v holds pointers", t))
	}
	return &Slab[T]{}
}

// HasPointers reports whether values of t contain pointers the GC must scan.
func HasPointers(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Pointer, reflect.UnsafePointer, reflect.Map, reflect.Slice, reflect.String,
		reflect.Chan, reflect.Func, reflect.Interface:
		return true
	case reflect.Array:
		return t.Len() > 0 && HasPointers(t.Elem())
	case reflect.Struct:
		for i := 0; i < t.NumField(); i++ {
			if HasPointers(t.Field(i).Type) {
				return true
			}
		}
	}
	return false
}

// Alloc takes a free slot and returns it with its generation and a pointer to
// its zeroed record.
func (s *Slab[T]) Alloc() (slot, gen uint32, rec *T, err error) {
	if n := len(s.free); n > 0 {
		slot = s.free[n-1]
		s.free = s.free[:n-1]
	} else {
		if s.next >= MaxSlots {
			return 0, 0, nil, ErrFull
		}
		slot = s.next
		s.next++
		ci := slot >> slabChunkBits
		if s.chunks[ci].Load() == nil {
			ch := new(slabChunk[T])
			for i := range ch.state {
				ch.state[i].Store(1) // generation 1, free
			}
			s.chunks[ci].Store(ch)
		}
	}
	ch := s.chunks[slot>>slabChunkBits].Load()
	i := slot & (slabChunkSize - 1)
	st := &ch.state[i]
	gen = st.Load() & genMask
	st.Store(gen | liveBit)
	s.live++
	return slot, gen, &ch.rec[i], nil
}

// Free releases a live slot: its record is zeroed and its generation bumped.
func (s *Slab[T]) Free(slot uint32) {
	ch := s.chunks[slot>>slabChunkBits].Load()
	i := slot & (slabChunkSize - 1)
	st := &ch.state[i]
	v := st.Load()
	if v&liveBit == 0 {
		panic(fmt.Sprintf("netpoll: slab invariant broken: free of free slot %d", slot))
	}
	gen := (v + 1) & genMask
	if gen == 0 {
		gen = 1 // generation 0 is never valid, so the zero Handle names nothing
	}
	var zero T
	ch.rec[i] = zero
	st.Store(gen)
	s.free = append(s.free, slot)
	s.live--
}

// Get returns the record of a slot; the caller owns the slab and knows the
// slot is live.
func (s *Slab[T]) Get(slot uint32) *T {
	return &s.chunks[slot>>slabChunkBits].Load().rec[slot&(slabChunkSize-1)]
}

// Lookup returns the record if (slot, gen) names the slot's current life.
func (s *Slab[T]) Lookup(slot, gen uint32) *T {
	if !s.Valid(slot, gen) {
		return nil
	}
	return s.Get(slot)
}

// Valid reports whether (slot, gen) names a live slot's current life. Safe
// from any goroutine.
func (s *Slab[T]) Valid(slot, gen uint32) bool {
	if slot >= MaxSlots {
		return false
	}
	ch := s.chunks[slot>>slabChunkBits].Load()
	if ch == nil {
		return false
	}
	return ch.state[slot&(slabChunkSize-1)].Load() == gen|liveBit
}

// Gen returns a slot's current generation and whether it is live. Safe from
// any goroutine.
func (s *Slab[T]) Gen(slot uint32) (gen uint32, live bool) {
	if slot >= MaxSlots {
		return 0, false
	}
	ch := s.chunks[slot>>slabChunkBits].Load()
	if ch == nil {
		return 0, false
	}
	v := ch.state[slot&(slabChunkSize-1)].Load()
	return v & genMask, v&liveBit != 0
}

// setGen forces a free slot's generation; tests use it to reach wrap-around.
func (s *Slab[T]) setGen(slot, gen uint32) {
	ch := s.chunks[slot>>slabChunkBits].Load()
	st := &ch.state[slot&(slabChunkSize-1)]
	st.Store(gen&genMask | st.Load()&liveBit)
}

// Len returns the number of live slots.
func (s *Slab[T]) Len() int { return s.live }

// Range calls fn for each live slot in slot order until fn returns false. fn
// may Free the slot it is given.
func (s *Slab[T]) Range(fn func(slot uint32, rec *T) bool) {
	for slot := uint32(0); slot < s.next; slot++ {
		ch := s.chunks[slot>>slabChunkBits].Load()
		if ch.state[slot&(slabChunkSize-1)].Load()&liveBit == 0 {
			continue
		}
		if !fn(slot, &ch.rec[slot&(slabChunkSize-1)]) {
			return
		}
	}
}
