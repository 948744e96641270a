package cluster

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"
)

// directory is the cluster's user -> node map as every node holds it (from
// the watch of the directory bucket). It grows with the users of the whole
// cluster, not the node's own, so its bytes per user are per-node density
// (issue #14): a map[string]string spent 82 B per user (two string headers
// in the map's slot, the id's and the node name's allocations). Here a user
// costs one 8-byte slot of an open-addressing table (linear probing, at most
// 3/4 full) and its id once in a pointer-free arena (a uvarint length and
// the bytes); node names are interned, the slot holds an index. 22-35 B
// per user with 10-byte ids, depending on where the table is between two
// doublings (TestDirectoryBytes), and nothing for the garbage collector to
// scan.
//
// Not safe for concurrent use: Node guards it with mu.
type directory struct {
	seed  maphash.Seed
	slots []dslot // len a power of two, or 0
	arena []byte  // ids; a slot's off points here
	nodes []string
	index map[string]uint16 // node name -> its index in nodes
	live  int               // slots holding a user
	dead  int               // tombstones
	waste int               // arena bytes no slot points to
	// full: every one of maxNodes names was in use at the last look, and
	// no user has left since: a new name is refused without a rebuild.
	full bool
}

// dslot is one slot: off is the id's arena offset plus 2 (0: empty, 1: a
// tombstone), tag the hash's top 16 bits (most probes end without reading
// the arena).
type dslot struct {
	off  uint32
	node uint16
	tag  uint16
}

const (
	slotEmpty = 0
	slotDead  = 1
	// maxNodes is how many node names the directory can tell apart at
	// once (the slot's uint16); names no user points to any more are
	// dropped when the table is rebuilt.
	maxNodes = 1<<16 - 1
	// maxArena is the arena's bound: a slot's off (a uint32, plus 2).
	maxArena = 1<<32 - 3
)

func newDirectory() *directory {
	return &directory{seed: maphash.MakeSeed(), index: map[string]uint16{}}
}

// Len is how many users the directory holds.
func (d *directory) Len() int { return d.live }

// Bytes is the directory's memory: the table, the arena and the node names
// (what TestDirectoryBytes bounds; the index map's few entries excluded).
func (d *directory) Bytes() int {
	n := cap(d.slots)*8 + cap(d.arena) + cap(d.nodes)*16
	for _, s := range d.nodes {
		n += len(s)
	}
	return n
}

// Get returns user's node.
func (d *directory) Get(user []byte) (string, bool) {
	if i, ok := d.find(user, d.hash(user)); ok {
		return d.nodes[d.slots[i].node], true
	}
	return "", false
}

// Set records user on node; false if the directory already tells
// maxNodes nodes apart and node is not one of them, or its arena is at
// the 4 GiB its offsets reach.
func (d *directory) Set(user, node string) bool {
	ni, ok := d.index[node]
	if !ok {
		if len(d.nodes) >= maxNodes && !d.full {
			d.rebuild(len(d.slots), true) // drops the names no user points to
			d.full = len(d.nodes) >= maxNodes
		}
		if len(d.nodes) >= maxNodes {
			return false
		}
		ni = uint16(len(d.nodes))
		d.nodes = append(d.nodes, node)
		d.index[node] = ni
	}
	h := d.hash([]byte(user))
	if i, ok := d.find([]byte(user), h); ok {
		d.slots[i].node = ni
		d.full = false // the user's old name may be unused now
		return true
	}
	if (d.live+d.dead+1)*4 > len(d.slots)*3 {
		d.rebuild(d.fit(d.live+1), false) // grows, shrinks after many deletes, or only sweeps the tombstones
	}
	if len(d.arena)+len(user)+binary.MaxVarintLen64 > maxArena {
		if d.waste > 0 {
			d.rebuild(len(d.slots), false)
		}
		if len(d.arena)+len(user)+binary.MaxVarintLen64 > maxArena {
			return false
		}
	}
	off := len(d.arena) + 2
	d.arena = binary.AppendUvarint(d.arena, uint64(len(user)))
	d.arena = append(d.arena, user...)
	d.insert(dslot{off: uint32(off), node: ni, tag: uint16(h >> 48)}, h)
	d.live++
	return true
}

// Delete forgets user.
func (d *directory) Delete(user []byte) {
	i, ok := d.find(user, d.hash(user))
	if !ok {
		return
	}
	d.waste += len(d.id(d.slots[i].off)) + uvarintLen(uint64(len(user)))
	d.slots[i] = dslot{off: slotDead}
	d.full = false
	d.live--
	d.dead++
	if d.waste > 4096 && d.waste*2 > len(d.arena) {
		d.rebuild(d.fit(d.live), false) // compacts the arena
	}
}

// fit is the table size for n users: a power of two at least twice n.
func (d *directory) fit(n int) int {
	size := 16
	for size < 2*n {
		size *= 2
	}
	return size
}

func (d *directory) hash(user []byte) uint64 { return maphash.Bytes(d.seed, user) }

// find returns the slot holding user.
func (d *directory) find(user []byte, h uint64) (int, bool) {
	if len(d.slots) == 0 {
		return 0, false
	}
	mask := len(d.slots) - 1
	tag := uint16(h >> 48)
	for i := int(h) & mask; ; i = (i + 1) & mask {
		s := d.slots[i]
		switch {
		case s.off == slotEmpty:
			return 0, false
		case s.off != slotDead && s.tag == tag && bytes.Equal(d.id(s.off), user):
			return i, true
		}
	}
}

// insert puts s in the first free slot from h's (the table has one: it is
// at most 3/4 full).
func (d *directory) insert(s dslot, h uint64) {
	mask := len(d.slots) - 1
	for i := int(h) & mask; ; i = (i + 1) & mask {
		switch d.slots[i].off {
		case slotEmpty:
			d.slots[i] = s
			return
		case slotDead:
			d.slots[i] = s
			d.dead--
			return
		}
	}
}

// id returns the id at arena offset off (a slot's off).
func (d *directory) id(off uint32) []byte {
	p := d.arena[off-2:]
	n, k := binary.Uvarint(p)
	return p[k : k+int(n)]
}

// rebuild copies the live users into a table of size slots and a compact
// arena; with names, it also keeps only the node names some user points to
// (which renumbers them).
func (d *directory) rebuild(size int, names bool) {
	old, oldArena, oldNodes := d.slots, d.arena, d.nodes
	d.slots = make([]dslot, size)
	d.arena = make([]byte, 0, len(oldArena)-d.waste+64)
	d.dead, d.waste = 0, 0
	var remap map[uint16]uint16
	if names {
		d.nodes, d.index, remap = nil, map[string]uint16{}, map[uint16]uint16{}
	}
	for _, s := range old {
		if s.off < 2 {
			continue
		}
		ni := s.node
		if names {
			var ok bool
			if ni, ok = remap[s.node]; !ok {
				ni = uint16(len(d.nodes))
				d.nodes = append(d.nodes, oldNodes[s.node])
				d.index[oldNodes[s.node]] = ni
				remap[s.node] = ni
			}
		}
		p := oldArena[s.off-2:]
		n, k := binary.Uvarint(p)
		off := len(d.arena) + 2
		d.arena = append(d.arena, p[:k+int(n)]...)
		d.insert(dslot{off: uint32(off), node: ni, tag: s.tag}, d.hash(p[k:k+int(n)]))
	}
}

func uvarintLen(x uint64) int {
	n := 1
	for ; x >= 0x80; x >>= 7 {
		n++
	}
	return n
}
