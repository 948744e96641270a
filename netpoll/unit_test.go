package netpoll

import (
	"math/rand/v2"
	"reflect"
	"sort"
	"sync"
	"testing"
	"unsafe"
)

func TestConnRecordIsPointerFreeAndSmall(t *testing.T) {
	if HasPointers(reflect.TypeOf(Conn{})) {
		t.Fatal("Conn holds pointers: the GC would scan every connection")
	}
	if HasPointers(reflect.TypeOf(timerNode{})) {
		t.Fatal("timerNode holds pointers")
	}
	if got := unsafe.Sizeof(Conn{}); got != 32 {
		t.Fatalf("Conn is %d bytes; the documented size is 32", got)
	}
	if got := unsafe.Sizeof(timerNode{}); got != 24 {
		t.Fatalf("timerNode is %d bytes; the documented size is 24", got)
	}
}

func TestNewSlabRefusesPointers(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("NewSlab[*int] did not panic")
		}
	}()
	NewSlab[struct{ p *int }]()
}

func TestSlabStaleHandles(t *testing.T) {
	s := NewSlab[Conn]()
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
	s := NewSlab[Conn]()
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
	s := NewSlab[Conn]()
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
	s.Range(func(uint32, *Conn) bool { n++; return true })
	if n != s.Len() {
		t.Fatalf("Range saw %d of %d", n, s.Len())
	}
}

// refWheel is the reference: a plain map of deadlines.
type refWheel struct {
	now int64
	at  map[uint32]int64
}

func (r *refWheel) add(id uint32, at int64) {
	if at <= r.now {
		at = r.now + 1
	}
	r.at[id] = at
}

func (r *refWheel) advance(to int64) []uint32 {
	var fired []uint32
	for id, at := range r.at {
		if at <= to {
			fired = append(fired, id)
			delete(r.at, id)
		}
	}
	if to > r.now {
		r.now = to
	}
	return fired
}

func TestWheelAgainstReference(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		rng := rand.New(rand.NewPCG(seed, seed*7))
		w := NewWheel(int64(rng.IntN(1 << 20)))
		ref := &refWheel{now: w.Now(), at: map[uint32]int64{}}
		for op := 0; op < 20000; op++ {
			id := uint32(rng.IntN(5000))
			switch r := rng.IntN(10); {
			case r < 5:
				// Deadlines spanning several wheel levels, some in the past.
				span := int64(1) << (rng.IntN(20))
				at := w.Now() - 3 + rng.Int64N(span+3)
				w.Add(id, at)
				ref.add(id, at)
			case r < 7:
				_, had := ref.at[id]
				delete(ref.at, id)
				if got := w.Cancel(id); got != had {
					t.Fatalf("seed %d op %d: Cancel(%d)=%v, reference %v", seed, op, id, got, had)
				}
			default:
				to := w.Now() + rng.Int64N(1<<uint(rng.IntN(14)))
				var got []uint32
				w.Advance(to, func(id uint32) { got = append(got, id) })
				want := ref.advance(to)
				sort.Slice(got, func(i, j int) bool { return got[i] < got[j] })
				sort.Slice(want, func(i, j int) bool { return want[i] < want[j] })
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("seed %d op %d: Advance(%d) fired %v, reference %v", seed, op, to, got, want)
				}
			}
			if w.Len() != len(ref.at) {
				t.Fatalf("seed %d op %d: Len %d, reference %d", seed, op, w.Len(), len(ref.at))
			}
		}
	}
}

func TestWheelFiresInDeadlineOrderAndReentrant(t *testing.T) {
	w := NewWheel(0)
	for i := uint32(0); i < 100; i++ {
		w.Add(i, int64(1000-i*7))
	}
	var last int64
	n := 0
	w.Advance(2000, func(id uint32) {
		at := int64(1000 - id*7)
		if at < last {
			t.Fatalf("timer %d (at %d) fired after one at %d", id, at, last)
		}
		last = at
		n++
		if id == 0 {
			w.Add(200, 1500) // re-entrant Add from fire
		}
	})
	if n != 101 {
		t.Fatalf("fired %d timers, want 101", n)
	}
}

func TestMPSCOrderPerProducerWithOverflow(t *testing.T) {
	q := newMPSC(64) // tiny ring: forces the overflow path
	const producers, per = 4, 5000
	var wg sync.WaitGroup
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			for i := 0; i < per; i++ {
				q.push(item{to: Handle(p), msg: Message{Arg: uint64(i)}})
			}
		}(p)
	}
	next := make([]uint64, producers)
	got := 0
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var it item
	var spill []item
	check := func(it *item) {
		p := int(it.to)
		if it.msg.Arg != next[p] {
			t.Fatalf("producer %d: got %d, want %d", p, it.msg.Arg, next[p])
		}
		next[p]++
		got++
	}
	for finished := false; got < producers*per; {
		for q.pop(&it) {
			check(&it)
		}
		spill = q.takeOverflow(spill)
		for i := range spill {
			check(&spill[i])
		}
		if !finished {
			select {
			case <-done:
				finished = true
			default:
			}
		} else if got < producers*per && q.length.Load() == 0 {
			t.Fatalf("lost messages: got %d of %d", got, producers*per)
		}
	}
	if q.length.Load() != 0 {
		t.Fatalf("length %d after draining", q.length.Load())
	}
}
