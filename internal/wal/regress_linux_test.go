package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"github.com/edgedhq/edged/internal/testenv"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRegressRotateENOSPCPanics: a full disk at a segment rotation. The
// write that fills the segment fits; creating the next segment's header
// does not (ENOSPC). rotate has already closed the old segment and set
// l.f = nil; openSegment fails; nothing ever reopens a segment, and the
// next write dereferences the nil file in its error path (l.f.Name()):
// a panic on whichever goroutine commits (an event loop, in edged).
// Needs root (tmpfs).
func TestRegressRotateENOSPCPanics(t *testing.T) {
	testenv.RequirePriv(t, "mounting a small tmpfs")
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=256k"); err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	dir := filepath.Join(mnt, "data")
	const pages = 4
	total := 4080 + pages*4096 // fills the segment's first page and 4 more exactly
	l, _, _ := open(t, dir, func(o *Options) { o.SegmentBytes = int64(16 + total) })
	// Fill the file system, then free exactly `pages` pages.
	filler := filepath.Join(mnt, "filler")
	f, _ := os.Create(filler)
	blk := make([]byte, 4096)
	n := 0
	for {
		if _, err := f.Write(blk); err != nil {
			break
		}
		n++
	}
	f.Truncate(int64(n-pages) * 4096)
	f.Close()
	// One record of exactly `total` bytes: 17 header + uvarint + data.
	data := total - 17 - 3
	l.Append(1, bytes.Repeat([]byte{'a'}, data))
	err := l.Commit()
	t.Logf("first commit (fills the disk, rotation's header does not fit): %v", err)
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("second commit panicked: %v", r)
		}
	}()
	os.Remove(filler)                  // space is back: the log should recover
	time.Sleep(250 * time.Millisecond) // past the retry pacing
	l.Append(1, []byte("after"))
	err = l.Commit()
	t.Logf("second commit with space back: %v", err)
	if err != nil {
		t.Fatalf("the log does not recover once space is back: %v", err)
	}
}

// TestRegressTornTailWithEmbeddedRecord: whether a bad record at the end of
// the last segment is a torn tail or corruption is decided by scanning
// every later offset for something that parses as a valid record. A
// client controls the bytes of its PUBLISH payload, which a put record
// holds verbatim; a payload that contains a framed record with a correct
// CRC turns a torn tail (a kill -9 during the write of that message) into
// "corruption": the server refuses to start, and --repair then applies
// the forged record (here: a group membership) as if the server had
// logged it.
func TestRegressTornTailWithEmbeddedRecord(t *testing.T) {
	dir := t.TempDir()
	l, _, _ := open(t, dir, nil)
	l.Append(2, []byte("honest"))
	// The attacker's payload: a forged record of type 8 (edge's group+)
	// with fields "admins", "mallory", followed by padding.
	forged := appendRecord(nil, 8, 1<<40, [][]byte{[]byte("admins"), []byte("mallory")})
	payload := append(append([]byte(nil), forged...), bytes.Repeat([]byte{'p'}, 64<<10)...)
	l.Append(1, []byte("bob"), []byte{1}, payload)
	if err := l.Commit(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	seg := filepath.Join(dir, "0000000000000001.wal")
	b, _ := os.ReadFile(seg)
	// kill -9 in the middle of writing the big record: the file ends
	// 32 KiB into its payload (after the forged bytes).
	os.WriteFile(seg, b[:len(b)-32<<10], 0o600)

	o := Options{Dir: dir, Sync: SyncNever, Logf: t.Logf}
	l2, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	_, err = l2.Replay(func(Record) error { return nil })
	l2.Close()
	var ce *CorruptError
	if errors.As(err, &ce) {
		t.Errorf("a torn tail is reported as corruption (start refused): %v", err)
	}
	o.Repair = true
	l3, _ := Open(o)
	defer l3.Close()
	var got []Record
	l3.Replay(func(r Record) error {
		got = append(got, Record{Type: r.Type, Seq: r.Seq, Data: bytes.Clone(r.Data)})
		return nil
	})
	for _, r := range got {
		if r.Type == 8 {
			f := r.Fields()
			g, _ := f.Next()
			u, _ := f.Next()
			t.Errorf("--repair replayed a record forged inside a payload: type %d seq %d %q %q", r.Type, r.Seq, g, u)
		}
	}
	_ = binary.LittleEndian
}

// TestRegressRetrierSkipsOnDurable: under SyncAlways the retrier writes
// up to Last, then fsyncs up to a *new* Last; if a record was appended in
// between (traffic goes on: deletes, receipts), sync reports "not yet
// written", the condition fails, and the loop ends because write already
// cleared failed: OnDurable is never called, and the event loops holding
// PUBACKs are not woken.
func TestRegressRetrierSkipsOnDurable(t *testing.T) {
	testenv.RequirePriv(t, "mounting a small tmpfs")
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	woken := make(chan struct{}, 10)
	l, _, _ := open(t, filepath.Join(mnt, "data"), func(o *Options) {
		o.Sync = SyncAlways
		o.OnDurable = func() { woken <- struct{}{} }
	})
	defer l.Close()
	filler := filepath.Join(mnt, "filler")
	f, _ := os.Create(filler)
	for {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	f.Close()
	l.Append(1, bytes.Repeat([]byte{'x'}, 64<<10))
	if err := l.Commit(); err == nil {
		t.Fatal("commit on a full fs succeeded")
	}
	stop := make(chan struct{})
	go func() { // traffic that appends records without committing
		for {
			select {
			case <-stop:
				return
			default:
				l.Append(2, []byte("del"))
				time.Sleep(2 * time.Microsecond)
			}
		}
	}()
	os.Remove(filler)
	select {
	case <-woken:
	case <-time.After(2 * time.Second):
		t.Errorf("space came back and the log writes again (failed=%v) but OnDurable was never called", l.Failed())
	}
	close(stop)
}
