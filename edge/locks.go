package edge

// Lock order, outermost first. A goroutine that holds a lock takes only
// locks further down the list; locks on the same line are never held
// together. Nothing on an event loop holds a lock across Engine.Post, a
// socket write or file I/O.
//
//  0. wal.Log's compaction lock (compactMu): Compact holds it while
//     writeSnapshot (persist.go) walks the groups, the retained tree, every
//     client record and every shard, so it comes before all of them;
//     nothing takes it under an edge lock.
//  1. Server.mu: the lifecycle (started, closed, the admin listener and the
//     background goroutines' channels). Start holds it while the store
//     replays (client records) and the cluster starts; everything else
//     takes it alone, briefly (isClosed, AdminAddr, the stop functions).
//  2. Server.sweepMu: one expiry sweep (inboxes.go: sweep), across its
//     pass over the client records.
//  3. shard.mu, a registry shard: registry.lock, registry.release,
//     shard.rotateSeen. release drops client.mu before it takes the
//     shard's, then locks both in this order.
//  4. client.mu, one client record. Never two at once: ack unlocks the
//     recipient before it stores the sender's receipt, storeDirect unlocks
//     before it kicks, a full inbox's notice is stored after the unlock,
//     storeGroup examines its members one at a time.
//  5. topicTree.mu (subscriptions: addSubLocked, dropSubs) or
//     topicTree.rmu (retained messages: the lookup in subscribe, runScans'
//     step; setRetainedProps with no record locked), never both. runScans
//     pushes into the record it holds while it holds rmu, so the leaves
//     below are taken under rmu too.
//  6. Leaves: Server.bigMu (watchInbox, from pushProps), registry.dirMu
//     (registry.alloc under shard.mu, and alone before a walk of the
//     records), longIDs.mu (under shard.mu), exts.mu (client.x), the
//     store's own locks (wal.Log.Append, under client.mu), and
//     internal/cluster's Node.mu (Cluster.Home, from storeMoved under
//     client.mu; the directory watcher calls Moved after releasing it),
//     Server.moving.mu (moveAway, under client.mu; it appends to the wal
//     under it; writeSnapshot takes it alone, under the compaction lock).
//  7. Leaves taken with no other edge lock held, apart from Server.mu
//     during Start's replay (which adds groups): Groups.mu, Server.rpMu
//     (remote presence), srcBuckets.mu (takeNewInbox: storeDirect found no
//     record, so it holds none), pusher.runMu, Server.links.mu (the
//     cluster links' stored ranges: deliverBatches; writeSnapshot under
//     the compaction lock only).
//
// client.owner is not a lock: an atomic mirror of client.handle for
// handle()'s lock-free first look (mayOwn); ownedLocked under client.mu
// decides.
