// Package cluster is edged's cluster transport over NATS (docs/CLUSTER.md):
// an embedded nats-server whose routes join the other nodes (or an existing
// NATS cluster), core NATS request/reply for cross-node batches (the fast
// path: the destination stores a batch, then replies) with a JetStream
// stream, one subject per node, as the fallback, a KV bucket for the
// directory of users (packed into 4,096 keys: shards.go) and one for group
// membership, and core NATS for broadcast generic publishes.
//
// Lifecycle: Start, then edge.Server.Start calls Run (through
// edge.Config.Cluster); Close after the Server closed. A Node is safe for
// concurrent use.
package cluster

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgedhq/edged/edge"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Sentinel errors.
var (
	// ErrBadOptions: the options are inconsistent.
	ErrBadOptions = errors.New("bad cluster options")
	// ErrNotReady: the NATS cluster did not form (JetStream quorum) in time.
	ErrNotReady = errors.New("cluster not ready")
)

// Names in NATS.
const (
	streamName  = "EDGED"
	nodeSubject = "edged.node."  // + node name: batches for that node (the stream)
	fastSubject = "edged.fast."  // + node name: batches for that node (core NATS requests)
	replyPrefix = "edged.reply." // + node name + boot + request id: their replies
	pubSubject  = "edged.pub."   // + node name: broadcast generic publishes
	dirBucket   = "edged_dirs"   // packed shards (shards.go); "edged_dir", a key per user, before
	groupBucket = "edged_groups"
	clusterName = "edged"
)

// Defaults.
const (
	// DefaultPublishTimeout bounds a JetStream publish: past it the held
	// PUBACKs of the batch are refused (a partition, no quorum).
	DefaultPublishTimeout = 2 * time.Second
	// readyTimeout is how long Start and Run wait for the JetStream
	// cluster to elect a leader and take the stream and buckets.
	readyTimeout = 60 * time.Second
	// fetchBatch is how many batches the consumer takes per fetch (one
	// WAL commit each): bounded so that an ack is never far behind.
	fetchBatch = 64
	// claimBatch is how many shard writes (each the claims of one shard)
	// are in flight at once.
	claimBatch = 256
	// conflictRetry is how soon claims that lost a compare-and-set go
	// again (by then the watch has brought the value that won).
	conflictRetry = 20 * time.Millisecond
	// DefaultFastTimeout bounds a fast-path request: past it the batch
	// goes to the stream (a destination that is slow, partitioned, or
	// whose reply was lost; a dead one answers at once, no responders).
	DefaultFastTimeout = time.Second
	// fastQueue is the fast-path requests a node takes before NATS drops
	// them (a slow consumer: they time out and go to the stream). Each
	// sender loop has at most 2 in flight per destination (edge's
	// maxFlights): room for 2,048 sender loops across the other nodes.
	fastQueue = 4096
	// maxPayload is the embedded server's max_payload: room for a batch
	// (edge seals them at 512 KiB) holding one message of edged's largest
	// packet size but one (--max-packet-size up to 64 MiB: bigger ones
	// cannot cross nodes; their PUBLISH is not acknowledged).
	maxPayload = 8 << 20
)

// Options configure a Node.
type Options struct {
	// Node is this node's name (required): [A-Za-z0-9_-], 1-64.
	Node string
	// Listen is the route listen address (host:port) of the embedded
	// server; Peers are the other nodes' route addresses. Ignored with URL.
	Listen string
	Peers  []string
	// URL, if set, is an existing NATS cluster (with JetStream) to use
	// instead of an embedded server.
	URL string
	// Size is the number of nodes, for the replica count min(3, Size)
	// (default len(Peers)+1).
	Size int
	// StoreDir is the embedded JetStream's directory (required without URL).
	StoreDir string
	// PublishTimeout bounds a JetStream publish (default 2 s).
	PublishTimeout time.Duration
	// FastTimeout bounds a fast-path request (default 1 s).
	FastTimeout time.Duration
	// NoFast sends every batch to the stream (no fast path).
	NoFast bool
	// Logger gets start-up lines and failures (default slog.Default()).
	Logger *slog.Logger
	// NATSLog turns the embedded server's own log on (to stderr).
	NATSLog bool
}

// Node is one node's connection to the cluster; it implements edge.Cluster.
type Node struct {
	o   Options
	srv *server.Server // nil with Options.URL
	nc  *nats.Conn
	js  jetstream.JetStream
	dir jetstream.KeyValue
	grp jetstream.KeyValue

	// mu guards the directory as this node holds it (shards.go), from the
	// watch and from this node's own claims: each shard's value and
	// revision, users (the entries in them) and names (the node names in
	// them, interned: Home returns them without allocating).
	mu     sync.RWMutex
	shards [dirShards]shard
	users  int
	names  map[string]string
	// moved is Run's Moved hook (nil before Run).
	moved func(user, node string)
	// conflicts counts the claims that lost a compare-and-set of their
	// shard to another node's write and were retried.
	conflicts atomic.Uint64

	// claims are the users to claim in the directory (Claim), written by
	// the claimer goroutine.
	cmu    sync.Mutex
	claims []string
	cwake  chan struct{}

	// boot names this start of the node in its links.
	boot string
	// lmu guards links and reqs: the sender side of the batches.
	lmu     sync.Mutex
	links   map[linkKey]*link
	reqs    map[uint64]*request // fast-path requests awaiting their reply, by id
	nextReq uint64
	rsub    *nats.Subscription // replies
	fsub    *nats.Subscription // fast-path requests for this node

	// Fault injection for the tests (package cluster): dropReplies
	// replies are left unsent after the batches were stored, holdStream
	// (if not nil) holds the consumer until it is closed, toStream
	// batches skip the fast path.
	dropReplies atomic.Int64
	holdStream  chan struct{}
	toStream    atomic.Int64
	failStream  atomic.Bool // publishes to the stream fail (no quorum)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	sub    *nats.Subscription
}

// A link is the batches of one lane (an edge loop) to one destination, in
// order: Seq counts them from 1. Its id names this node, its boot and
// the lane, so that a restart starts a new link.
type linkKey struct {
	dest string
	lane int
}

type link struct {
	key  linkKey
	id   string
	seq  uint64
	pend []*request // sent, not yet stored or in the stream, in Seq order
	// failed: Seqs refused on both paths (done with an error: their
	// PUBACKs never go), down to the last that succeeded (good). A
	// batch names the nearest earlier Seq not among them (prevHeader):
	// the destination does not wait for those.
	failed []seqRun // sorted, disjoint, not adjacent; none below good
	good   uint64   // the highest Seq stored or in the stream
}

// seqRun is the Seqs lo..hi.
type seqRun struct{ lo, hi uint64 }

// A request is one batch on its link: sent over the fast path, then
// stored there (fastDone) or marked for the stream (fallback), published
// to it in Seq order once every batch before it is stored or published.
type request struct {
	l        *link
	seq      uint64
	data     []byte
	done     func(error)
	timer    *time.Timer
	id       uint64
	prev     uint64 // the Seq it follows (Seq-1 unless those failed)
	fastDone bool
	fallback bool
}

var _ edge.Cluster = (*Node)(nil)

func validName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Start starts the embedded server (unless Options.URL), connects to it and
// makes the stream and buckets (waiting for the cluster to form). On error
// nothing is left running.
func Start(o Options) (n *Node, err error) {
	if !validName(o.Node) {
		return nil, fmt.Errorf("check node name %q: %w", o.Node, ErrBadOptions)
	}
	if o.URL == "" && (o.Listen == "" || o.StoreDir == "") {
		return nil, fmt.Errorf("check options: an embedded server needs a listen address and a store directory: %w", ErrBadOptions)
	}
	if o.Size == 0 {
		o.Size = len(o.Peers) + 1
	}
	if o.PublishTimeout == 0 {
		o.PublishTimeout = DefaultPublishTimeout
	}
	if o.FastTimeout == 0 {
		o.FastTimeout = DefaultFastTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	n = &Node{o: o, names: make(map[string]string), cwake: make(chan struct{}, 1),
		boot: strconv.FormatInt(time.Now().UnixNano(), 36), links: make(map[linkKey]*link), reqs: make(map[uint64]*request)}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			n.Close()
			n = nil
		}
	}()
	var copts []nats.Option
	copts = append(copts, nats.Name("edged-"+o.Node), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	url := o.URL
	if o.URL == "" {
		if err := n.startServer(); err != nil {
			return n, err
		}
		copts = append(copts, nats.InProcessServer(n.srv))
	}
	if n.nc, err = nats.Connect(url, copts...); err != nil {
		return n, fmt.Errorf("connect nats: %w", err)
	}
	if n.js, err = jetstream.New(n.nc, jetstream.WithPublishAsyncTimeout(o.PublishTimeout), jetstream.WithPublishAsyncMaxPending(4096)); err != nil {
		return n, fmt.Errorf("open jetstream: %w", err)
	}
	if err := n.setup(); err != nil {
		return n, err
	}
	if n.rsub, err = n.nc.Subscribe(n.replySubject()+"*", n.reply); err != nil {
		return n, fmt.Errorf("subscribe to replies: %w", err)
	}
	return n, nil
}

func (n *Node) replySubject() string { return replyPrefix + n.o.Node + "." + n.boot + "." }

func (n *Node) replicas() int { return min(3, max(1, n.o.Size)) }

func (n *Node) startServer() error {
	host, port, err := net.SplitHostPort(n.o.Listen)
	if err != nil {
		return fmt.Errorf("parse cluster listen %q: %w: %w", n.o.Listen, ErrBadOptions, err)
	}
	var p int
	if _, err := fmt.Sscan(port, &p); err != nil {
		return fmt.Errorf("parse cluster port %q: %w", port, ErrBadOptions)
	}
	var routes []*url.URL
	for _, peer := range n.o.Peers {
		if peer == n.o.Listen {
			continue
		}
		u, err := url.Parse("nats-route://" + peer)
		if err != nil {
			return fmt.Errorf("parse cluster peer %q: %w: %w", peer, ErrBadOptions, err)
		}
		routes = append(routes, u)
	}
	if err := os.MkdirAll(n.o.StoreDir, 0o700); err != nil {
		return fmt.Errorf("make jetstream dir: %w", err)
	}
	opts := &server.Options{
		ServerName: n.o.Node,
		// The node connects in process; the client port is loopback on
		// a random port (with DontListen the server never starts its
		// routes: StartRouting waits for the client accept loop).
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		JetStream:  true,
		StoreDir:   n.o.StoreDir,
		MaxPayload: maxPayload,
		NoSigs:     true,
		NoLog:      !n.o.NATSLog,
		// Routes run on the private network: no S2 compression (it
		// showed in the profiles of the cross-node benchmark).
		Cluster: server.ClusterOpts{Name: clusterName, Host: host, Port: p,
			Compression: server.CompressionOpts{Mode: server.CompressionOff}},
		Routes: routes,
	}
	if len(routes) == 0 && n.o.Size <= 1 {
		opts.Cluster = server.ClusterOpts{} // one node: no routes, plain JetStream
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("create nats server: %w", err)
	}
	if n.o.NATSLog {
		srv.ConfigureLogger()
	}
	n.srv = srv
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		return fmt.Errorf("start nats server: not ready after 30 s: %w", ErrNotReady)
	}
	return nil
}

// setup makes the stream and the buckets, retrying while the JetStream
// cluster elects its leaders.
func (n *Node) setup() error {
	r := n.replicas()
	deadline := time.Now().Add(readyTimeout)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
		last = n.setupOnce(ctx, r)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-n.ctx.Done():
			return n.ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("set up jetstream (replicas %d): %w: %w", r, ErrNotReady, last)
}

func (n *Node) setupOnce(ctx context.Context, r int) error {
	_, err := n.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: streamName, Subjects: []string{nodeSubject + ">"}, Replicas: r,
		Storage: jetstream.FileStorage, Retention: jetstream.WorkQueuePolicy,
		Duplicates: 2 * time.Minute,
	})
	if err != nil {
		return fmt.Errorf("create stream: %w", err)
	}
	if n.dir, err = n.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: dirBucket, Replicas: r, History: 1}); err != nil {
		return fmt.Errorf("create directory bucket: %w", err)
	}
	if n.grp, err = n.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: groupBucket, Replicas: r, History: 1}); err != nil {
		return fmt.Errorf("create group bucket: %w", err)
	}
	return nil
}

// key encodes a user or group name as a KV key token (user ids may hold
// '.', the KV token separator).
func key(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func unkey(k string) (string, bool) {
	b, err := base64.RawURLEncoding.DecodeString(k)
	return string(b), err == nil
}

// Node implements edge.Cluster.
func (n *Node) Node() string { return n.o.Node }

// Home implements edge.Cluster: a scan of user's shard.
func (n *Node) Home(user []byte) (string, bool) {
	s := shardOf(user)
	n.mu.RLock()
	nd, ok := lookupPacked(n.shards[s].val, user)
	var name string
	if ok {
		name, ok = n.names[string(nd)]
	}
	n.mu.RUnlock()
	return name, ok
}

// A move is a user the directory now places on node.
type move struct{ user, node string }

// setShard records revision rev of shard s's value and calls the Moved hook
// for each user it places on another node than before (every user, the
// first time); it returns those moves. An older or the same revision is
// ignored: this node's own claims are recorded as they succeed, before
// the watch brings them back.
func (n *Node) setShard(s int, rev uint64, val []byte) []move {
	val = validPrefix(val)
	for {
		n.mu.RLock()
		cur, moved := n.shards[s], n.moved
		n.mu.RUnlock()
		if rev <= cur.rev {
			return nil
		}
		// Outside the lock (values are never changed in place): Home
		// on the loops waits only for the swap.
		moves, delta := diffShard(cur.val, val)
		n.mu.Lock()
		if n.shards[s].rev != cur.rev { // another value got in: diff against it
			n.mu.Unlock()
			continue
		}
		for i := range moves {
			if name, ok := n.names[moves[i].node]; ok {
				moves[i].node = name
			} else {
				n.names[moves[i].node] = moves[i].node
			}
		}
		n.shards[s] = shard{rev, val}
		n.users += delta
		n.mu.Unlock()
		if moved != nil {
			for _, m := range moves {
				moved(m.user, m.node)
			}
		}
		return moves
	}
}

// validPrefix is val up to its first malformed entry or node name that is
// not valid (a value not written by a node: what follows is ignored, and
// dropped by the next claim on the shard).
func validPrefix(val []byte) []byte {
	for v := val; ; {
		_, nd, rest, ok := nextEntry(v)
		if !ok || !validName(string(nd)) {
			return val[:len(val)-len(v)]
		}
		v = rest
	}
}

// diffShard returns the users val places on another node than old does
// (or old does not hold), and its entry count less old's. A user twice in
// a value (not written by a node) counts by its first entry, as in Home.
func diffShard(old, val []byte) (moves []move, delta int) {
	var before map[string][]byte // old's entries, if there are many
	if len(old) > 1024 {
		before = make(map[string][]byte)
		eachPacked(old, func(u, nd []byte) {
			if _, ok := before[string(u)]; !ok {
				before[string(u)] = nd
			}
		})
	}
	eachPacked(val, func(u, nd []byte) {
		delta++
		var was []byte
		var ok bool
		if before != nil {
			was, ok = before[string(u)]
		} else {
			was, ok = lookupPacked(old, u)
		}
		if !ok || string(was) != string(nd) {
			moves = append(moves, move{string(u), string(nd)})
		}
	})
	return moves, delta - countPacked(old)
}

// Users implements edge.Cluster.
func (n *Node) Users() int {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.users
}

// Claim implements edge.Cluster: the claimer goroutine writes it.
func (n *Node) Claim(user string) {
	if node, ok := n.Home([]byte(user)); ok && node == n.o.Node {
		return
	}
	if len(user) > 1<<16-1 { // an entry's length (an MQTT client id is shorter)
		n.o.Logger.Error("cluster: user id too long for the directory", "len", len(user))
		return
	}
	n.cmu.Lock()
	n.claims = append(n.claims, user)
	n.cmu.Unlock()
	select {
	case n.cwake <- struct{}{}:
	default:
	}
}

// claimer writes the queued claims: those that lost a compare-and-set go
// again after conflictRetry, those that failed otherwise (no quorum) every
// 500 ms.
func (n *Node) claimer() {
	defer n.wg.Done()
	var retry []string
	lost := make(map[int]uint64) // shards whose write lost, and the revision it expected
	wait := 500 * time.Millisecond
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.cwake:
		case <-time.After(wait):
		}
		n.cmu.Lock()
		todo := append(retry, n.claims...)
		n.claims = nil
		n.cmu.Unlock()
		retry = n.claimPass(todo, lost)
		wait = 500 * time.Millisecond
		if len(lost) > 0 {
			wait = conflictRetry
		}
	}
}

// claimPass writes todo's claims, one compare-and-set per shard (its
// value as this node holds it with todo's users of that shard placed
// here, expecting the revision it holds), claimBatch shards in flight at
// once, and returns the users to try again. A write that lost to a
// concurrent one is not an error: its shard goes in lost, and the next
// pass reads the shard from the bucket first if the watch has not brought
// a newer value by then (it may be busy in a Moved hook, or gone).
func (n *Node) claimPass(todo []string, lost map[int]uint64) (retry []string) {
	by := make(map[int][]string)
	var order []int
	for _, u := range todo {
		s := shardOf([]byte(u))
		if by[s] == nil {
			order = append(order, s)
		}
		by[s] = append(by[s], u)
	}
	type write struct {
		s   int
		rev uint64 // expected
		val []byte
		f   jetstream.PubAckFuture
	}
	for len(order) > 0 {
		k := min(len(order), claimBatch)
		chunk := order[:k]
		order = order[k:]
		writes := make([]write, 0, k)
		var err error
		sent := 0
		for _, s := range chunk {
			n.mu.RLock()
			cur := n.shards[s]
			n.mu.RUnlock()
			if at, ok := lost[s]; ok {
				delete(lost, s)
				if cur.rev == at {
					n.refresh(s)
					n.mu.RLock()
					cur = n.shards[s]
					n.mu.RUnlock()
				}
			}
			val, changed := cur.val, false
			for _, u := range by[s] {
				if nd, ok := lookupPacked(val, []byte(u)); ok && string(nd) == n.o.Node {
					continue
				}
				val, changed = setPacked(val, u, n.o.Node), true
			}
			sent++
			if !changed {
				continue
			}
			var f jetstream.PubAckFuture
			if f, err = n.js.PublishAsync("$KV."+dirBucket+"."+shardKey(s), val, jetstream.WithExpectLastSequencePerSubject(cur.rev)); err != nil {
				sent--
				break
			}
			writes = append(writes, write{s, cur.rev, val, f})
		}
		for _, w := range writes {
			select {
			case <-n.ctx.Done():
				return nil
			case a := <-w.f.Ok():
				n.setShard(w.s, a.Sequence, w.val)
			case e := <-w.f.Err():
				if casConflict(e) {
					n.conflicts.Add(uint64(len(by[w.s])))
					lost[w.s] = w.rev
				} else {
					err = e
				}
				retry = append(retry, by[w.s]...)
			}
		}
		for _, s := range chunk[sent:] {
			retry = append(retry, by[s]...)
		}
		if err != nil {
			for _, s := range order {
				retry = append(retry, by[s]...)
			}
			n.o.Logger.Warn("cluster: claim users", "n", len(retry), "err", err)
			return retry
		}
	}
	return retry
}

// refresh reads shard s from the bucket into the directory.
func (n *Node) refresh(s int) {
	ctx, cancel := context.WithTimeout(n.ctx, n.o.PublishTimeout)
	defer cancel()
	e, err := n.dir.Get(ctx, shardKey(s))
	switch {
	case err == nil:
		n.setShard(s, e.Revision(), bytes.Clone(e.Value()))
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		n.o.Logger.Warn("cluster: read directory shard", "shard", s, "err", err)
	}
}

// casConflict: a compare-and-set lost to another write (the code differs
// between one replica and several).
func casConflict(err error) bool {
	var ae *jetstream.APIError
	return errors.As(err, &ae) && (ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Headers of a batch on a link (edge.Batch).
const (
	linkHeader = "Edged-Link"
	seqHeader  = "Edged-Seq"
	prevHeader = "Edged-Prev" // if not Seq-1 (edge.Batch.Prev)
)

// Replies to a fast-path request.
const (
	replyStored  = "ok"  // stored (or stored already)
	replyGap     = "gap" // its predecessor is in the stream: send it there
	replyFailure = "err" // not stored (Deliver failed)
)

// Send implements edge.Cluster: the batch goes to dest as a core NATS
// request; stored there, dest replies and done(nil) runs. Without a reply
// in FastTimeout, with no responders (dest is down) or refused, it goes
// to the stream, behind the link's earlier batches (docs/CLUSTER.md).
func (n *Node) Send(dest string, lane int, batch []byte, done func(error)) {
	n.lmu.Lock()
	k := linkKey{dest, lane}
	l := n.links[k]
	if l == nil {
		l = &link{key: k, id: n.o.Node + "/" + n.boot + "/" + strconv.Itoa(lane)}
		n.links[k] = l
	}
	prev := l.prev()
	l.seq++
	r := &request{l: l, seq: l.seq, data: batch, done: done, prev: prev}
	l.pend = append(l.pend, r)
	if n.o.NoFast || n.toStream.Load() > 0 && n.toStream.Add(-1) >= 0 {
		r.fallback = true
		n.flushLocked(l)
		n.lmu.Unlock()
		return
	}
	n.nextReq++
	r.id = n.nextReq
	n.reqs[r.id] = r
	id := r.id
	r.timer = time.AfterFunc(n.o.FastTimeout, func() { n.resolve(id, false) })
	n.lmu.Unlock()
	m := &nats.Msg{Subject: fastSubject + dest, Reply: n.replySubject() + strconv.FormatUint(id, 10),
		Header: r.header(), Data: batch}
	if err := n.nc.PublishMsg(m); err != nil {
		n.resolve(id, false)
	}
}

// reply takes a fast-path reply (on the subscription's goroutine).
func (n *Node) reply(m *nats.Msg) {
	id, err := strconv.ParseUint(m.Subject[strings.LastIndexByte(m.Subject, '.')+1:], 10, 64)
	if err != nil {
		return
	}
	// No responders (a status message, 503) or a refusal: the stream.
	n.resolve(id, m.Header.Get("Status") == "" && string(m.Data) == replyStored)
}

// resolve records request id's outcome on the fast path.
func (n *Node) resolve(id uint64, stored bool) {
	n.lmu.Lock()
	r := n.reqs[id]
	if r == nil { // resolved already (a reply after the timeout)
		n.lmu.Unlock()
		return
	}
	delete(n.reqs, id)
	r.timer.Stop()
	if stored {
		r.fastDone = true
		n.goodLocked(r)
	} else {
		r.fallback = true
	}
	n.flushLocked(r.l)
	n.lmu.Unlock()
	if stored {
		r.done(nil)
	}
}

// flushLocked publishes the link's batches marked for the stream, in Seq
// order, and forgets those stored; it stops at the first one whose fast
// path is still pending (n.lmu held: so the stream gets them in order).
func (n *Node) flushLocked(l *link) {
	for len(l.pend) > 0 {
		r := l.pend[0]
		if !r.fastDone && !r.fallback {
			return
		}
		l.pend[0] = nil
		l.pend = l.pend[1:]
		if r.fastDone {
			continue
		}
		n.publish(l, r)
	}
	if len(l.pend) == 0 {
		l.pend = nil
	}
}

// publish sends r to the stream (n.lmu held); done runs on its outcome.
func (n *Node) publish(l *link, r *request) {
	dest := l.key.dest
	m := &nats.Msg{Subject: nodeSubject + dest, Data: r.data, Header: r.header()}
	var f jetstream.PubAckFuture
	err := errors.New("test: stream unavailable")
	if !n.failStream.Load() {
		f, err = n.js.PublishMsgAsync(m)
	}
	if err != nil {
		n.failedLocked(r)
		go r.done(fmt.Errorf("publish to %s: %w", dest, err))
		return
	}
	go func() {
		select {
		case <-f.Ok():
			n.lmu.Lock()
			n.goodLocked(r)
			n.lmu.Unlock()
			r.done(nil)
		case err := <-f.Err():
			n.lmu.Lock()
			n.failedLocked(r)
			n.lmu.Unlock()
			r.done(fmt.Errorf("publish to %s: %w", dest, err))
		}
	}()
}

// failedLocked notes that r failed on both paths (n.lmu held), before
// its done runs: the link's later batches do not follow it (a
// destination refusing them as gaps behind it would send every later
// batch to the stream, failing too while it does, although the fast
// path works).
func (n *Node) failedLocked(r *request) { r.l.fail(r.seq) }

// prev is the Seq the link's next batch follows: the highest sent that
// did not fail (0: none).
func (l *link) prev() uint64 {
	prev := l.seq
	for i := len(l.failed) - 1; i >= 0; i-- {
		if f := l.failed[i]; prev >= f.lo && prev <= f.hi {
			prev = f.lo - 1
		}
	}
	return prev
}

// fail adds s to the failed runs.
func (l *link) fail(s uint64) {
	if s <= l.good {
		return // never walked: a later Seq succeeded
	}
	i := 0
	for i < len(l.failed) && l.failed[i].hi+1 < s {
		i++
	}
	switch {
	case i < len(l.failed) && s+1 >= l.failed[i].lo && s <= l.failed[i].hi+1:
		f := &l.failed[i] // touches run i
		f.lo, f.hi = min(f.lo, s), max(f.hi, s)
		if i+1 < len(l.failed) && l.failed[i+1].lo == f.hi+1 {
			f.hi = l.failed[i+1].hi
			l.failed = append(l.failed[:i+1], l.failed[i+2:]...)
		}
	default:
		l.failed = append(l.failed[:i], append([]seqRun{{s, s}}, l.failed[i:]...)...)
	}
}

// goodLocked notes that r succeeded (n.lmu held): no later batch's Prev
// goes below it, so the failed runs below it are forgotten.
func (n *Node) goodLocked(r *request) { r.l.succeed(r.seq) }

// succeed notes that s succeeded.
func (l *link) succeed(s uint64) {
	if s <= l.good {
		return
	}
	l.good = s
	i := 0
	for i < len(l.failed) && l.failed[i].hi < l.good {
		i++
	}
	l.failed = l.failed[i:]
}

// header is r's link headers.
func (r *request) header() nats.Header {
	h := nats.Header{linkHeader: {r.l.id}, seqHeader: {strconv.FormatUint(r.seq, 10)}}
	if r.prev != r.seq-1 {
		h[prevHeader] = []string{strconv.FormatUint(r.prev, 10)}
	}
	return h
}

// SendSync implements edge.Cluster.
func (n *Node) SendSync(dest string, batch []byte, id string) error {
	ctx, cancel := context.WithTimeout(n.ctx, n.o.PublishTimeout)
	defer cancel()
	var opts []jetstream.PublishOpt
	if id != "" {
		opts = append(opts, jetstream.WithMsgID(id))
	}
	if _, err := n.js.PublishMsg(ctx, &nats.Msg{Subject: nodeSubject + dest, Data: batch}, opts...); err != nil {
		return fmt.Errorf("publish to %s: %w", dest, err)
	}
	return nil
}

// Broadcast implements edge.Cluster.
func (n *Node) Broadcast(batch []byte) {
	n.nc.Publish(pubSubject+n.o.Node, batch) // at most once: an error is a loss like any other
}

// SetGroup implements edge.Cluster.
func (n *Node) SetGroup(add bool, group, user string) error {
	ctx, cancel := context.WithTimeout(n.ctx, n.o.PublishTimeout)
	defer cancel()
	k := key(group) + "." + key(user)
	var err error
	if add {
		_, err = n.grp.Put(ctx, k, []byte{1})
	} else {
		err = n.grp.Delete(ctx, k)
	}
	if err != nil {
		return fmt.Errorf("record group change: %w", err)
	}
	return nil
}

// Run implements edge.Cluster.
func (n *Node) Run(h edge.ClusterHooks) error {
	dw, err := n.dir.WatchAll(n.ctx)
	if err != nil {
		return fmt.Errorf("watch directory: %w", err)
	}
	gw, err := n.grp.WatchAll(n.ctx)
	if err != nil {
		dw.Stop()
		return fmt.Errorf("watch groups: %w", err)
	}
	dirLoaded, grpLoaded := make(chan struct{}), make(chan struct{})
	n.wg.Add(2)
	n.mu.Lock()
	n.moved = h.Moved
	n.mu.Unlock()
	go n.watch(dw, dirLoaded, func(e jetstream.KeyValueEntry) {
		s, ok := parseShardKey(e.Key())
		if !ok {
			return // not a shard: left alone
		}
		n.mu.RLock()
		stale := e.Revision() <= n.shards[s].rev // e.g. this node's own write, applied when acknowledged
		n.mu.RUnlock()
		if stale {
			return
		}
		var val []byte // a delete or purge empties the shard
		if e.Operation() == jetstream.KeyValuePut {
			val = bytes.Clone(e.Value()) // not the whole message it came in
		}
		n.setShard(s, e.Revision(), val)
	})
	go n.watch(gw, grpLoaded, func(e jetstream.KeyValueEntry) {
		gk, uk, ok := strings.Cut(e.Key(), ".")
		g, ok1 := unkey(gk)
		u, ok2 := unkey(uk)
		if ok && ok1 && ok2 {
			h.Group(e.Operation() == jetstream.KeyValuePut, g, u)
		}
	})
	for _, c := range []chan struct{}{dirLoaded, grpLoaded} {
		select {
		case <-c:
		case <-time.After(readyTimeout):
			return fmt.Errorf("load directory and groups: %w", ErrNotReady)
		}
	}
	n.sub, err = n.nc.Subscribe(pubSubject+"*", func(m *nats.Msg) {
		if m.Subject != pubSubject+n.o.Node {
			h.Generic(m.Data)
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe to broadcasts: %w", err)
	}
	ctx, cancel := context.WithTimeout(n.ctx, readyTimeout)
	defer cancel()
	var cons jetstream.Consumer
	for {
		cons, err = n.js.CreateOrUpdateConsumer(ctx, streamName, jetstream.ConsumerConfig{
			Durable: "node-" + n.o.Node, FilterSubject: nodeSubject + n.o.Node,
			// MemoryStorage: the consumer's state is replicated (R3)
			// but not written to files; with work-queue retention the
			// stream itself holds every batch not yet acked, so a
			// consumer recreated from nothing loses nothing.
			AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxAckPending: 4 * fetchBatch,
			MemoryStorage: true,
		})
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("create consumer: %w: %w", ErrNotReady, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
	fast := make(chan *nats.Msg, fastQueue)
	if n.fsub, err = n.nc.ChanSubscribe(fastSubject+n.o.Node, fast); err != nil {
		return fmt.Errorf("subscribe to fast-path batches: %w", err)
	}
	n.wg.Add(2)
	go n.consume(cons, fast, h.Deliver)
	go n.claimer()
	return nil
}

// watch feeds a KV watcher's entries to apply; loaded is closed after the
// initial values (the nil entry).
func (n *Node) watch(w jetstream.KeyWatcher, loaded chan struct{}, apply func(jetstream.KeyValueEntry)) {
	defer n.wg.Done()
	defer w.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				if loaded != nil {
					close(loaded)
					loaded = nil
				}
				continue
			}
			apply(e)
		}
	}
}

// consume takes this node's batches as JetStream pushes them (a pull
// consumer with prefetch) and as fast-path requests come (fast), hands
// what has arrived, up to fetchBatch, to deliver (which returns once they
// are durable here) and acks them (the stream's; the fast path's get
// their reply); on an error the stream's are not acked (JetStream
// redelivers them) and the fast path's are refused (their senders send
// them to the stream).
func (n *Node) consume(cons jetstream.Consumer, fast <-chan *nats.Msg, deliver func([]edge.Batch) error) {
	defer n.wg.Done()
	in := make(chan jetstream.Msg, 4*fetchBatch)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case in <- m:
		case <-n.ctx.Done():
		}
	}, jetstream.PullMaxMessages(4*fetchBatch),
		// A pull request lost with a stream or consumer leader (a node
		// that died, a partition) is noticed after two missed heartbeats
		// and issued again: with the default 30 s expiry (15 s heartbeat)
		// batches waited up to 30 s after a partition healed; 5 s bounds
		// that at ~5 s, for one idle pull every 5 s per node.
		jetstream.PullExpiry(5*time.Second))
	if err != nil {
		n.o.Logger.Error("cluster: consume", "err", err)
		return
	}
	defer cc.Stop()
	var msgs []jetstream.Msg
	var fms []*nats.Msg
	var batches []edge.Batch
	stream, hold := (<-chan jetstream.Msg)(in), n.holdStream
	if hold != nil {
		stream = nil // a test holds the stream's batches back
	}
	for {
		msgs, fms, batches = msgs[:0], fms[:0], batches[:0]
		select {
		case <-n.ctx.Done():
			return
		case <-hold:
			stream, hold = in, nil
			continue
		case m := <-stream:
			msgs = append(msgs, m)
		case m := <-fast:
			fms = append(fms, m)
		}
	more:
		for len(msgs)+len(fms) < fetchBatch {
			select {
			case m := <-stream:
				msgs = append(msgs, m)
			case m := <-fast:
				fms = append(fms, m)
			default:
				break more
			}
		}
		// The stream's first: a fast-path batch that follows one of
		// them on its link is then stored, not refused.
		for _, m := range msgs {
			batches = append(batches, batchOf(m.Data(), m.Headers(), false))
		}
		for _, m := range fms {
			batches = append(batches, batchOf(m.Data, m.Header, true))
		}
		if err := deliver(batches); err != nil {
			n.o.Logger.Warn("cluster: deliver batches", "n", len(batches), "err", err)
			for _, m := range msgs {
				m.NakWithDelay(time.Second)
			}
			for _, m := range fms {
				m.Respond([]byte(replyFailure))
			}
			continue
		}
		for _, m := range msgs {
			m.Ack()
		}
		for i, m := range fms {
			switch {
			case n.dropReplies.Load() > 0 && n.dropReplies.Add(-1) >= 0:
			case batches[len(msgs)+i].Refused:
				m.Respond([]byte(replyGap))
			default:
				m.Respond([]byte(replyStored))
			}
		}
	}
}

// batchOf reads a batch's link from its headers (none: a move, a forward).
func batchOf(data []byte, h nats.Header, fast bool) edge.Batch {
	b := edge.Batch{Data: data, Fast: fast}
	if l := h.Get(linkHeader); l != "" {
		if seq, err := strconv.ParseUint(h.Get(seqHeader), 10, 64); err == nil && seq > 0 {
			b.Link, b.Seq, b.Prev = l, seq, seq-1
			if p, err := strconv.ParseUint(h.Get(prevHeader), 10, 64); err == nil && p < seq {
				b.Prev = p
			}
		}
	}
	return b
}

// Close implements edge.Cluster: stops the goroutines, the connection and
// the embedded server.
func (n *Node) Close() error {
	n.cancel()
	for _, sub := range []*nats.Subscription{n.sub, n.fsub, n.rsub} {
		if sub != nil {
			sub.Unsubscribe()
		}
	}
	n.wg.Wait()
	if n.nc != nil {
		n.nc.Drain()
		n.nc.Close()
	}
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
	}
	return nil
}
