package edge

import (
	"sync/atomic"

	"github.com/edgedhq/edged/edge/mqtt"
)

// Shared subscriptions (MQTT 5.0 section 4.8.2): a filter
// $share/<group>/<filter> makes the client a member of the group, and each
// message matching <filter> goes to one member of each group, in turn
// (round robin over the members, skipping offline ones while any member is
// connected). The topic tree keeps the groups beside its trie, under its
// mutex; subscribe/unsubscribe/match route $share/ filters here, so the
// session, persistence and handoff code treat them as any other filter.
// Matching walks the groups linearly: fleets have few of them.

// shareGroup is one $share/<group>/<filter>.
type shareGroup struct {
	filter  string                    // <filter>
	members indexedList[uint32, tsub] // by client index
	next    atomic.Uint32             // round-robin cursor (advanced under the read lock)
}

// subscribeShared adds cl to the group of the whole filter full; t.mu is
// held for writing.
func (t *topicTree) subscribeShared(full, filter string, cl *client, qos, opts byte, id uint32) {
	if t.shares == nil {
		t.shares = make(map[string]*shareGroup)
	}
	g := t.shares[full]
	if g == nil {
		g = &shareGroup{filter: filter}
		t.shares[full] = g
	}
	ts := tsub{cl: cl, gen: cl.gen, qos: qos, opts: opts &^ mqtt.SubNoLocal, id: id} // 3.8.3.1: no No Local
	if i := g.members.find(cl.idx); i >= 0 {
		g.members.items[i] = ts
		return
	}
	g.members.add(ts)
}

// unsubscribeShared removes cl from the group of full; t.mu is held for
// writing. It reports whether cl was a member.
func (t *topicTree) unsubscribeShared(full string, cl *client) bool {
	g := t.shares[full]
	if g == nil {
		return false
	}
	i := g.members.find(cl.idx)
	if i < 0 || g.members.items[i].cl != cl {
		return false
	}
	g.members.remove(i)
	if g.members.len() == 0 {
		delete(t.shares, full)
	}
	return true
}

// matchShared appends one member of every group whose filter matches
// topic; t.mu is held for reading.
func (t *topicTree) matchShared(topic []byte, out []tsub) []tsub {
	for _, g := range t.shares {
		f := g.filter
		if (f[0] == '+' || f[0] == '#') && reservedTopic(topic) || !mqtt.MatchTopic(f, topic) {
			continue
		}
		n := uint32(g.members.len())
		start := g.next.Add(1)
		pick := g.members.items[start%n]
		for k := range n { // the next connected member, if any
			m := g.members.items[(start+k)%n]
			if m.cl.owner.Load() != 0 {
				pick = m
				g.next.Store(start + k)
				break
			}
		}
		out = append(out, pick)
	}
	return out
}
