// Package wal is edged's durable store: an append-only log of records in
// numbered segment files plus, after a compaction, one snapshot file, in a
// data directory that one process owns (an exclusive flock on LOCK).
//
// # Why our own log and not an embedded store
//
// The server's state lives in memory, in structures tuned for density
// (pointer-free client records, pooled packet buffers); the store only has
// to make every change to it survive a crash and be replayed at start. That
// is a redo log: one sequential write per event-loop batch, no reads until
// the next start, no index. An LSM store such as cockroachdb/pebble gives
// the same batched WAL underneath, then pays again for what edged does not
// need: a memtable that holds a second copy of every queued message in the
// heap, flushes and compactions of sorted tables, and a key per message to
// delete it by. Measured on the 2-core dev VM on 2026-12-02 with
// internal/wal/storecmp (its own module, so pebble is never a dependency of
// edged), storing 100-byte messages in batches of 64 and deleting each one
// batch later, as inboxes do: without fsync this log took 0.39-0.83 us per
// message and pebble v2.1.7 0.99-1.04 us; with an fsync per batch both took
// 3.4-4.5 us (the fsync); this log held no heap per live message, pebble's
// memtable 220-274 bytes, which at a million queued messages is a quarter
// GiB beside the inboxes themselves. So the log is ours, and stays small:
// framing, group commit, torn-tail and corruption handling, and compaction
// by snapshot.
//
// # Format
//
// A segment (%016x.wal) and a snapshot (snap-%016x) start with a 16-byte
// header (magic "EDGEDWAL", version, kind) followed by records:
//
//	u32 length of the rest (type, seq, data), little endian
//	u32 CRC-32C of type, seq and data
//	u8  type (the caller's, 1-255)
//	u64 seq, little endian: the log's sequence number, strictly increasing
//	    across segments; a snapshot keeps the seq of the record it restates
//	data: the caller's fields, each uvarint(len) then bytes
//
// # Durability
//
// Append only buffers a record in memory (under one mutex, so log order is
// the order in which callers appended). Commit writes the buffer with one
// write(2) and, with SyncAlways, fsyncs it, coalescing callers: one write
// and one fsync serve every record appended before them (group commit).
// RequestSync hands the fsync to a background syncer instead (SyncAlways),
// which calls Options.OnDurable when done, so an event loop never blocks in
// an fsync. Durable reports the highest seq a caller may acknowledge: written (in the
// page cache, so it survives the process being killed) for SyncInterval and
// SyncNever, fsynced for SyncAlways. A write error (a full disk) leaves the
// unwritten records buffered, makes Failed true, and retries in the
// background until it succeeds; nothing appended is dropped.
//
// # Recovery and compaction
//
// Replay reads the newest snapshot, then every segment from the one the
// snapshot names, in order. A record cut short at the end of the last
// segment (a torn write) is truncated away and logged; a bad record with a
// good one after it, or anywhere but the tail, is corruption: Open's
// Replay fails with a *CorruptError naming the file and offset, unless
// Options.Repair is set, in which case the bad bytes are skipped, logged and
// the caller is told to compact (which rewrites the state without them).
//
// Compact rotates to a new segment R, lets the caller write its whole live
// state as records into snap-R (a fuzzy snapshot: the state is read while
// appends go on into segment R), fsyncs and renames it into place, then
// deletes the older segments and snapshot. Replaying snap-R and then the
// segments from R re-applies some changes the snapshot already holds, so
// the caller's records must be idempotent state changes ("put entry seq
// S", "delete entry S", "set flag"), which edged's are.
package wal
