/// Bandwidth limits for one direction (upload or download): a global bucket, a bucket
/// per torrent and optionally one per peer. A grant to a peer fits every limited bucket
/// above it; a rate of 0 at any level means that level does not limit.
///
/// It is a state machine for the event loop: it has no clock and no timer. Every event
/// takes `now` (monotonic microseconds) and returns what to do: bytes granted, and
/// `pollAt`, the time at which the caller should call `poll(now:)` again. The latest
/// `pollAt` returned by any call describes the whole state and supersedes earlier ones,
/// so the caller keeps one timer armed at it (a spurious early poll is harmless). A
/// `pollAt` not after `now` means "poll in this loop turn", once the turn's other events
/// (and their requests) are handled.
///
/// Which bytes count is the caller's choice: it passes the byte counts it wants limited.
/// The default in Seeder is payload only (piece data); counting protocol overhead means
/// also passing message headers or packet sizes to `request`/`consume`.
///
/// Use one hierarchy per direction. Peers come and go all the time: `removePeer` costs
/// O(log n) in its torrent's queue, and a removed peer's slot is reused.
///
/// Upload: a peer with a `piece` to send calls `request(peer, bytes: 16 KiB)` (or, with
/// several requests pipelined, their sum) and writes as many bytes as it is granted,
/// from `request` or later from a `poll`, into its TCP output or its uTP send queue. If
/// the connection dies with bytes granted but unsent, `giveBack` them; `removePeer`
/// drops what was still queued.
///
/// Download over TCP: request what it is willing to read, keep the socket's read side
/// paused until granted, read at most the grant; a read that returns more (a bufferevent
/// reads whole chunks) is charged with `consume`, a shorter one returns the rest with
/// `giveBack`. Over uTP, bytes arrive whether we like it or not: keep the advertised
/// receive window at what is granted and not yet received, and `consume` what arrives
/// beyond it; the debt holds back later grants, which shrinks the window.
public struct BandwidthHierarchy: Sendable {
    public struct TorrentID: Hashable, Sendable {
        let slot: Int32
        let generation: UInt32
    }

    public struct PeerID: Hashable, Sendable {
        let slot: Int32
        let generation: UInt32
    }

    public struct Grant: Equatable, Sendable {
        public var peer: PeerID
        public var bytes: Int64
    }

    public struct RequestResult: Equatable, Sendable {
        /// Bytes the peer may transfer right away: all of them when no bucket on its path
        /// limits, else 0 (the demand is queued for `poll`).
        public var granted: Int64
        /// When to call `poll(now:)`; nil when nothing waits. May be <= now: poll at once.
        public var pollAt: UInt64?
    }

    public struct PollResult: Equatable, Sendable {
        /// At most one entry per peer, in the order the scheduler served them.
        public var grants: [Grant]
        public var pollAt: UInt64?
    }

    public struct Rates: Equatable, Sendable {
        public var lastSecond: Int64
        public var lastTenSeconds: Int64
        /// Bytes counted since the node was added.
        public var total: Int64
    }

    var nodes: [Node]
    var freeSlots: [Int32] = []
    var wakeHeap = WakeHeap()
    var epoch: UInt32 = 0
    var nextOrder: UInt64 = 0
    static let root: Int32 = 0

    public init(globalRate: Int64 = 0, burst: Int64? = nil, now: UInt64) {
        nodes = [Node(kind: .global, generation: 0, stamp: 0, parent: -1, rate: globalRate, burst: burst, now: now)]
    }

    // MARK: Structure

    public mutating func addTorrent(rate: Int64 = 0, burst: Int64? = nil, now: UInt64) -> TorrentID {
        let slot = allocate(kind: .torrent, parent: Self.root, rate: rate, burst: burst, now: now)
        return TorrentID(slot: slot, generation: nodes[Int(slot)].generation)
    }

    /// A peer with `rate` 0 only shares its torrent's and the global limit fairly; a
    /// non-zero `rate` also caps the peer itself.
    public mutating func addPeer(to torrent: TorrentID, rate: Int64 = 0, burst: Int64? = nil, now: UInt64) -> PeerID? {
        guard let parent = index(of: torrent) else { return nil }
        let slot = allocate(kind: .peer, parent: parent, rate: rate, burst: burst, now: now)
        return PeerID(slot: slot, generation: nodes[Int(slot)].generation)
    }

    /// Drops the peer and any demand it had queued. Its handle becomes stale: every call
    /// with it is then a no-op, also after the slot is reused.
    public mutating func removePeer(_ peer: PeerID) {
        guard let slot = index(of: peer) else { return }
        release(slot)
    }

    /// Removes the torrent and every peer still under it.
    public mutating func removeTorrent(_ torrent: TorrentID) {
        guard let slot = index(of: torrent) else { return }
        while nodes[Int(slot)].firstChild != -1 {
            release(nodes[Int(slot)].firstChild)
        }
        release(slot)
    }

    public var torrentCount: Int { nodes[Int(Self.root)].childCount }

    // MARK: Limits (config reload)

    /// Changes the global limit at once; returns the new `pollAt`.
    public mutating func setGlobalRate(_ rate: Int64, burst: Int64? = nil, now: UInt64) -> UInt64? {
        changeRate(of: Self.root, rate: rate, burst: burst, now: now)
    }

    public mutating func setRate(of torrent: TorrentID, to rate: Int64, burst: Int64? = nil, now: UInt64) -> UInt64? {
        guard let slot = index(of: torrent) else { return pollTime(now: now) }
        return changeRate(of: slot, rate: rate, burst: burst, now: now)
    }

    public mutating func setRate(of peer: PeerID, to rate: Int64, burst: Int64? = nil, now: UInt64) -> UInt64? {
        guard let slot = index(of: peer) else { return pollTime(now: now) }
        return changeRate(of: slot, rate: rate, burst: burst, now: now)
    }

    public var globalRate: Int64 { nodes[Int(Self.root)].bucket.rate }

    public func rate(of torrent: TorrentID) -> Int64? {
        index(of: torrent).map { nodes[Int($0)].bucket.rate }
    }

    // MARK: Transfers

    /// The peer wants to transfer up to `bytes` more (cumulative with earlier requests).
    /// Where nothing limits, `granted` is all of it. Otherwise the demand queues and
    /// `pollAt` says when a poll can serve it; `pollAt <= now` means tokens are there:
    /// poll later in this same loop turn, once every peer that wants to ask has asked,
    /// so the poll can share them fairly.
    public mutating func request(_ peer: PeerID, bytes: Int64, now: UInt64) -> RequestResult {
        guard let slot = index(of: peer), bytes > 0 else {
            return RequestResult(granted: 0, pollAt: pollTime(now: now))
        }
        epoch &+= 1
        var granted: Int64 = 0
        if nodes[Int(slot)].demand == 0, !nodes[Int(slot)].inQueue {
            granted = immediateGrant(slot, bytes: bytes, now: now)
        }
        let rest = bytes - granted
        if rest > 0 {
            nodes[Int(slot)].demand += rest
            if !nodes[Int(slot)].inQueue && !nodes[Int(slot)].blocked {
                enqueue(slot, now: now)
            }
        }
        return RequestResult(granted: granted, pollAt: pollTime(now: now))
    }

    /// Runs the scheduler: wakes buckets that have refilled and grants queued demand in
    /// fair order, as much as the buckets allow at `now`.
    public mutating func poll(now: UInt64) -> PollResult {
        epoch &+= 1
        while let top = wakeHeap.top, top.time <= now {
            wakeHeap.pop()
            if isCurrent(top) { settle(top.node, now: now) }
        }
        var grants: [Grant] = []
        serve(now: now, grants: &grants)
        return PollResult(grants: grants, pollAt: pollTime(now: now))
    }

    /// Withdraws whatever the peer had queued (its transfer finished or was abandoned).
    /// Returns the bytes that were still waiting.
    @discardableResult
    public mutating func cancel(_ peer: PeerID) -> Int64 {
        guard let slot = index(of: peer) else { return 0 }
        let dropped = nodes[Int(slot)].demand
        nodes[Int(slot)].demand = 0
        if nodes[Int(slot)].inQueue {
            detach(slot)
            deactivateEmptyAncestors(of: slot)
        }
        return dropped
    }

    /// Bytes granted but not transferred (the socket closed, the read returned less):
    /// they go back into every bucket on the path, never above its burst.
    public mutating func giveBack(_ peer: PeerID, bytes: Int64, now: UInt64) -> UInt64? {
        guard let slot = index(of: peer), bytes > 0 else { return pollTime(now: now) }
        var node = slot
        while node != -1 {
            nodes[Int(node)].bucket.giveBack(bytes, now: now)
            nodes[Int(node)].shortMeter.record(-bytes, now: now)
            nodes[Int(node)].longMeter.record(-bytes, now: now)
            settle(node, now: now)
            node = nodes[Int(node)].parent
        }
        return pollTime(now: now)
    }

    /// Charges bytes that were transferred without a grant: download bytes that arrived
    /// before we could refuse them. Buckets may go into debt; until it is paid off the
    /// path grants nothing, so the TCP reader stays paused and the uTP window stays shut.
    public mutating func consume(_ peer: PeerID, bytes: Int64, now: UInt64) -> UInt64? {
        guard let slot = index(of: peer), bytes > 0 else { return pollTime(now: now) }
        var node = slot
        while node != -1 {
            nodes[Int(node)].bucket.consume(bytes, now: now)
            nodes[Int(node)].shortMeter.record(bytes, now: now)
            nodes[Int(node)].longMeter.record(bytes, now: now)
            settle(node, now: now, wakeMayMoveEarlier: false)
            node = nodes[Int(node)].parent
        }
        return pollTime(now: now)
    }

    /// Bytes the path could take right now if nobody else were waiting: the smallest
    /// level of any limited bucket above the peer, 0 while in debt, `Int64.max` when
    /// nothing limits it. For sizing a uTP receive window.
    public mutating func allowance(for peer: PeerID, now: UInt64) -> Int64 {
        guard let slot = index(of: peer) else { return 0 }
        var result = Int64.max
        var node = slot
        while node != -1 {
            if nodes[Int(node)].isLimited {
                result = min(result, max(nodes[Int(node)].bucket.available(now: now), 0))
            }
            node = nodes[Int(node)].parent
        }
        return result
    }

    /// Bytes the peer asked for that have not been granted yet.
    public func pendingDemand(of peer: PeerID) -> Int64 {
        index(of: peer).map { nodes[Int($0)].demand } ?? 0
    }

    /// When the caller should next call `poll`, or nil when nothing waits.
    public mutating func nextPollTime(now: UInt64) -> UInt64? { pollTime(now: now) }

    // MARK: Status

    public mutating func globalRates(now: UInt64) -> Rates { rates(of: Self.root, now: now) }

    public mutating func rates(of torrent: TorrentID, now: UInt64) -> Rates? {
        index(of: torrent).map { rates(of: $0, now: now) }
    }

    public mutating func rates(of peer: PeerID, now: UInt64) -> Rates? {
        index(of: peer).map { rates(of: $0, now: now) }
    }

    // MARK: Internals

    func index(of torrent: TorrentID) -> Int32? {
        valid(torrent.slot, torrent.generation, .torrent) ? torrent.slot : nil
    }

    func index(of peer: PeerID) -> Int32? {
        valid(peer.slot, peer.generation, .peer) ? peer.slot : nil
    }

    private func valid(_ slot: Int32, _ generation: UInt32, _ kind: Node.Kind) -> Bool {
        slot > 0 && Int(slot) < nodes.count && nodes[Int(slot)].generation == generation
            && nodes[Int(slot)].kind == kind
    }

    private mutating func rates(of slot: Int32, now: UInt64) -> Rates {
        Rates(
            lastSecond: nodes[Int(slot)].shortMeter.bytesPerSecond(now: now),
            lastTenSeconds: nodes[Int(slot)].longMeter.bytesPerSecond(now: now),
            total: nodes[Int(slot)].longMeter.totalBytes)
    }

    private mutating func allocate(kind: Node.Kind, parent: Int32, rate: Int64, burst: Int64?, now: UInt64) -> Int32 {
        let slot: Int32
        var node: Node
        if let reused = freeSlots.popLast() {
            slot = reused
            let old = nodes[Int(reused)]
            node = Node(kind: kind, generation: old.generation &+ 1, stamp: old.stamp &+ 1,
                        parent: parent, rate: rate, burst: burst, now: now)
        } else {
            slot = Int32(nodes.count)
            node = Node(kind: kind, generation: 0, stamp: 0, parent: parent, rate: rate, burst: burst, now: now)
        }
        node.nextSibling = nodes[Int(parent)].firstChild
        if node.nextSibling != -1 { nodes[Int(node.nextSibling)].previousSibling = slot }
        if Int(slot) == nodes.count { nodes.append(node) } else { nodes[Int(slot)] = node }
        nodes[Int(parent)].firstChild = slot
        nodes[Int(parent)].childCount += 1
        return slot
    }

    private mutating func release(_ slot: Int32) {
        if nodes[Int(slot)].inQueue {
            detach(slot)
            deactivateEmptyAncestors(of: slot)
        }
        let parent = nodes[Int(slot)].parent
        let previous = nodes[Int(slot)].previousSibling
        let next = nodes[Int(slot)].nextSibling
        if previous != -1 { nodes[Int(previous)].nextSibling = next } else { nodes[Int(parent)].firstChild = next }
        if next != -1 { nodes[Int(next)].previousSibling = previous }
        nodes[Int(parent)].childCount -= 1
        // A blank node: the new stamp voids any wake-heap entry the old one left behind.
        let generation = nodes[Int(slot)].generation
        let stamp = nodes[Int(slot)].stamp &+ 1
        nodes[Int(slot)] = Node(kind: .free, generation: generation, stamp: stamp, parent: -1, rate: 0, burst: nil, now: 0)
        freeSlots.append(slot)
    }

    private mutating func changeRate(of slot: Int32, rate: Int64, burst: Int64?, now: UInt64) -> UInt64? {
        nodes[Int(slot)].bucket.setRate(rate, burst: burst, now: now)
        // A blocked node's wake time was computed for the old rate; settle recomputes it.
        settle(slot, now: now)
        return pollTime(now: now)
    }

    /// Internal counts, for leak tests.
    struct Statistics: Equatable {
        var liveNodes: Int
        var freeSlots: Int
        var allocatedSlots: Int
        var queued: Int
        var blocked: Int
        var wakeEntries: Int
    }

    var statistics: Statistics {
        Statistics(
            liveNodes: nodes.count(where: { $0.kind != .free }),
            freeSlots: freeSlots.count,
            allocatedSlots: nodes.count,
            queued: nodes.count(where: { $0.inQueue }),
            blocked: nodes.count(where: { $0.blocked }),
            wakeEntries: wakeHeap.count)
    }
}

extension BandwidthHierarchy {
    /// Every structural invariant, as a list of violations (empty when sound). For tests.
    func violations() -> [String] {
        var problems: [String] = []
        for slot in nodes.indices {
            let node = nodes[slot]
            if node.kind == .free {
                if node.inQueue || !node.queue.isEmpty || node.blocked { problems.append("free slot \(slot) still linked") }
                continue
            }
            if node.inQueue {
                let parent = nodes[Int(node.parent)]
                if Int(node.queueIndex) >= parent.queue.count || parent.queue[Int(node.queueIndex)] != Int32(slot) {
                    problems.append("node \(slot) has a wrong queue index")
                }
                if node.blocked { problems.append("node \(slot) is both queued and blocked") }
                if !node.hasWork { problems.append("node \(slot) is queued without work") }
            } else if slot != Int(Self.root) && !node.blocked && node.hasWork {
                problems.append("node \(slot) has work but is neither queued nor blocked")
            }
            if node.blocked && !wakeHeap.entries.contains(where: { $0.node == Int32(slot) && $0.stamp == node.stamp }) {
                problems.append("blocked node \(slot) has no wake entry")
            }
            for (index, child) in node.queue.enumerated() {
                if nodes[Int(child)].parent != Int32(slot) { problems.append("node \(child) queued under a stranger") }
                if index > 0 {
                    let up = node.queue[(index - 1) / 2]
                    if precedes(child, up) { problems.append("heap order broken under \(slot)") }
                }
            }
            var children = 0
            var child = node.firstChild
            while child != -1 {
                children += 1
                if nodes[Int(child)].parent != Int32(slot) { problems.append("child list of \(slot) is wrong") }
                child = nodes[Int(child)].nextSibling
            }
            if children != node.childCount { problems.append("node \(slot) counts \(node.childCount) children, has \(children)") }
        }
        return problems
    }
}
