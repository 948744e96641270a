package wheel

import (
	"math/rand/v2"
	"reflect"
	"sort"
	"testing"
	"unsafe"

	"github.com/edgedhq/edged/internal/slab"
)

func TestTimerNodeIsPointerFreeAndSmall(t *testing.T) {
	if slab.HasPointers(reflect.TypeOf(timerNode{})) {
		t.Fatal("timerNode holds pointers")
	}
	if got := unsafe.Sizeof(timerNode{}); got != 24 {
		t.Fatalf("timerNode is %d bytes; the documented size is 24", got)
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
		w := New(int64(rng.IntN(1 << 20)))
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
	w := New(0)
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

func BenchmarkWheelAddCancel(b *testing.B) {
	b.ReportAllocs()
	w := New(0)
	for i := uint32(0); i < 100000; i++ {
		w.Add(i, int64(i%5000)+1)
	}
	i := uint32(0)
	for b.Loop() {
		w.Add(i%100000, int64(i%7000)+1)
		i++
	}
}
