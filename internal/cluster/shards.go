package cluster

import (
	"encoding/binary"
	"strconv"
	"strings"
)

// The directory of users is packed into dirShards keys of the directory
// bucket, "s0" to "s4095": a user's shard is the FNV-1a hash of its id mod
// dirShards, and a shard's value is its users' entries, each
//
//	[u16 big-endian id length][id][u8 node length][node]
//
// in the order they were last claimed. Why packed: JetStream keeps per-key
// state in memory on each replica of the bucket (the per-subject index and
// per-block subject state), ~197 B per key, against ~21 B per user with the
// users of 4,096 keys (BenchmarkDirectoryBucketBytes); and every node holds
// the directory as the bucket's values themselves (Node.shards), ~18 B per
// user with 10-byte ids and 5-byte node names, looked up by a scan of one
// shard (at 2M users, ~500 entries). A claim is a compare-and-set of its
// shard's value (Node.claimPass), so concurrent claims on other nodes
// retry, never overwrite each other.
const dirShards = 4096

// A shard is one key's value as this node last saw it: rev is the KV
// revision (the stream sequence of the value; 0: the key does not exist),
// val the packed entries (never changed in place: a new value replaces it).
type shard struct {
	rev uint64
	val []byte
}

// shardOf returns user's shard (FNV-1a, 32 bits).
func shardOf(user []byte) int {
	h := uint32(2166136261)
	for _, c := range user {
		h ^= uint32(c)
		h *= 16777619
	}
	return int(h % dirShards)
}

func shardKey(s int) string { return "s" + strconv.Itoa(s) }

// parseShardKey returns the shard a key names.
func parseShardKey(k string) (int, bool) {
	d, ok := strings.CutPrefix(k, "s")
	if !ok || d == "" || len(d) > 1 && d[0] == '0' {
		return 0, false
	}
	s, err := strconv.Atoi(d)
	if err != nil || s < 0 || s >= dirShards {
		return 0, false
	}
	return s, true
}

// nextEntry splits the first entry off val; ok is false at the end or if
// val is malformed (truncated: the rest is ignored).
func nextEntry(val []byte) (user, node, rest []byte, ok bool) {
	if len(val) < 2 {
		return nil, nil, nil, false
	}
	ul := int(binary.BigEndian.Uint16(val))
	if len(val) < 2+ul+1 {
		return nil, nil, nil, false
	}
	user = val[2 : 2+ul]
	nl := int(val[2+ul])
	val = val[3+ul:]
	if len(val) < nl {
		return nil, nil, nil, false
	}
	return user, val[:nl], val[nl:], true
}

// lookupPacked returns user's node in a shard's value.
func lookupPacked(val, user []byte) ([]byte, bool) {
	for {
		u, nd, rest, ok := nextEntry(val)
		if !ok {
			return nil, false
		}
		if string(u) == string(user) {
			return nd, true
		}
		val = rest
	}
}

// eachPacked calls f for each entry of a shard's value.
func eachPacked(val []byte, f func(user, node []byte)) {
	for {
		u, nd, rest, ok := nextEntry(val)
		if !ok {
			return
		}
		f(u, nd)
		val = rest
	}
}

// countPacked is the number of entries in a shard's value.
func countPacked(val []byte) int {
	n := 0
	eachPacked(val, func(_, _ []byte) { n++ })
	return n
}

// setPacked returns a new value: val with user's entry (if any) dropped and
// user on node appended. val is not changed. user is at most 65,535 bytes
// and node at most 255 (a valid node name is at most 64).
func setPacked(val []byte, user, node string) []byte {
	out := make([]byte, 0, len(val)+3+len(user)+len(node))
	for v := val; ; {
		u, _, rest, ok := nextEntry(v)
		if !ok {
			break
		}
		if string(u) != user {
			out = append(out, v[:len(v)-len(rest)]...)
		}
		v = rest
	}
	return appendEntry(out, user, node)
}

func appendEntry(b []byte, user, node string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(user)))
	b = append(b, user...)
	b = append(b, byte(len(node)))
	return append(b, node...)
}
