package netpoll

import (
	"reflect"
	"sync"
	"testing"
	"unsafe"

	"github.com/edgedhq/edged/internal/slab"
)

func TestConnRecordIsPointerFreeAndSmall(t *testing.T) {
	if slab.HasPointers(reflect.TypeOf(Conn{})) {
		t.Fatal("Conn holds pointers: the GC would scan every connection")
	}
	if got := unsafe.Sizeof(Conn{}); got != 32 {
		t.Fatalf("Conn is %d bytes; the documented size is 32", got)
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
