/// Hierarchical fair queueing over the consumers that wait for quota.
///
/// Every node keeps a min-heap of its children that have demand and tokens, keyed by a
/// start tag: the bytes that child has been served, in its parent's virtual time. A
/// scheduler step walks from the global node down the smallest tags to a peer, grants it
/// one quantum, and adds the bytes to the tag of every node on the way (start-time fair
/// queueing, one level per bucket). So the global bucket is shared equally between busy
/// torrents, a torrent's between its busy peers, and whatever a child does not take (it
/// has no demand, or its own bucket is dry) goes to the others: work-conserving and not
/// first-come-first-served.
///
/// Tags rather than round-robin positions make the share independent of how the caller
/// orders its requests: a peer that asks again right after each grant (one block at a
/// time, or small reads) rejoins with the tag it left with (`rejoinTag`), so it neither
/// loses its turn to whoever asked first nor gains one. A child that rejoins after
/// idling starts at its parent's virtual time, so idleness earns no credit to burst with.
///
/// A limited node whose bucket runs low leaves its parent's heap and waits in the wake
/// heap until it holds a whole quantum again; that makes every step do useful work, and
/// the wake heap's top is the one time the caller has to come back. Invariant kept by
/// every event: a node that is in a queue (or the global node, while its queue is not
/// empty) is not blocked and holds at least `minimumGrant` (or its quantum, if smaller).
extension BandwidthHierarchy {
    /// A bucket keeps serving its queue while it holds this much (or its quantum, if
    /// smaller), but once below it waits for a whole quantum. The gap between the two
    /// marks is what lets one scheduler step hand out about a quantum even to peers that
    /// ask for less, instead of waking the caller for every small read.
    static let minimumGrant: Int64 = 1024
    /// See `rejoinTag`: the same event-loop turn, with room for a clock read or two.
    static let rejoinGrace: UInt64 = 1_000

    // MARK: Scheduling

    mutating func serve(now: UInt64, grants: inout [Grant]) {
        while !nodes[Int(Self.root)].blocked && !nodes[Int(Self.root)].queue.isEmpty {
            serveOne(now: now, grants: &grants)
        }
    }

    private mutating func serveOne(now: UInt64, grants: inout [Grant]) {
        if !isReady(Self.root, now: now) {
            block(Self.root, now: now)
            return
        }
        // The smallest quantum of the limited nodes on the path, so a grant stays smooth
        // for every bucket it passes through, and the fewest tokens any of them holds.
        var quantum: Int64 = .max
        var room: Int64 = .max
        if nodes[Int(Self.root)].isLimited {
            quantum = nodes[Int(Self.root)].bucket.quantum
            room = nodes[Int(Self.root)].bucket.available(now: now)
        }
        var parent = Self.root
        while true {
            let child = nodes[Int(parent)].queue[0]
            nodes[Int(parent)].virtualTime = nodes[Int(child)].tag
            if nodes[Int(child)].isLimited {
                guard isReady(child, now: now) else {
                    block(child, now: now)
                    return
                }
                quantum = min(quantum, nodes[Int(child)].bucket.quantum)
                room = min(room, nodes[Int(child)].bucket.available(now: now))
            }
            if nodes[Int(child)].kind == .peer {
                // Where nothing limits (a limit was just lifted) the whole demand goes at once.
                let limit = quantum == .max ? Int64.max : min(quantum, room)
                grant(to: child, bytes: min(nodes[Int(child)].demand, limit), fair: quantum != .max, now: now, grants: &grants)
                return
            }
            parent = child
        }
    }

    /// `fair` is false where nothing on the path limits: such bytes are not shared, so
    /// they must not count against the peer if a limit returns (as immediate grants
    /// on unlimited paths do not either).
    private mutating func grant(to peer: Int32, bytes: Int64, fair: Bool, now: UInt64, grants: inout [Grant]) {
        nodes[Int(peer)].demand -= bytes
        charge(from: peer, bytes: bytes, now: now)
        appendGrant(peer, bytes: bytes, to: &grants)

        // Advance tags bottom-up; each node then leaves, parks, or moves back in its
        // parent's heap. Leaving is safe: it keeps its tag for when it asks again.
        var node = peer
        while node != Self.root {
            let parent = nodes[Int(node)].parent
            // Also for a node that a block further down just took out of its queue: the
            // bytes were served through it all the same.
            if fair { nodes[Int(node)].tag += bytes }
            if nodes[Int(node)].inQueue {
                if !nodes[Int(node)].hasWork {
                    detach(node)
                    nodes[Int(node)].leftAt = now
                } else if !isReady(node, now: now) {
                    block(node, now: now)
                } else {
                    nextOrder &+= 1
                    nodes[Int(node)].order = nextOrder
                    siftDown(parent, Int(nodes[Int(node)].queueIndex))
                }
            }
            node = parent
        }
        if !nodes[Int(Self.root)].queue.isEmpty && !isReady(Self.root, now: now) {
            block(Self.root, now: now)
        }
    }

    /// Takes `bytes` from every bucket on the path and counts them in every meter.
    private mutating func charge(from peer: Int32, bytes: Int64, now: UInt64) {
        var node = peer
        while node != -1 {
            nodes[Int(node)].bucket.consume(bytes, now: now)
            nodes[Int(node)].shortMeter.record(bytes, now: now)
            nodes[Int(node)].longMeter.record(bytes, now: now)
            node = nodes[Int(node)].parent
        }
    }

    private mutating func appendGrant(_ peer: Int32, bytes: Int64, to grants: inout [Grant]) {
        let index = nodes[Int(peer)].grantIndex
        if nodes[Int(peer)].grantEpoch == epoch, index < grants.count, grants[index].peer.slot == peer {
            grants[index].bytes += bytes
            return
        }
        nodes[Int(peer)].grantEpoch = epoch
        nodes[Int(peer)].grantIndex = grants.count
        grants.append(Grant(peer: PeerID(slot: peer, generation: nodes[Int(peer)].generation), bytes: bytes))
    }

    /// Where no bucket on the path limits, a request is granted in full at once: the
    /// unlimited case costs a walk up three nodes and no queueing. Where one does, the
    /// request always queues, even if tokens are there: the caller polls in the same
    /// loop turn (`pollAt` is now), after every peer that wanted to ask has asked, and
    /// the poll then shares the tokens by tag. Granting inside `request` would hand any
    /// surplus to whichever peer the caller happens to process first, turn after turn.
    mutating func immediateGrant(_ peer: Int32, bytes: Int64, now: UInt64) -> Int64 {
        var node = peer
        while node != -1 {
            if nodes[Int(node)].isLimited || nodes[Int(node)].blocked { return 0 }
            node = nodes[Int(node)].parent
        }
        charge(from: peer, bytes: bytes, now: now)
        return bytes
    }

    /// A child that asks again within `rejoinGrace` of running dry counts as never having
    /// left and keeps its tag, even if its siblings moved ahead meanwhile: that instant
    /// between a grant meeting a peer's demand and the peer asking again (one block at a
    /// time, small reads) must not cost it its share. A child back from real idleness
    /// starts at its parent's virtual time, so idleness earns no credit to burst with.
    func rejoinTag(_ node: Int32, now: UInt64) -> Int64 {
        let parent = nodes[Int(node)].parent
        if let left = nodes[Int(node)].leftAt, now >= left, now - left <= Self.rejoinGrace {
            return nodes[Int(node)].tag
        }
        return max(nodes[Int(node)].tag, nodes[Int(parent)].virtualTime)
    }

    // MARK: Readiness

    mutating func isReady(_ node: Int32, now: UInt64) -> Bool {
        guard nodes[Int(node)].isLimited else { return true }
        return nodes[Int(node)].bucket.available(now: now) >= threshold(node)
    }

    private func threshold(_ node: Int32) -> Int64 {
        min(nodes[Int(node)].bucket.quantum, Self.minimumGrant)
    }

    func isCurrent(_ entry: WakeHeap.Entry) -> Bool {
        Int(entry.node) < nodes.count && nodes[Int(entry.node)].blocked && nodes[Int(entry.node)].stamp == entry.stamp
    }

    /// Parks a node until its bucket holds a quantum.
    mutating func block(_ node: Int32, now: UInt64) {
        if nodes[Int(node)].inQueue {
            detach(node)
            deactivateEmptyAncestors(of: node)
        }
        nodes[Int(node)].blocked = true
        nodes[Int(node)].stamp &+= 1
        let quantum = nodes[Int(node)].bucket.quantum
        let wait = max(nodes[Int(node)].bucket.timeUntilAvailable(quantum, now: now), 1)
        wakeHeap.push(.init(time: now + wait, node: node, stamp: nodes[Int(node)].stamp))
    }

    /// Restores the invariant after a node's bucket or rate changed, or its wake time came.
    /// `wakeMayMoveEarlier` is false after a debt charge: the wake entry already queued is
    /// then early, not late, and re-checks when it fires, so a download charging every
    /// packet does not push a wake entry per packet.
    mutating func settle(_ node: Int32, now: UInt64, wakeMayMoveEarlier: Bool = true) {
        if nodes[Int(node)].blocked {
            guard isReady(node, now: now) else {
                if wakeMayMoveEarlier { block(node, now: now) }
                return
            }
            nodes[Int(node)].blocked = false
            nodes[Int(node)].stamp &+= 1
            if node != Self.root && nodes[Int(node)].hasWork { enqueue(node, now: now) }
            return
        }
        if node == Self.root {
            if !nodes[Int(node)].queue.isEmpty && !isReady(node, now: now) { block(node, now: now) }
        } else if nodes[Int(node)].inQueue && !isReady(node, now: now) {
            block(node, now: now)
        }
    }

    /// The earliest time a poll can grant something: now if work is ready, else the first
    /// live wake-heap entry. Stale entries on top are dropped here so they cannot cause
    /// spurious wake-ups or pile up.
    mutating func pollTime(now: UInt64) -> UInt64? {
        while let top = wakeHeap.top, !isCurrent(top) { wakeHeap.pop() }
        if !nodes[Int(Self.root)].blocked && !nodes[Int(Self.root)].queue.isEmpty { return now }
        return wakeHeap.top?.time
    }

    // MARK: Queues

    /// Puts a node that just got work into its parent's queue, and the parent into its
    /// own if it was idle, up to the global node or a blocked ancestor (which keeps its
    /// queue and rejoins when it wakes).
    mutating func enqueue(_ start: Int32, now: UInt64) {
        var node = start
        while node != Self.root {
            if !isReady(node, now: now) {
                block(node, now: now)
                return
            }
            insert(node, now: now)
            let parent = nodes[Int(node)].parent
            if parent == Self.root {
                if !nodes[Int(parent)].blocked && !isReady(parent, now: now) { block(parent, now: now) }
                return
            }
            if nodes[Int(parent)].inQueue || nodes[Int(parent)].blocked { return }
            node = parent
        }
    }

    /// Inner nodes left with an empty queue leave their parent's queue too.
    mutating func deactivateEmptyAncestors(of node: Int32) {
        var parent = nodes[Int(node)].parent
        while parent != Self.root && parent != -1 && nodes[Int(parent)].inQueue && nodes[Int(parent)].queue.isEmpty {
            detach(parent)
            parent = nodes[Int(parent)].parent
        }
    }

    private mutating func insert(_ node: Int32, now: UInt64) {
        let parent = nodes[Int(node)].parent
        nodes[Int(node)].tag = rejoinTag(node, now: now)
        nextOrder &+= 1
        nodes[Int(node)].order = nextOrder
        nodes[Int(parent)].queue.append(node)
        let index = nodes[Int(parent)].queue.count - 1
        nodes[Int(node)].queueIndex = Int32(index)
        siftUp(parent, index)
    }

    /// Removes a node from its parent's heap in O(log n); it keeps its tag.
    mutating func detach(_ node: Int32) {
        let parent = nodes[Int(node)].parent
        let index = Int(nodes[Int(node)].queueIndex)
        let last = nodes[Int(parent)].queue.count - 1
        if index != last {
            let moved = nodes[Int(parent)].queue[last]
            nodes[Int(parent)].queue[index] = moved
            nodes[Int(moved)].queueIndex = Int32(index)
        }
        nodes[Int(parent)].queue.removeLast()
        nodes[Int(node)].queueIndex = -1
        if index != last {
            siftDown(parent, index)
            siftUp(parent, index)
        }
    }

    func precedes(_ a: Int32, _ b: Int32) -> Bool {
        let left = nodes[Int(a)].tag, right = nodes[Int(b)].tag
        return left != right ? left < right : nodes[Int(a)].order < nodes[Int(b)].order
    }

    private mutating func swapEntries(_ parent: Int32, _ i: Int, _ j: Int) {
        nodes[Int(parent)].queue.swapAt(i, j)
        nodes[Int(nodes[Int(parent)].queue[i])].queueIndex = Int32(i)
        nodes[Int(nodes[Int(parent)].queue[j])].queueIndex = Int32(j)
    }

    private mutating func siftUp(_ parent: Int32, _ start: Int) {
        var child = start
        while child > 0 {
            let up = (child - 1) / 2
            guard precedes(nodes[Int(parent)].queue[child], nodes[Int(parent)].queue[up]) else { return }
            swapEntries(parent, child, up)
            child = up
        }
    }

    private mutating func siftDown(_ parent: Int32, _ start: Int) {
        var index = start
        let count = nodes[Int(parent)].queue.count
        while true {
            let left = 2 * index + 1, right = left + 1
            var first = index
            if left < count && precedes(nodes[Int(parent)].queue[left], nodes[Int(parent)].queue[first]) { first = left }
            if right < count && precedes(nodes[Int(parent)].queue[right], nodes[Int(parent)].queue[first]) { first = right }
            guard first != index else { return }
            swapEntries(parent, index, first)
            index = first
        }
    }
}
