package wal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

func open(t *testing.T, dir string, mod func(*Options)) (*Log, []Record, ReplayStats) {
	t.Helper()
	o := Options{Dir: dir, Sync: SyncNever, Logf: t.Logf}
	if mod != nil {
		mod(&o)
	}
	l, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	var recs []Record
	st, err := l.Replay(func(r Record) error {
		r.Data = slices.Clone(r.Data)
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		l.Close()
		t.Fatalf("replay: %v", err)
	}
	return l, recs, st
}

func fields(r Record) []string {
	var out []string
	f := r.Fields()
	for {
		b, ok := f.Next()
		if !ok {
			return out
		}
		out = append(out, string(b))
	}
}

// TestAppendReplay: records come back in order with their fields and
// seqs, across segment rotations and whatever the sync mode; seqs go on
// increasing after a restart.
func TestAppendReplay(t *testing.T) {
	for _, mode := range []SyncMode{SyncAlways, SyncInterval, SyncNever} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			l, recs, _ := open(t, dir, func(o *Options) { o.Sync, o.SegmentBytes = mode, 4096 })
			if len(recs) != 0 {
				t.Fatalf("fresh dir replayed %d records", len(recs))
			}
			for i := range 500 {
				l.Append(byte(1+i%3), []byte(fmt.Sprint("user", i)), []byte{}, []byte(strings.Repeat("p", i%40)))
				if i%7 == 0 {
					if err := l.Commit(); err != nil {
						t.Fatal(err)
					}
					if l.Durable() != l.Last() {
						t.Fatalf("after Commit durable %d, last %d", l.Durable(), l.Last())
					}
				}
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			segs, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
			if len(segs) < 3 {
				t.Fatalf("%d segments for ~30 KB at 4 KiB each: no rotation", len(segs))
			}
			l, recs, _ = open(t, dir, nil)
			if len(recs) != 500 {
				t.Fatalf("replayed %d records, want 500", len(recs))
			}
			for i, r := range recs {
				f := fields(r)
				if r.Seq != uint64(i+1) || r.Type != byte(1+i%3) || len(f) != 3 || f[0] != fmt.Sprint("user", i) || f[1] != "" || len(f[2]) != i%40 {
					t.Fatalf("record %d: seq %d type %d fields %q", i, r.Seq, r.Type, f)
				}
			}
			if seq := l.Append(1, []byte("next")); seq != 501 {
				t.Fatalf("seq after restart %d, want 501", seq)
			}
			l.Close()
		})
	}
}

// TestConcurrentGroupCommit: appenders on several goroutines commit
// concurrently; every record is replayed once, and each goroutine's
// records keep its order.
func TestConcurrentGroupCommit(t *testing.T) {
	dir := t.TempDir()
	l, _, _ := open(t, dir, func(o *Options) { o.Sync = SyncAlways })
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				seq := l.Append(1, []byte{byte(g)}, []byte(fmt.Sprint(i)))
				if err := l.Commit(); err != nil {
					t.Error(err)
					return
				}
				if l.Durable() < seq {
					t.Errorf("Commit returned with seq %d not durable (%d)", seq, l.Durable())
					return
				}
			}
		}()
	}
	wg.Wait()
	// Four goroutines committing one record each: while one fsyncs the
	// others append, and the next fsync covers them all.
	if n := l.Stats.Syncs.Load(); n >= 1200 {
		t.Fatalf("%d fsyncs for 1,200 commits: none was shared", n)
	}
	l.Close()
	_, recs, _ := open(t, dir, nil)
	next := [4]int{}
	for _, r := range recs {
		f := fields(r)
		g := f[0][0]
		if f[1] != fmt.Sprint(next[g]) {
			t.Fatalf("goroutine %d: record %s, want %d", g, f[1], next[g])
		}
		next[g]++
	}
	if next != [4]int{300, 300, 300, 300} {
		t.Fatalf("replayed %v per goroutine, want 300 each", next)
	}
}

// writeRecords makes a log of n records and returns its only segment.
func writeRecords(t *testing.T, dir string, n int) string {
	t.Helper()
	l, _, _ := open(t, dir, nil)
	for i := range n {
		l.Append(1, []byte(fmt.Sprintf("record-%03d", i)))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
	slices.Sort(segs)
	for _, s := range segs {
		if fi, _ := os.Stat(s); fi.Size() > fileHdr {
			return s
		}
	}
	t.Fatal("no segment with records")
	return ""
}

// TestTornTail: a record cut short at the end of the last segment (the
// process died mid-write), or zeros after the last record (a file system
// that extended the file), is truncated away and logged; the records
// before it replay, and the log goes on.
func TestTornTail(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(b []byte) []byte
	}{
		{"cut mid-record", func(b []byte) []byte { return b[:len(b)-5] }},
		{"cut mid-header", func(b []byte) []byte { return b[:len(b)-len("record-009")-recHdr+3] }},
		{"zeros after", func(b []byte) []byte { return append(b, make([]byte, 4096)...) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			seg := writeRecords(t, dir, 10)
			// The newest segment is the empty one Close left: make the
			// damaged one the last by removing the empty ones after it.
			segs, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
			for _, s := range segs {
				if s > seg {
					os.Remove(s)
				}
			}
			b, _ := os.ReadFile(seg)
			os.WriteFile(seg, tc.damage(b), 0o600)
			var lines []string
			l, recs, st := open(t, dir, func(o *Options) {
				o.Logf = func(f string, a ...any) { lines = append(lines, fmt.Sprintf(f, a...)) }
			})
			want := 9
			if tc.name == "zeros after" {
				want = 10
			}
			if len(recs) != want || st.Truncated == 0 {
				t.Fatalf("replayed %d records, truncated %d bytes; want %d and a truncation", len(recs), st.Truncated, want)
			}
			if len(lines) == 0 || !strings.Contains(lines[0], "torn tail") || !strings.Contains(lines[0], seg) {
				t.Fatalf("log lines %q, want one naming the torn tail of %s", lines, seg)
			}
			l.Append(1, []byte("after"))
			l.Close()
			_, recs, st = open(t, dir, nil)
			if len(recs) != want+1 || st.Truncated != 0 {
				t.Fatalf("second replay: %d records, truncated %d; want %d, 0", len(recs), st.Truncated, want+1)
			}
		})
	}
}

// TestCorruptMiddle: a damaged record with good ones after it is not a torn
// tail: Replay fails naming the file and offset; with Repair it skips the
// bad bytes, logs them and asks for a compaction.
func TestCorruptMiddle(t *testing.T) {
	for _, where := range []string{"payload", "length"} {
		t.Run(where, func(t *testing.T) {
			dir := t.TempDir()
			seg := writeRecords(t, dir, 10)
			b, _ := os.ReadFile(seg)
			i := strings.Index(string(b), "record-004")
			rec := i - recHdr - 1 // the record's start: header, then the field's one-byte length
			if where == "payload" {
				b[i+3] ^= 0x40
			} else {
				b[rec+2] = 0x7F // length far past the end
			}
			os.WriteFile(seg, b, 0o600)
			l, err := Open(Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			_, err = l.Replay(func(Record) error { return nil })
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.File != seg || ce.Offset != int64(rec) {
				t.Fatalf("replay: %v, want a CorruptError at %s offset %d", err, seg, rec)
			}
			l.Close()
			l, recs, st := open(t, dir, func(o *Options) { o.Repair = true })
			if len(recs) != 9 || !st.NeedsCompact() {
				t.Fatalf("repair replayed %d records (want 9), needs compact %v", len(recs), st.NeedsCompact())
			}
			for _, r := range recs {
				if fields(r)[0] == "record-004" {
					t.Fatal("the corrupt record was replayed")
				}
			}
			l.Close()
		})
	}
}

// TestCompactSnapshot: after Compact the older segments are gone, a replay
// reads the snapshot then the log after it, and an interrupted compaction
// (a leftover .tmp) is ignored.
func TestCompactSnapshot(t *testing.T) {
	dir := t.TempDir()
	l, _, _ := open(t, dir, nil)
	for i := range 100 {
		l.Append(1, []byte(fmt.Sprint("old", i)))
	}
	l.Commit()
	err := l.Compact(func(w *SnapshotWriter) error {
		return w.Append(2, 7, []byte("state"))
	})
	if err != nil {
		t.Fatal(err)
	}
	l.Append(3, []byte("after"))
	l.Close()
	os.WriteFile(filepath.Join(dir, "snap-00000000000000ff.tmp"), []byte("half"), 0o600)
	_, recs, st := open(t, dir, nil)
	if len(recs) != 2 || fields(recs[0])[0] != "state" || recs[0].Seq != 7 || fields(recs[1])[0] != "after" || recs[1].Seq != 101 {
		t.Fatalf("after compaction replayed %v", recs)
	}
	if st.Snapshot == "" {
		t.Fatal("no snapshot read")
	}
	if _, err := os.Stat(filepath.Join(dir, "snap-00000000000000ff.tmp")); !os.IsNotExist(err) {
		t.Fatal("leftover .tmp kept")
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
	for _, s := range segs {
		if b, _ := os.ReadFile(s); strings.Contains(string(b), "old1") {
			t.Fatalf("compacted segment %s still there", s)
		}
	}
}

// TestLocked: a second Open of a directory fails with ErrLocked.
func TestLocked(t *testing.T) {
	dir := t.TempDir()
	l, _, _ := open(t, dir, nil)
	defer l.Close()
	if _, err := Open(Options{Dir: dir}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
}

// TestParseSync covers the --fsync values.
func TestParseSync(t *testing.T) {
	for _, tc := range []struct {
		in   string
		mode SyncMode
		ok   bool
	}{
		{"always", SyncAlways, true}, {"never", SyncNever, true}, {"interval=50ms", SyncInterval, true},
		{"interval=0s", 0, false}, {"interval=abc", 0, false}, {"sometimes", 0, false}, {"", 0, false},
	} {
		m, d, err := ParseSync(tc.in)
		if (err == nil) != tc.ok || tc.ok && m != tc.mode || tc.ok && m == SyncInterval && d.Milliseconds() != 50 {
			t.Errorf("ParseSync(%q) = %v %v %v", tc.in, m, d, err)
		}
		if !tc.ok && !errors.Is(err, ErrBadOption) {
			t.Errorf("ParseSync(%q): %v, want ErrBadOption", tc.in, err)
		}
	}
}
