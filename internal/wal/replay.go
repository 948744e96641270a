package wal

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"time"
)

// Record is one replayed record; Data is valid only during the callback.
type Record struct {
	Type byte
	Seq  uint64
	Data []byte
}

// Fields iterates over a record's fields.
type Fields struct{ b []byte }

// Fields returns an iterator over r's fields.
func (r Record) Fields() Fields { return Fields{r.Data} }

// Next returns the next field; ok is false at the end or if the rest is
// malformed.
func (f *Fields) Next() (field []byte, ok bool) {
	n, k := binary.Uvarint(f.b)
	if k <= 0 || uint64(len(f.b)-k) < n {
		return nil, false
	}
	field, f.b = f.b[k:k+int(n)], f.b[k+int(n):]
	return field, true
}

// ReplayStats describe what Replay read.
type ReplayStats struct {
	Snapshot  string // the snapshot file read, "" if none
	Segments  int
	Records   int
	Bytes     int64
	Truncated int64 // bytes of a torn tail cut off the last segment
	Repaired  int64 // corrupt bytes skipped (Options.Repair)
	Took      time.Duration
}

// NeedsCompact reports whether the state should be compacted at once (a
// repair skipped bad bytes that are still in a segment file).
func (s ReplayStats) NeedsCompact() bool { return s.Repaired > 0 }

// Replay calls fn for every record of the newest snapshot and the segments
// after it, in log order, then opens a new segment for appending. An error
// from fn stops it and is returned. It returns a *CorruptError for
// corruption (unless Options.Repair).
func (l *Log) Replay(fn func(Record) error) (st ReplayStats, err error) {
	t0 := time.Now()
	segs, snaps, err := l.files()
	if err != nil {
		return st, err
	}
	var from uint64 // the first segment to read
	var maxSeq uint64
	call := func(r Record) error {
		if r.Seq > maxSeq {
			maxSeq = r.Seq
		}
		st.Records++
		return fn(r)
	}
	if n := len(snaps); n > 0 {
		id := snaps[n-1]
		p := l.snapPath(id)
		size, _, rerr := l.replayFile(p, kindSnap, false, &st, call)
		if rerr != nil {
			return st, rerr
		}
		st.Snapshot, from = p, id
		l.snapSize.Store(size)
		for _, old := range snaps[:n-1] {
			os.Remove(l.snapPath(old))
		}
	}
	last := uint64(0)
	for i, id := range segs {
		if id < from {
			os.Remove(l.segPath(id)) // compacted into the snapshot; its delete did not happen
			continue
		}
		size, _, rerr := l.replayFile(l.segPath(id), kindSeg, i == len(segs)-1, &st, call)
		if rerr != nil {
			return st, rerr
		}
		st.Segments++
		l.sinceSnp.Add(size)
		last = id
		if size == fileHdr {
			os.Remove(l.segPath(id)) // nothing in it (a start with no writes)
		}
	}
	l.mu.Lock()
	l.seq = maxSeq
	l.last.Store(maxSeq)
	l.mu.Unlock()
	l.written.Store(maxSeq)
	l.synced.Store(maxSeq)
	l.wmu.Lock()
	err = l.openSegment(max(last, from) + 1)
	l.wmu.Unlock()
	if err != nil {
		return st, err
	}
	l.startBackground()
	st.Took = time.Since(t0)
	return st, nil
}

// replayFile reads one file's records. tail: it is the last segment, where
// a torn write is expected and truncated.
func (l *Log) replayFile(path string, kind byte, tail bool, st *ReplayStats, fn func(Record) error) (size int64, n int, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, fmt.Errorf("replay: %w", err)
	}
	size = int64(len(b))
	st.Bytes += size
	if len(b) < fileHdr {
		if tail && kind == kindSeg {
			// Created, header not yet written: nothing was in it.
			l.opts.Logf("wal: %s: empty segment (%d bytes) removed", path, len(b))
			os.Remove(path)
			st.Truncated += size
			return 0, 0, nil
		}
		return size, 0, &CorruptError{File: path, Offset: 0, Why: "file shorter than its header"}
	}
	if string(b[:8]) != magic || b[12] != kind {
		return size, 0, &CorruptError{File: path, Offset: 0, Why: "not an edged log file of this kind"}
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != version {
		return size, 0, fmt.Errorf("replay %s: format version %d, this edged reads %d", path, v, version)
	}
	off := fileHdr
	var lastSeq uint64
	for off < len(b) {
		rec, k, why := parseRecord(b[off:])
		if why == "" {
			if err := fn(rec); err != nil {
				return size, n, err
			}
			lastSeq = rec.Seq
			n++
			off += k
			continue
		}
		next := resync(b, off+1, lastSeq, kind == kindSeg)
		if next < 0 && tail {
			// A torn write at the end: nothing valid follows.
			cut := int64(len(b) - off)
			l.opts.Logf("wal: %s: torn tail at offset %d (%s): truncated %d bytes", path, off, why, cut)
			if err := os.Truncate(path, int64(off)); err != nil {
				return size, n, fmt.Errorf("replay: truncate torn tail: %w", err)
			}
			st.Truncated += cut
			return int64(off), n, nil
		}
		if !l.opts.Repair {
			return size, n, &CorruptError{File: path, Offset: int64(off), Why: why}
		}
		if next < 0 {
			next = len(b)
		}
		l.opts.Logf("wal: %s: repair: dropped %d corrupt bytes at offset %d (%s)", path, next-off, off, why)
		st.Repaired += int64(next - off)
		off = next
	}
	return size, n, nil
}

// parseRecord decodes the record at the start of b: its length k, or why
// it is not a whole valid record.
func parseRecord(b []byte) (r Record, k int, why string) {
	if len(b) < recHdr {
		return r, 0, "record header cut short"
	}
	n := int(binary.LittleEndian.Uint32(b))
	if n < recHdr-8 || n > maxRecord {
		return r, 0, fmt.Sprintf("bad record length %d", n)
	}
	if len(b) < 8+n {
		return r, 0, "record cut short"
	}
	if crc32.Checksum(b[8:8+n], castagnoli) != binary.LittleEndian.Uint32(b[4:]) {
		return r, 0, "checksum mismatch"
	}
	return Record{Type: b[8], Seq: binary.LittleEndian.Uint64(b[9:]), Data: b[17 : 8+n]}, 8 + n, ""
}

// resync returns the offset of the first record at or after from where
// the rest of the file parses as whole, valid records to its very end, or
// -1: whether a bad record is a torn tail (no such record after it) or
// corruption in the middle. Requiring the whole rest, not one record, is
// what keeps a client's payload from passing for the log: a put record
// holds PUBLISH bytes verbatim, and a payload may hold a well-framed
// record, but the real bytes around it do not parse. In a segment the
// seqs must also go on increasing by one from after last (they do in a
// log; a snapshot keeps old seqs).
func resync(b []byte, from int, last uint64, seg bool) int {
	for i := from; i+recHdr <= len(b); i++ {
		r, k, why := parseRecord(b[i:])
		if why != "" || seg && r.Seq <= last {
			continue
		}
		if wholeTail(b[i+k:], r.Seq, seg) {
			return i
		}
	}
	return -1
}

// wholeTail reports whether b is a run of valid records to its end, with
// seqs following prev in a segment.
func wholeTail(b []byte, prev uint64, seg bool) bool {
	for len(b) > 0 {
		r, k, why := parseRecord(b)
		if why != "" || seg && r.Seq != prev+1 {
			return false
		}
		prev = r.Seq
		b = b[k:]
	}
	return true
}

// Compact writes a snapshot: it starts a new segment R, calls write with a
// SnapshotWriter for snap-R, and once that is on disk deletes the segments
// before R and the older snapshot. write must emit the caller's whole live
// state (see the package doc). One compaction runs at a time.
func (l *Log) Compact(write func(w *SnapshotWriter) error) (err error) {
	l.compactMu.Lock()
	defer l.compactMu.Unlock()
	if err := l.write(l.last.Load(), true); err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	l.syncMu.Lock()
	l.wmu.Lock()
	if l.closed {
		l.wmu.Unlock()
		l.syncMu.Unlock()
		return ErrClosed
	}
	l.needRotate.Store(false)
	old, upto, err := l.rotate()
	r := l.segID
	l.wmu.Unlock()
	if err == nil {
		err = l.retire(old, upto)
	}
	l.syncMu.Unlock()
	if err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	tmp := l.snapPath(r) + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	w := &SnapshotWriter{w: bufio.NewWriterSize(f, 1<<20)}
	w.w.Write(header(kindSnap))
	w.size = fileHdr
	if err := write(w); err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	if err := w.w.Flush(); err != nil {
		return fmt.Errorf("compact: write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("compact: fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("compact: close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, l.snapPath(r)); err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	syncDir(l.dir)
	segs, snaps, _ := l.files()
	for _, id := range segs {
		if id < r {
			os.Remove(l.segPath(id))
		}
	}
	for _, id := range snaps {
		if id < r {
			os.Remove(l.snapPath(id))
		}
	}
	l.snapSize.Store(w.size)
	l.sinceSnp.Store(0)
	l.Stats.Compactions.Add(1)
	return nil
}

// ShouldCompact reports whether the log since the last snapshot has grown
// past Options.CompactBytes and twice the snapshot.
func (l *Log) ShouldCompact() bool {
	n := l.sinceSnp.Load()
	return n >= l.opts.CompactBytes && n >= 2*l.snapSize.Load()
}

// DiskBytes returns the bytes of the last snapshot plus those written to
// segments since.
func (l *Log) DiskBytes() int64 { return l.snapSize.Load() + l.sinceSnp.Load() }

// SnapshotWriter writes a snapshot's records.
type SnapshotWriter struct {
	w    *bufio.Writer
	buf  []byte
	size int64
	err  error
}

// EncodeRecord frames one record onto b in the log's format (for a state
// stream outside the log, such as a handoff).
func EncodeRecord(b []byte, typ byte, seq uint64, fields ...[]byte) []byte {
	return appendRecord(b, typ, seq, fields)
}

// DecodeRecords calls fn for each record EncodeRecord put in b; a damaged
// record is an error.
func DecodeRecords(b []byte, fn func(Record) error) error {
	for off := 0; off < len(b); {
		r, k, why := parseRecord(b[off:])
		if why != "" {
			return fmt.Errorf("decode record at offset %d: %s", off, why)
		}
		if err := fn(r); err != nil {
			return err
		}
		off += k
	}
	return nil
}

// AppendEncoded writes records framed with EncodeRecord.
func (w *SnapshotWriter) AppendEncoded(b []byte) error {
	if w.err != nil {
		return w.err
	}
	_, w.err = w.w.Write(b)
	w.size += int64(len(b))
	return w.err
}

// Err returns the first error of an Append.
func (w *SnapshotWriter) Err() error { return w.err }

// Append writes one record restating state with its original seq.
func (w *SnapshotWriter) Append(typ byte, seq uint64, fields ...[]byte) error {
	if w.err != nil {
		return w.err
	}
	w.buf = appendRecord(w.buf[:0], typ, seq, fields)
	if len(w.buf)-8 > maxRecord {
		w.err = ErrTooBig
		return w.err
	}
	_, w.err = w.w.Write(w.buf)
	w.size += int64(len(w.buf))
	return w.err
}
