package edge

import (
	"bytes"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/edgedhq/edged/edge/mqtt"
)

// tsub is one subscription in the topic tree.
type tsub struct {
	cl  *client
	gen uint32 // cl.gen when subscribed: a mismatch means the record was reused
	qos byte
	// opts are the MQTT 5.0 subscription options kept for delivery
	// (mqtt.SubNoLocal, mqtt.SubRetainAsPublished); 0 for 3.1.1.
	opts byte
	// id is the v5 Subscription Identifier (0: none), sent with every
	// message the subscription matches (3.3.4).
	id uint32
}

func (s tsub) key() uint32 { return s.cl.idx }

// tnode is a level of the topic tree. Most nodes that have subscriptions
// have exactly one (a device subscribes to its own topic) and no children:
// such a leaf is one 48-byte object (layout_test.go) plus its 8-byte slot
// in its parent's kids, not that plus a slice, a map slot and a child map;
// x holds the children and the subscriptions from the second client on.
type tnode struct {
	name string    // this level (a copy: the node outlives the filter that made it)
	one  tsub      // the subscription while it is the only one; one.cl == nil: none
	x    *tnodeExt // nil while n has no children and at most one subscription
}

// tnodeExt is the part of a tnode that a leaf with one subscriber lacks.
type tnodeExt struct {
	kids kids
	more *indexedList[uint32, tsub] // keyed by client index: one per client; nil while at most one
}

// kids is a node's children: an open-addressing table (linear probing,
// backward-shift deletion) of node pointers, hashed by name, so that a
// child costs its slot (8 bytes at a load of 3/8 to 3/4) where a
// map[string]*tnode cost ~57 bytes per child (BENCHMARKS.md, issue #12).
type kids struct {
	slots []*tnode // nil or a power of two long; nil entries are empty
	n     int
}

// levelSeed keys the child tables' hash (filters are the clients' to
// choose, as ids are: see idSeed).
var levelSeed = maphash.MakeSeed()

func levelHash(name string) uint64 { return maphash.String(levelSeed, name) }

// get returns the child named name, or nil.
func (k *kids) get(name string) *tnode {
	if k.n == 0 {
		return nil
	}
	mask := len(k.slots) - 1
	for i := int(levelHash(name)) & mask; ; i = (i + 1) & mask {
		c := k.slots[i]
		if c == nil || c.name == name {
			return c
		}
	}
}

// add inserts c, whose name must not be in k.
func (k *kids) add(c *tnode) {
	if (k.n+1)*4 > len(k.slots)*3 {
		k.resize(max(2, 2*len(k.slots)))
	}
	k.put(c)
	k.n++
}

func (k *kids) put(c *tnode) {
	mask := len(k.slots) - 1
	i := int(levelHash(c.name)) & mask
	for k.slots[i] != nil {
		i = (i + 1) & mask
	}
	k.slots[i] = c
}

func (k *kids) resize(n int) {
	old := k.slots
	k.slots = make([]*tnode, n)
	for _, c := range old {
		if c != nil {
			k.put(c)
		}
	}
}

// remove deletes the child named name, if there is one, shifting later
// entries of its probe run back so that no tombstones are needed; a table
// a mass removal left at most 1/8 full shrinks by half.
func (k *kids) remove(name string) {
	if k.n == 0 {
		return
	}
	mask := len(k.slots) - 1
	i := int(levelHash(name)) & mask
	for ; k.slots[i] == nil || k.slots[i].name != name; i = (i + 1) & mask {
		if k.slots[i] == nil {
			return
		}
	}
	for j := (i + 1) & mask; ; j = (j + 1) & mask {
		c := k.slots[j]
		if c == nil {
			break
		}
		h := int(levelHash(c.name)) & mask // home slot of c
		// c may move to i unless its home lies cyclically in (i, j].
		if i <= j && i < h && h <= j || i > j && (i < h || h <= j) {
			continue
		}
		k.slots[i] = c
		i = j
	}
	k.slots[i] = nil
	k.n--
	switch {
	case k.n == 0:
		k.slots = nil
	case len(k.slots) > 16 && k.n*8 <= len(k.slots):
		k.resize(len(k.slots) / 2)
	}
}

// child returns n's child named name, or nil.
func (n *tnode) child(name string) *tnode {
	if n.x == nil {
		return nil
	}
	return n.x.kids.get(name)
}

// nkids is the number of n's children.
func (n *tnode) nkids() int {
	if n.x == nil {
		return 0
	}
	return n.x.kids.n
}

// ext returns n.x, making it.
func (n *tnode) ext() *tnodeExt {
	if n.x == nil {
		n.x = new(tnodeExt)
	}
	return n.x
}

// trim drops n.x once it holds nothing.
func (n *tnode) trim() {
	if n.x != nil && n.x.kids.n == 0 && n.x.more == nil {
		n.x = nil
	}
}

// nsubs is the number of subscriptions to n's filter.
func (n *tnode) nsubs() int {
	switch {
	case n.x != nil && n.x.more != nil:
		return n.x.more.len()
	case n.one.cl != nil:
		return 1
	}
	return 0
}

// appendSubs appends n's subscriptions to out.
func (n *tnode) appendSubs(out []tsub) []tsub {
	switch {
	case n.x != nil && n.x.more != nil:
		return append(out, n.x.more.items...)
	case n.one.cl != nil:
		return append(out, n.one)
	}
	return out
}

// put adds s, or replaces the subscription of s.cl.
func (n *tnode) put(s tsub) {
	switch {
	case n.x != nil && n.x.more != nil:
		more := n.x.more
		if i := more.find(s.cl.idx); i >= 0 {
			more.items[i] = s
		} else {
			more.add(s)
		}
	case n.one.cl == nil || n.one.cl.idx == s.cl.idx:
		n.one = s
	default:
		more := &indexedList[uint32, tsub]{}
		more.add(n.one)
		more.add(s)
		n.ext().more = more
		n.one = tsub{}
	}
}

// drop removes cl's subscription and reports whether there was one.
func (n *tnode) drop(cl *client) bool {
	if n.x == nil || n.x.more == nil {
		if n.one.cl != cl {
			return false
		}
		n.one = tsub{}
		return true
	}
	more := n.x.more
	i := more.find(cl.idx)
	if i < 0 || more.items[i].cl != cl {
		return false
	}
	more.remove(i)
	switch more.len() {
	case 0:
		n.x.more = nil
	case 1:
		n.one, n.x.more = more.items[0], nil
	}
	n.trim()
	return true
}

// topicTree holds the generic subscriptions and the retained messages.
// Profile traffic (u/, r/, g/) never passes through it; a filter whose first
// level is a wildcard matches neither `$` topics nor the profile topics
// u/, r/, g/ and p/ (PROTOCOL.md).
//
// Subscribing and unsubscribing cost O(levels of the filter): each node
// finds a client's subscription through indexedList. The retained messages
// live in their own trie (retained.go) under their own lock, so that a
// retained scan never holds up routing.
type topicTree struct {
	mu   sync.RWMutex // guards root and shares
	root tnode
	// shares are the shared subscriptions' groups by their whole
	// $share/<group>/<filter> (shared.go).
	shares map[string]*shareGroup

	rmu   sync.RWMutex // guards rroot, nretained, rbytes; lock order: client.mu, then rmu
	rroot rnode
	// nretained is the number of retained topics.
	nretained int
	// rbytes is what the retained messages hold (retainedSize of each);
	// acct, if set, receives every change of it (the server's store
	// total, Config.StoreMaxBytes). Both guarded by rmu.
	rbytes int64
	acct   *atomic.Int64
	// scans counts the retained scans started and not yet ended; while
	// any is active no child list is compacted (rkids).
	scans atomic.Int64
	// onSet, if set, is told every retained message set or deleted, under
	// rmu (the durable store logs it in the same critical section).
	onSet func(topic, payload, props []byte, qos byte)
}

func newTopicTree() *topicTree { return &topicTree{} }

// reservedTopic reports whether a filter starting with a wildcard must not
// match topic: `$` topics (MQTT 4.7.2) and the profile topics.
func reservedTopic[T ~string | ~[]byte](topic T) bool {
	if len(topic) == 0 {
		return false
	}
	if topic[0] == '$' {
		return true
	}
	if len(topic) >= 2 && topic[1] == '/' {
		switch topic[0] {
		case 'u', 'r', 'g', 'p':
			return true
		}
	}
	return len(topic) == 1 && (topic[0] == 'u' || topic[0] == 'r' || topic[0] == 'g' || topic[0] == 'p')
}

// matchFilter is MQTT topic matching plus the profile rule.
func matchFilter(filter, topic string) bool {
	if len(filter) > 0 && (filter[0] == '+' || filter[0] == '#') && reservedTopic(topic) {
		return false
	}
	return mqtt.MatchTopic(filter, topic)
}

// subscribe adds or updates cl's subscription to filter; cl is locked.
//
// qos may carry v5 option bits above the QoS (mqtt.SubNoLocal,
// mqtt.SubRetainAsPublished): they go to tsub.opts.
func (t *topicTree) subscribe(filter string, cl *client, qos byte) { t.subscribeID(filter, cl, qos, 0) }

// subscribeID is subscribe with a v5 Subscription Identifier.
func (t *topicTree) subscribeID(filter string, cl *client, qos byte, id uint32) {
	opts := qos & (mqtt.SubNoLocal | mqtt.SubRetainAsPublished)
	qos &= 3
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, f, ok := mqtt.SplitShared(filter); ok {
		t.subscribeShared(filter, f, cl, qos, opts, id)
		return
	}
	n := &t.root
	for level := range splitLevels(filter) {
		c := n.child(level)
		if c == nil {
			c = &tnode{name: strings.Clone(level)}
			n.ext().kids.add(c)
		}
		n = c
	}
	n.put(tsub{cl: cl, gen: cl.gen, qos: qos, opts: opts, id: id})
}

// unsubscribe removes cl's subscription to filter and prunes empty nodes.
// It reports whether there was one.
func (t *topicTree) unsubscribe(filter string, cl *client) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, _, ok := mqtt.SplitShared(filter); ok {
		return t.unsubscribeShared(filter, cl)
	}
	var path [32]*tnode
	var names [32]string
	depth := 0
	n := &t.root
	for level := range splitLevels(filter) {
		c := n.child(level)
		if c == nil {
			return false
		}
		if depth < len(path) {
			path[depth], names[depth] = n, level
		}
		depth++
		n = c
	}
	if !n.drop(cl) {
		return false
	}
	if depth > len(path) {
		return true
	}
	for d := depth - 1; d >= 0; d-- {
		child := path[d].child(names[d])
		if child.nsubs() > 0 || child.nkids() > 0 {
			break
		}
		path[d].x.kids.remove(names[d])
		path[d].trim()
	}
	return true
}

func splitLevels(s string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for {
			i := indexByte(s, '/')
			if i < 0 {
				yield(s)
				return
			}
			if !yield(s[:i]) {
				return
			}
			s = s[i+1:]
		}
	}
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

// match appends the subscriptions matching topic to out, one per client
// with the highest QoS among its matching filters, and returns out.
func (t *topicTree) match(topic []byte, out []tsub) []tsub {
	out = out[:0]
	t.mu.RLock()
	out = matchNode(&t.root, topic, !reservedTopic(topic), out)
	if len(t.shares) > 0 {
		out = t.matchShared(topic, out)
	}
	t.mu.RUnlock()
	if len(out) > 1 {
		slices.SortFunc(out, func(a, b tsub) int { return int(a.cl.idx) - int(b.cl.idx) })
		w := 0
		for r := 0; r < len(out); r++ {
			if w > 0 && out[w-1].cl == out[r].cl {
				out[w-1].qos = max(out[w-1].qos, out[r].qos)
				// Overlapping v5 subscriptions: No Local and Retain
				// As Published hold only if every one says so.
				out[w-1].opts &= out[r].opts
				if out[w-1].id == 0 {
					out[w-1].id = out[r].id // one identifier per copy (see v5.go)
				}
				continue
			}
			out[w] = out[r]
			w++
		}
		clear(out[w:])
		out = out[:w]
	}
	return out
}

// matchNode matches the remaining levels topic below n; wild says whether
// wildcard children may match at this level.
func matchNode(n *tnode, topic []byte, wild bool, out []tsub) []tsub {
	if n.nkids() == 0 {
		return out
	}
	k := &n.x.kids
	if wild {
		if h := k.get("#"); h != nil {
			out = h.appendSubs(out)
		}
	}
	level, rest, more := bytes.Cut(topic, []byte{'/'})
	// The lookup keeps no reference to level.
	if c := k.get(unsafe.String(unsafe.SliceData(level), len(level))); c != nil {
		out = matchChild(c, rest, more, out)
	}
	if wild {
		if c := k.get("+"); c != nil {
			out = matchChild(c, rest, more, out)
		}
	}
	return out
}

func matchChild(c *tnode, rest []byte, more bool, out []tsub) []tsub {
	if more {
		return matchNode(c, rest, true, out)
	}
	out = c.appendSubs(out)
	if h := c.child("#"); h != nil { // "a/#" matches "a"
		out = h.appendSubs(out)
	}
	return out
}

func hasWildcard[T ~string | ~[]byte](f T) bool {
	for i := 0; i < len(f); i++ {
		if f[i] == '+' || f[i] == '#' {
			return true
		}
	}
	return false
}

// smallList is the length up to which an indexedList is searched by
// scanning: comparing eight keys costs about one hash lookup, and a short
// list (the common case: a filter with one subscriber, a client with a few
// filters) pays for no map.
const smallList = 8

type keyed[K comparable] interface{ key() K }

// indexedList is a set of items with distinct keys in a slice, searched by
// scanning while it holds at most smallList items and through a map from
// key to position beyond that: find, add and remove are O(1) expected at
// any length. remove moves the last item into the hole, so order is not
// kept. The zero value is an empty list that holds no memory.
type indexedList[K comparable, V keyed[K]] struct {
	items []V
	pos   map[K]int32 // key -> index in items; nil while len(items) <= smallList
}

func (l *indexedList[K, V]) len() int { return len(l.items) }

// find returns the index of the item with key k, or -1.
func (l *indexedList[K, V]) find(k K) int {
	if l.pos != nil {
		if i, ok := l.pos[k]; ok {
			return int(i)
		}
		return -1
	}
	for i := range l.items {
		if l.items[i].key() == k {
			return i
		}
	}
	return -1
}

// add appends v, whose key must not be in the list.
func (l *indexedList[K, V]) add(v V) {
	l.items = append(l.items, v)
	switch {
	case l.pos != nil:
		l.pos[v.key()] = int32(len(l.items) - 1)
	case len(l.items) > smallList:
		l.pos = make(map[K]int32, 2*len(l.items))
		for i := range l.items {
			l.pos[l.items[i].key()] = int32(i)
		}
	}
}

// remove deletes the item at index i.
func (l *indexedList[K, V]) remove(i int) {
	last := len(l.items) - 1
	if l.pos != nil {
		delete(l.pos, l.items[i].key())
		if i != last {
			l.pos[l.items[last].key()] = int32(i)
		}
	}
	l.items[i] = l.items[last]
	var zero V
	l.items[last] = zero
	l.items = l.items[:last]
	switch {
	case last == 0:
		l.items, l.pos = nil, nil
	case l.pos != nil && last <= smallList/2:
		l.pos = nil
	}
	if cap(l.items) >= 64 && 4*len(l.items) <= cap(l.items) {
		l.items = slices.Clone(l.items) // give back a mass removal's array
	}
}
