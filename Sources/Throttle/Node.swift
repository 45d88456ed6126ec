/// One bucket of the hierarchy (the global one, a torrent's, or a peer's) plus its place
/// in the fair-share queues. Nodes live in an array and refer to each other by index so
/// that adding, removing and re-queueing are O(1) without reference counting, and a
/// removed peer's slot is reused rather than leaked.
struct Node: Sendable {
    enum Kind: Sendable { case global, torrent, peer, free }

    var kind: Kind
    var generation: UInt32
    /// Bumped whenever a wake-heap entry for this node must be ignored (it was re-blocked,
    /// unblocked early, or removed). Survives slot reuse so an old entry never matches.
    var stamp: UInt32
    var parent: Int32

    // Children, for removing a torrent together with its peers.
    var firstChild: Int32 = -1
    var nextSibling: Int32 = -1
    var previousSibling: Int32 = -1
    var childCount = 0

    var bucket: TokenBucket
    var shortMeter: RateMeter
    var longMeter: RateMeter

    // Fair share: a min-heap of this node's children that have demand and tokens,
    // ordered by (tag, order)...
    var queue: [Int32] = []
    /// Bytes this node's children have been served up to: the tag of the child served last.
    var virtualTime: Int64 = 0
    // ...and this node's entry in its parent's heap.
    var queueIndex: Int32 = -1
    /// Start tag in the parent's virtual time: bytes this node has been served, raised to
    /// the parent's virtual time when it comes back from idling (see `rejoinTag`).
    var tag: Int64 = 0
    /// Breaks ties between equal tags first in, first out: equal peers take turns.
    var order: UInt64 = 0
    /// When it last left its parent's heap with nothing more to send; nil if never served.
    var leftAt: UInt64?
    /// Peers only: bytes requested and not yet granted.
    var demand: Int64 = 0
    /// Its bucket ran low; waiting in the wake heap for a quantum instead of in a queue.
    var blocked = false

    // Coalesces several grants to one peer within one call into one entry.
    var grantEpoch: UInt32 = 0
    var grantIndex = 0

    init(kind: Kind, generation: UInt32, stamp: UInt32, parent: Int32, rate: Int64, burst: Int64?, now: UInt64) {
        self.kind = kind
        self.generation = generation
        self.stamp = stamp
        self.parent = parent
        bucket = TokenBucket(rate: rate, burst: burst, now: now)
        shortMeter = .shortTerm(now: now)
        longMeter = .longTerm(now: now)
    }

    var isLimited: Bool { !bucket.isUnlimited }

    var inQueue: Bool { queueIndex >= 0 }

    var hasWork: Bool { kind == .peer ? demand > 0 : !queue.isEmpty }
}
