package edge

import (
	"bytes"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/edgedhq/edged/edge/mqtt"
)

// tsub is one subscription in the topic tree.
type tsub struct {
	cl  *client
	gen uint32 // cl.gen when subscribed: a mismatch means the record was reused
	qos byte
}

type tnode struct {
	children map[string]*tnode
	subs     []tsub
}

type retainedMsg struct {
	payload []byte // a pooled buffer (getBuf), so its held size is known
	qos     byte
}

// retainedOverhead is what a retained topic holds beyond its topic string
// and payload buffer: the map slot (string header, retainedMsg) and the
// map's spare capacity.
const retainedOverhead = 96

func retainedSize(topic string, m retainedMsg) int64 {
	return int64(len(topic) + bufCap(cap(m.payload)) + retainedOverhead)
}

// topicTree holds the generic subscriptions and the retained messages.
// Profile traffic (u/, r/, g/) never passes through it; a filter whose first
// level is a wildcard matches neither `$` topics nor the profile topics
// u/, r/, g/ and p/ (PROTOCOL.md).
type topicTree struct {
	mu       sync.RWMutex // guards root, retained, bytes
	root     tnode
	retained map[string]retainedMsg
	bytes    int64         // held by retained (retainedSize of each)
	acct     *atomic.Int64 // if set, receives every change of bytes (the server's store total)
}

func newTopicTree() *topicTree {
	return &topicTree{retained: make(map[string]retainedMsg)}
}

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
func (t *topicTree) subscribe(filter string, cl *client, qos byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := &t.root
	for level := range splitLevels(filter) {
		if n.children == nil {
			n.children = make(map[string]*tnode)
		}
		c := n.children[level]
		if c == nil {
			c = &tnode{}
			n.children[level] = c
		}
		n = c
	}
	for i := range n.subs {
		if n.subs[i].cl == cl {
			n.subs[i].qos = qos
			return
		}
	}
	n.subs = append(n.subs, tsub{cl: cl, gen: cl.gen, qos: qos})
}

// unsubscribe removes cl's subscription to filter and prunes empty nodes.
// It reports whether there was one.
func (t *topicTree) unsubscribe(filter string, cl *client) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	var path [32]*tnode
	var names [32]string
	depth := 0
	n := &t.root
	for level := range splitLevels(filter) {
		c := n.children[level]
		if c == nil {
			return false
		}
		if depth < len(path) {
			path[depth], names[depth] = n, level
		}
		depth++
		n = c
	}
	i := slices.IndexFunc(n.subs, func(s tsub) bool { return s.cl == cl })
	if i < 0 {
		return false
	}
	n.subs = slices.Delete(n.subs, i, i+1)
	if len(n.subs) == 0 {
		n.subs = nil
	}
	if depth > len(path) {
		return true
	}
	for d := depth - 1; d >= 0; d-- {
		child := path[d].children[names[d]]
		if len(child.subs) > 0 || len(child.children) > 0 {
			break
		}
		delete(path[d].children, names[d])
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
	t.mu.RUnlock()
	if len(out) > 1 {
		slices.SortFunc(out, func(a, b tsub) int { return int(a.cl.idx) - int(b.cl.idx) })
		w := 0
		for r := 0; r < len(out); r++ {
			if w > 0 && out[w-1].cl == out[r].cl {
				out[w-1].qos = max(out[w-1].qos, out[r].qos)
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
	if n.children == nil {
		return out
	}
	if wild {
		if h := n.children["#"]; h != nil {
			out = append(out, h.subs...)
		}
	}
	level, rest, more := bytes.Cut(topic, []byte{'/'})
	if c := n.children[string(level)]; c != nil {
		out = matchChild(c, rest, more, out)
	}
	if wild {
		if c := n.children["+"]; c != nil {
			out = matchChild(c, rest, more, out)
		}
	}
	return out
}

func matchChild(c *tnode, rest []byte, more bool, out []tsub) []tsub {
	if more {
		return matchNode(c, rest, true, out)
	}
	out = append(out, c.subs...)
	if h := c.children["#"]; h != nil { // "a/#" matches "a"
		out = append(out, h.subs...)
	}
	return out
}

// setRetained stores (or, for an empty payload, deletes) the retained message
// of topic; payload is copied. It reports false if the message is not
// retained: topic is new and the store holds max topics, or the message
// would take the retained store's bytes held over maxBytes, or the server's
// store total (acct) over storeLimit. A refused replacement keeps the old
// message.
func (t *topicTree) setRetained(topic []byte, payload []byte, qos byte, max int, maxBytes, storeLimit int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	old, had := t.retained[string(topic)]
	var oldSize int64
	if had {
		oldSize = retainedSize(string(topic), old)
	}
	if len(payload) == 0 {
		if had {
			delete(t.retained, string(topic))
			t.account(-oldSize)
			b := old.payload
			putBuf(&b)
		}
		return true
	}
	if !had && len(t.retained) >= max {
		return false
	}
	add := int64(len(topic)+bufCap(len(payload))+retainedOverhead) - oldSize
	if add > 0 && (t.bytes+add > maxBytes || t.acct != nil && t.acct.Load()+add > storeLimit) {
		return false
	}
	buf := getBuf(len(payload))
	*buf = append(*buf, payload...)
	if had {
		b := old.payload
		putBuf(&b)
	}
	m := retainedMsg{payload: *buf, qos: qos}
	t.retained[string(topic)] = m
	t.account(retainedSize(string(topic), m) - oldSize)
	return true
}

func (t *topicTree) account(d int64) {
	t.bytes += d
	if t.acct != nil {
		t.acct.Add(d)
	}
}

// retainedFor calls fn for each retained message matching filter. fn runs
// under the tree's read lock and must not call back into the tree.
func (t *topicTree) retainedFor(filter string, fn func(topic string, m retainedMsg)) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if !hasWildcard(filter) {
		if m, ok := t.retained[filter]; ok {
			fn(filter, m)
		}
		return
	}
	for topic, m := range t.retained {
		if matchFilter(filter, topic) {
			fn(topic, m)
		}
	}
}

func hasWildcard(f string) bool {
	for i := 0; i < len(f); i++ {
		if f[i] == '+' || f[i] == '#' {
			return true
		}
	}
	return false
}
