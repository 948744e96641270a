package slab

import "testing"

// testRec is a pointer-free record like netpoll's Conn.
type testRec struct {
	user uint64
}

func TestNewSlabRefusesPointers(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("New[*int] did not panic")
		}
	}()
	New[struct{ p *int }]()
}

func TestSlabStaleHandles(t *testing.T) {
	s := New[testRec]()
	slot, gen, rec, err := s.Alloc()
	if err != nil {
		t.Fatal(err)
	}
	rec.user = 7
	if !s.Valid(slot, gen) {
		t.Fatal("live slot not valid")
	}
	s.Free(slot)
	if s.Valid(slot, gen) {
		t.Fatal("freed slot still valid")
	}
	slot2, gen2, rec2, _ := s.Alloc()
	if slot2 != slot {
		t.Fatalf("slot not reused: %d vs %d", slot2, slot)
	}
	if gen2 == gen {
		t.Fatal("generation not bumped on reuse")
	}
	if rec2.user != 0 {
		t.Fatal("record not zeroed on reuse")
	}
	if s.Valid(slot, gen) || s.Lookup(slot, gen) != nil {
		t.Fatal("stale (slot, gen) reaches the reused slot")
	}
	if !s.Valid(slot2, gen2) {
		t.Fatal("new life not valid")
	}
}

func TestSlabGenerationWrap(t *testing.T) {
	s := New[testRec]()
	slot, _, _, _ := s.Alloc()
	s.Free(slot)
	s.setGen(slot, genMask) // the last generation before wrapping
	_, gen, _, _ := s.Alloc()
	if gen != genMask {
		t.Fatalf("gen %d, want %d", gen, genMask)
	}
	s.Free(slot)
	_, gen2, _, _ := s.Alloc()
	if gen2 != 1 {
		t.Fatalf("after wrap gen %d, want 1 (0 is never valid)", gen2)
	}
	if s.Valid(slot, gen) || s.Valid(slot, 0) {
		t.Fatal("pre-wrap or zero generation accepted")
	}
}

func TestSlabGrowthKeepsRecordsInPlace(t *testing.T) {
	s := New[testRec]()
	first, _, rec, _ := s.Alloc()
	rec.user = 42
	for i := 0; i < 3*slabChunkSize; i++ {
		s.Alloc()
	}
	if s.Get(first) != rec || rec.user != 42 {
		t.Fatal("growth moved or clobbered a record")
	}
	if s.Len() != 3*slabChunkSize+1 {
		t.Fatalf("Len %d", s.Len())
	}
	n := 0
	s.Range(func(uint32, *testRec) bool { n++; return true })
	if n != s.Len() {
		t.Fatalf("Range saw %d of %d", n, s.Len())
	}
}
