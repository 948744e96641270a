// Package storecmp measures edged's log (internal/wal) against
// cockroachdb/pebble for the store's workload, the comparison behind the
// choice written in internal/wal's package doc. It is its own module so
// that pebble never becomes a dependency of edged. Run:
//
//	cd internal/wal/storecmp && go test -bench . -benchtime 200000x
package storecmp

import (
	"encoding/binary"
	"runtime"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/edgedhq/edged/internal/wal"
)

const (
	batch   = 64  // records per group commit: one loop iteration's PUBACKs
	payload = 100 // a small direct message
)

// The workload: each op stores one message (user id, flags, packet) and,
// one batch later, deletes it (its PUBACK from the recipient), so about one
// batch is live at any time; every batch ends with a commit (write, and an
// fsync when sync is set). Reported: ns, allocations and bytes per message
// stored and deleted; heap_B_per_live: heap held per live message after
// holding live messages alive.
func BenchmarkStore(b *testing.B) {
	for _, sync := range []bool{false, true} {
		name := "nosync"
		if sync {
			name = "sync"
		}
		b.Run("wal/"+name, func(b *testing.B) { benchWAL(b, sync) })
		b.Run("pebble/"+name, func(b *testing.B) { benchPebble(b, sync) })
	}
}

func key(i int) []byte {
	var k [16]byte
	copy(k[:], "user0000")
	binary.BigEndian.PutUint64(k[8:], uint64(i))
	return k[:]
}

func benchWAL(b *testing.B, sync bool) {
	mode := wal.SyncNever
	if sync {
		mode = wal.SyncAlways
	}
	l, err := wal.Open(wal.Options{Dir: b.TempDir(), Sync: mode})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	if _, err := l.Replay(func(wal.Record) error { return nil }); err != nil {
		b.Fatal(err)
	}
	pkt := make([]byte, payload)
	flags := []byte{1}
	var seqs [batch]uint64
	var s8 [8]byte
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		k := key(i % batch)
		if old := seqs[i%batch]; old != 0 {
			binary.LittleEndian.PutUint64(s8[:], old)
			l.Append(2, k, s8[:])
		}
		seqs[i%batch] = l.Append(1, k, flags, pkt)
		i++
		if i%batch == 0 {
			if err := l.Commit(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	// The log holds nothing in memory per live message: the caller's
	// inbox does (and would with pebble too).
	b.ReportMetric(heapPerLive(b, func(n int) {
		for j := range n {
			l.Append(1, key(j), flags, pkt)
		}
		l.Commit()
	}), "heap_B_per_live")
}

func benchPebble(b *testing.B, sync bool) {
	db, err := pebble.Open(b.TempDir(), &pebble.Options{Logger: quiet{}})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	opt := pebble.NoSync
	if sync {
		opt = pebble.Sync
	}
	val := make([]byte, payload+1)
	b.ReportAllocs()
	bt := db.NewBatch()
	i := 0
	for b.Loop() {
		// A message key: user, then a per-message counter.
		k := key(i)
		if i >= batch {
			bt.Delete(key(i-batch), nil)
		}
		bt.Set(k, val, nil)
		i++
		if i%batch == 0 {
			if err := bt.Commit(opt); err != nil {
				b.Fatal(err)
			}
			bt.Close()
			bt = db.NewBatch()
		}
	}
	bt.Close()
	b.StopTimer()
	b.ReportMetric(heapPerLive(b, func(n int) {
		bt := db.NewBatch()
		for j := range n {
			bt.Set(key(1<<40+j), val, nil)
		}
		bt.Commit(pebble.NoSync)
		bt.Close()
	}), "heap_B_per_live")
}

// heapPerLive stores n live messages with add and returns the heap they
// hold per message.
func heapPerLive(b *testing.B, add func(n int)) float64 {
	const n = 200_000
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	add(n)
	runtime.GC()
	runtime.ReadMemStats(&m1)
	return float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc)) / n
}

type quiet struct{}

func (quiet) Infof(string, ...any)  {}
func (quiet) Errorf(string, ...any) {}
func (quiet) Fatalf(format string, args ...any) {
	panic("pebble: fatal")
}
