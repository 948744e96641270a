package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// SyncMode says when written records are fsynced.
type SyncMode uint8

const (
	// SyncAlways fsyncs before Durable covers a record: it survives a
	// power loss. One fsync serves a whole batch (group commit).
	SyncAlways SyncMode = iota
	// SyncInterval writes before Durable covers a record (it survives the
	// process being killed) and fsyncs every Options.Interval: a power loss
	// loses at most that window.
	SyncInterval
	// SyncNever writes before Durable covers a record and leaves flushing
	// to the kernel (about 30 s on Linux: vm.dirty_expire_centisecs).
	SyncNever
)

func (m SyncMode) String() string {
	switch m {
	case SyncAlways:
		return "always"
	case SyncInterval:
		return "interval"
	case SyncNever:
		return "never"
	}
	return "SyncMode(" + strconv.Itoa(int(m)) + ")"
}

// ParseSync parses "always", "never" or "interval=D" (a Go duration, e.g.
// interval=100ms).
func ParseSync(v string) (SyncMode, time.Duration, error) {
	switch {
	case v == "always":
		return SyncAlways, 0, nil
	case v == "never":
		return SyncNever, 0, nil
	case strings.HasPrefix(v, "interval="):
		d, err := time.ParseDuration(strings.TrimPrefix(v, "interval="))
		if err != nil || d <= 0 {
			return 0, 0, fmt.Errorf("parse fsync mode %q: want interval=<positive duration>, e.g. interval=100ms: %w", v, ErrBadOption)
		}
		return SyncInterval, d, nil
	}
	return 0, 0, fmt.Errorf("parse fsync mode %q: want always, never or interval=<duration>: %w", v, ErrBadOption)
}

// Options configure a Log.
type Options struct {
	Dir      string
	Sync     SyncMode
	Interval time.Duration // SyncInterval's period (default 100ms)
	// SegmentBytes starts a new segment past this size (default 64 MiB).
	SegmentBytes int64
	// CompactBytes: ShouldCompact is true once this many bytes were
	// written since the last snapshot and at least twice the snapshot's
	// size (default 64 MiB), so disk use stays proportional to live data.
	CompactBytes int64
	// Repair skips corrupt records in Replay instead of failing.
	Repair bool
	// OnDurable, if set, is called (from a background goroutine) when
	// records became durable after a write failure was retried, so that
	// acknowledgements held back can go out.
	OnDurable func()
	// Logf receives the log's rare lines (torn tails, write errors).
	Logf func(format string, args ...any)
	// LockFile, if set, is the directory's LOCK file, already locked by
	// the process that handed it over (a zero-downtime upgrade): the lock
	// is shared with that open file, not taken again.
	LockFile *os.File
}

// Sentinel errors.
var (
	ErrBadOption = errors.New("wal: bad option")
	ErrLocked    = errors.New("wal: data directory in use by another process")
	ErrClosed    = errors.New("wal: closed")
	ErrFailed    = errors.New("wal: writes are failing; retrying")
	ErrTooBig    = errors.New("wal: record too big")
)

// CorruptError is a bad record that is not a torn tail: Replay refuses to
// go on (Options.Repair skips it).
type CorruptError struct {
	File   string
	Offset int64
	Why    string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("wal: corrupt record in %s at offset %d: %s (start with --repair to drop it)", e.File, e.Offset, e.Why)
}

const (
	magic     = "EDGEDWAL"
	version   = 1
	kindSeg   = 1
	kindSnap  = 2
	fileHdr   = 16
	recHdr    = 4 + 4 + 1 + 8
	maxRecord = 64 << 20 // far above the largest packet a record holds (256 KiB default)
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Log is an open data directory. Append, Commit, Durable and Failed are
// safe for concurrent use.
type Log struct {
	opts Options
	dir  string
	lock *os.File

	// mu guards buf and seq: the records appended and not yet handed to
	// a writer.
	mu   sync.Mutex
	buf  []byte
	seq  uint64
	last atomic.Uint64 // == seq, readable without mu

	// wmu serializes writers and guards the fields below it. Lock order:
	// syncMu, then wmu, then mu.
	wmu      sync.Mutex
	f        *os.File // the segment being appended to
	segID    uint64
	segBytes int64
	pending  []byte // taken from buf, not yet (fully) written
	pendSeq  uint64 // the last seq in pending
	spare    []byte
	closed   bool
	lastTry  time.Time
	sinceSnp atomic.Int64 // bytes written since the last snapshot
	snapSize atomic.Int64 // bytes of the last snapshot

	// syncMu serializes fsyncs and segment rotation, so that a segment is
	// never closed under an fsync.
	syncMu     sync.Mutex
	needRotate atomic.Bool

	written  atomic.Uint64 // highest seq written to a segment
	synced   atomic.Uint64 // highest seq fsynced
	failed   atomic.Bool
	retrying atomic.Bool // the retrier runs: only it clears failed

	syncReq chan struct{} // RequestSync to the syncer (SyncAlways)

	compactMu sync.Mutex
	stop      chan struct{}
	done      sync.WaitGroup

	Stats Stats
}

// Stats count the log's work; read them with Load.
type Stats struct {
	Records, Bytes, Writes, Syncs, WriteErrors, Compactions atomic.Uint64
	SyncNanos                                               atomic.Uint64 // total time in fsync
}

// Open locks dir (creating it) and returns the Log, ready for Replay. The
// caller must call Replay before Append.
func Open(opts Options) (l *Log, err error) {
	if opts.Dir == "" {
		return nil, fmt.Errorf("open log: no directory: %w", ErrBadOption)
	}
	if opts.Interval <= 0 {
		opts.Interval = 100 * time.Millisecond
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = 64 << 20
	}
	if opts.CompactBytes <= 0 {
		opts.CompactBytes = 64 << 20
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	lf := opts.LockFile
	if lf == nil {
		if lf, err = os.OpenFile(filepath.Join(opts.Dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o600); err != nil {
			return nil, fmt.Errorf("open log: %w", err)
		}
	}
	defer func() {
		if err != nil {
			lf.Close()
		}
	}()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		owner, _ := os.ReadFile(lf.Name())
		return nil, fmt.Errorf("open log %s (LOCK held by pid %s): %w", opts.Dir, strings.TrimSpace(string(owner)), ErrLocked)
	}
	lf.Truncate(0)
	lf.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return &Log{opts: opts, dir: opts.Dir, lock: lf, stop: make(chan struct{})}, nil
}

// LockFile returns the open, locked LOCK file (to hand over with the
// directory in a zero-downtime upgrade).
func (l *Log) LockFile() *os.File { return l.lock }

// Abandon closes the log without writing: the records were committed and
// another process owns the directory now (it holds the lock through a
// copy of LockFile). Appends after Abandon are lost.
func (l *Log) Abandon() { l.shut() }

// shut stops the background work, closes the segment and the lock.
func (l *Log) shut() {
	close(l.stop)
	l.done.Wait()
	l.wmu.Lock()
	l.closed = true
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
	l.wmu.Unlock()
	l.lock.Close()
}

// Dir returns the data directory.
func (l *Log) Dir() string { return l.dir }

// files lists the segment ids and snapshot ids in the directory, sorted.
func (l *Log) files() (segs, snaps []uint64, err error) {
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return nil, nil, fmt.Errorf("list %s: %w", l.dir, err)
	}
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, ".wal") && len(name) == 20:
			if id, err := strconv.ParseUint(name[:16], 16, 64); err == nil {
				segs = append(segs, id)
			}
		case strings.HasPrefix(name, "snap-") && len(name) == 21:
			if id, err := strconv.ParseUint(name[5:], 16, 64); err == nil {
				snaps = append(snaps, id)
			}
		case strings.HasPrefix(name, "snap-") && strings.HasSuffix(name, ".tmp"):
			os.Remove(filepath.Join(l.dir, name)) // a compaction that did not finish
		}
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i] < segs[j] })
	sort.Slice(snaps, func(i, j int) bool { return snaps[i] < snaps[j] })
	return segs, snaps, nil
}

func (l *Log) segPath(id uint64) string  { return filepath.Join(l.dir, fmt.Sprintf("%016x.wal", id)) }
func (l *Log) snapPath(id uint64) string { return filepath.Join(l.dir, fmt.Sprintf("snap-%016x", id)) }

func header(kind byte) []byte {
	h := make([]byte, fileHdr)
	copy(h, magic)
	binary.LittleEndian.PutUint32(h[8:], version)
	h[12] = kind
	return h
}

// Append buffers a record of type typ with the given fields and returns its
// seq. It never blocks on I/O.
func (l *Log) Append(typ byte, fields ...[]byte) uint64 {
	l.mu.Lock()
	l.seq++
	seq := l.seq
	l.buf = appendRecord(l.buf, typ, seq, fields)
	l.last.Store(seq)
	l.mu.Unlock()
	l.Stats.Records.Add(1)
	return seq
}

// appendRecord frames one record onto b.
func appendRecord(b []byte, typ byte, seq uint64, fields [][]byte) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 0, typ)
	b = binary.LittleEndian.AppendUint64(b, seq)
	for _, f := range fields {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	binary.LittleEndian.PutUint32(b[start:], uint32(len(b)-start-8))
	binary.LittleEndian.PutUint32(b[start+4:], crc32.Checksum(b[start+8:], castagnoli))
	return b
}

// Last returns the seq of the last record appended.
func (l *Log) Last() uint64 { return l.last.Load() }

// Durable returns the highest seq that may be acknowledged (see SyncMode).
func (l *Log) Durable() uint64 {
	if l.opts.Sync == SyncAlways {
		return l.synced.Load()
	}
	return l.written.Load()
}

// Failed reports whether writes are failing (the records stay buffered and
// are retried).
func (l *Log) Failed() bool { return l.failed.Load() }

// retryEvery is how often a failing log is retried by Commit callers and
// the background retrier: often enough to resume quickly once space
// returns, rarely enough not to spin on a full disk.
const retryEvery = 200 * time.Millisecond

// Commit makes every record appended so far durable (in the sense of
// Durable), writing and, with SyncAlways, fsyncing as needed; concurrent
// callers share the work. It returns ErrFailed (wrapped with the cause)
// while writes fail; the records stay buffered.
func (l *Log) Commit() error {
	target := l.last.Load()
	if l.Durable() >= target {
		return nil
	}
	if l.written.Load() < target {
		if err := l.write(target, false); err != nil {
			return err
		}
	}
	if l.needRotate.Load() {
		if err := l.rotateNow(); err != nil {
			return err
		}
	}
	if l.opts.Sync == SyncAlways {
		return l.sync(target)
	}
	return nil
}

// Write writes every record appended so far without fsyncing: enough for
// Durable in SyncInterval and SyncNever, and for surviving the process.
func (l *Log) Write() error {
	target := l.last.Load()
	if l.written.Load() >= target {
		return nil
	}
	if err := l.write(target, false); err != nil {
		return err
	}
	if l.needRotate.Load() {
		return l.rotateNow()
	}
	return nil
}

// write hands the buffered records to the segment file until target is
// written. force ignores the retry pacing (the background retrier).
func (l *Log) write(target uint64, force bool) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if l.written.Load() >= target {
		return nil
	}
	if l.closed {
		return ErrClosed
	}
	if l.failed.Load() && !force && time.Since(l.lastTry) < retryEvery {
		return ErrFailed
	}
	l.mu.Lock()
	if len(l.pending) == 0 {
		l.pending, l.buf = l.buf, l.spare[:0]
	} else {
		l.pending = append(l.pending, l.buf...)
		l.buf = l.buf[:0]
	}
	l.pendSeq = l.seq
	l.mu.Unlock()
	l.spare = nil
	if err := l.writePending(); err != nil {
		l.lastTry = time.Now()
		l.fail(fmt.Sprintf("write %s", l.f.Name()), len(l.pending), err)
		return fmt.Errorf("write %s: %w: %w", l.f.Name(), ErrFailed, err)
	}
	return nil
}

// writePending writes l.pending to the segment; wmu is held. A short write
// is cut back to the last whole record boundary so the file never holds a
// partial record that a later write would follow.
func (l *Log) writePending() error {
	if len(l.pending) > 0 {
		n, err := l.f.Write(l.pending)
		if err != nil {
			if n > 0 {
				if terr := l.f.Truncate(l.segBytes); terr != nil {
					err = errors.Join(err, terr)
				}
				l.f.Seek(l.segBytes, 0)
			}
			return err
		}
		l.segBytes += int64(n)
		l.sinceSnp.Add(int64(n))
		l.Stats.Bytes.Add(uint64(n))
		l.Stats.Writes.Add(1)
	}
	l.written.Store(l.pendSeq)
	l.spare, l.pending = l.pending[:0], nil
	if cap(l.spare) > 4<<20 {
		l.spare = nil // a burst's buffer is not kept
	}
	if l.segBytes >= l.opts.SegmentBytes {
		l.needRotate.Store(true) // by rotateNow, which takes syncMu first
	}
	return nil
}

// fail marks the log failing (once: the first failure logs and starts the
// retrier).
func (l *Log) fail(what string, held int, err error) {
	l.Stats.WriteErrors.Add(1)
	if !l.failed.Swap(true) {
		l.opts.Logf("wal: %s failed, holding %d bytes and retrying every %v: %v", what, held, retryEvery, err)
		l.retrying.Store(true)
		l.done.Add(1)
		go l.retrier()
	}
}

// retrier retries a failing log until everything appended is written
// (and, with SyncAlways, fsynced) again, then reports it.
func (l *Log) retrier() {
	defer l.done.Done()
	defer l.retrying.Store(false)
	t := time.NewTicker(retryEvery)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		if l.write(l.last.Load(), true) != nil {
			continue
		}
		if l.opts.Sync == SyncAlways && l.sync(l.written.Load()) != nil {
			continue
		}
		l.failed.Store(false)
		l.opts.Logf("wal: writes to %s succeed again", l.dir)
		if l.opts.OnDurable != nil {
			l.opts.OnDurable()
		}
		return
	}
}

// sync fsyncs the segment until target is synced; callers share fsyncs.
func (l *Log) sync(target uint64) error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	if l.synced.Load() >= target {
		return nil
	}
	l.wmu.Lock()
	f, upto := l.f, l.written.Load()
	l.wmu.Unlock()
	if f == nil {
		return ErrClosed
	}
	t0 := time.Now()
	if err := f.Sync(); err != nil {
		// Linux may have dropped the dirty pages the fsync failed on
		// (and report success next time): hold the acknowledgements and
		// retry, like a failed write. What the kernel dropped is not
		// written again: a known limit (fsyncgate).
		l.fail("fsync "+f.Name(), 0, err)
		return fmt.Errorf("fsync %s: %w: %w", f.Name(), ErrFailed, err)
	}
	l.Stats.SyncNanos.Add(uint64(time.Since(t0)))
	l.Stats.Syncs.Add(1)
	if upto > l.synced.Load() {
		l.synced.Store(upto)
	}
	if upto < target {
		return fmt.Errorf("fsync: records up to %d not yet written: %w", target, ErrFailed)
	}
	return nil
}

// rotateNow starts a new segment if the current one is full.
func (l *Log) rotateNow() error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.wmu.Lock()
	if !l.needRotate.Load() || l.closed {
		l.wmu.Unlock()
		return nil
	}
	l.needRotate.Store(false)
	old, upto, err := l.rotate()
	l.wmu.Unlock()
	if err != nil {
		return err
	}
	return l.retire(old, upto)
}

// rotate starts the next segment and returns the one it replaces, with
// the last seq written to it; syncMu and wmu are held. The new segment is
// made first: if it cannot be (a full disk), the current one stays and the
// rotation is tried again later.
func (l *Log) rotate() (old *os.File, upto uint64, err error) {
	old, upto = l.f, l.written.Load()
	if err := l.openSegment(l.segID + 1); err != nil {
		l.needRotate.Store(true)
		return nil, 0, err
	}
	return old, upto, nil
}

// retire fsyncs and closes a segment that rotate replaced, whatever the
// mode (a segment that is not the last must be whole on disk, or a power
// loss leaves a torn record where replay calls it corruption). syncMu is
// held, so no fsync of the new segment can claim these records synced
// first; wmu is not, so writers go on meanwhile (an fsync of up to 64 MiB
// of dirty pages under wmu stalled every loop: measured).
func (l *Log) retire(old *os.File, upto uint64) error {
	if old == nil {
		return nil
	}
	err := old.Sync()
	old.Close()
	if err != nil {
		l.fail("fsync "+old.Name(), 0, err)
		return fmt.Errorf("fsync %s: %w", old.Name(), err)
	}
	if upto > l.synced.Load() {
		l.synced.Store(upto)
	}
	return nil
}

// openSegment creates segment id and makes it current; wmu is held.
func (l *Log) openSegment(id uint64) error {
	f, err := os.OpenFile(l.segPath(id), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("create segment: %w", err)
	}
	if _, err := f.Write(header(kindSeg)); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("create segment %s: %w", f.Name(), err)
	}
	syncDir(l.dir)
	l.f, l.segID, l.segBytes = f, id, fileHdr
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// startBackground starts the interval syncer.
func (l *Log) startBackground() {
	if l.opts.Sync == SyncAlways {
		l.syncReq = make(chan struct{}, 1)
		l.done.Add(1)
		go l.syncer()
		return
	}
	if l.opts.Sync != SyncInterval {
		return
	}
	l.done.Add(1)
	go func() {
		defer l.done.Done()
		t := time.NewTicker(l.opts.Interval)
		defer t.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-t.C:
				if w := l.written.Load(); w > l.synced.Load() {
					l.sync(w)
				}
			}
		}
	}()
}

// RequestSync asks the background syncer (SyncAlways) to fsync what is
// written, without waiting: Options.OnDurable is called when it has. An
// event loop uses it so that it goes on reading and delivering during the
// fsync instead of blocking in it; the fsyncs of all loops' batches are
// shared as with Commit.
func (l *Log) RequestSync() {
	if l.syncReq == nil {
		return
	}
	select {
	case l.syncReq <- struct{}{}:
	default: // one is pending: it will cover these records too
	}
}

// syncer serves RequestSync.
func (l *Log) syncer() {
	defer l.done.Done()
	for {
		select {
		case <-l.stop:
			return
		case <-l.syncReq:
		}
		w := l.written.Load()
		if w <= l.synced.Load() {
			continue
		}
		if l.sync(w) == nil && l.opts.OnDurable != nil {
			l.opts.OnDurable()
		}
	}
}

// Sync writes and fsyncs every record appended so far, whatever the mode.
func (l *Log) Sync() error {
	if err := l.write(l.last.Load(), true); err != nil {
		return err
	}
	return l.sync(l.last.Load())
}

// Close writes and fsyncs what is buffered (a clean shutdown loses
// nothing, whatever the mode), stops the background work and unlocks the
// directory. It returns the write error if the records could not be
// written.
func (l *Log) Close() error {
	var err error
	if l.f != nil {
		if err = l.write(l.last.Load(), true); err == nil {
			err = l.sync(l.last.Load())
		}
	}
	l.shut()
	return err
}
