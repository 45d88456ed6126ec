/// Choking for a seed: a fixed number of upload slots given to interested peers in
/// turn, so that every peer gets served, plus one optimistic slot. Pure: the caller
/// passes the peers and the time, and applies the set it gets back.
///
/// A seed has no download rates to reward, so slots rotate: a peer keeps its slot for
/// `slotDuration`, then yields it to the interested peer that has waited longest.
public struct SeedChoker {
    public struct Peer: Sendable {
        public var id: Int
        public var interested: Bool
        public init(id: Int, interested: Bool) {
            self.id = id
            self.interested = interested
        }
    }

    /// Regular slots; 0 unchokes every interested peer.
    public var slots: Int
    public var slotDuration: UInt64
    public var optimisticDuration: UInt64

    private var unchokedSince: [Int: UInt64] = [:]
    private var lastServed: [Int: UInt64] = [:]
    private var optimistic: (id: Int, since: UInt64)?

    public init(slots: Int, slotDuration: UInt64 = 30_000_000, optimisticDuration: UInt64 = 30_000_000) {
        self.slots = slots
        self.slotDuration = slotDuration
        self.optimisticDuration = optimisticDuration
    }

    /// The peers to unchoke now; every other peer is choked.
    public mutating func rechoke<R: RandomNumberGenerator>(peers: [Peer], now: UInt64, using random: inout R) -> Set<Int> {
        let present = Set(peers.map(\.id))
        unchokedSince = unchokedSince.filter { present.contains($0.key) }
        lastServed = lastServed.filter { present.contains($0.key) }
        let interested = peers.filter(\.interested).map(\.id)

        if slots == 0 {
            let all = Set(interested)
            for id in all where unchokedSince[id] == nil { unchokedSince[id] = now }
            unchokedSince = unchokedSince.filter { all.contains($0.key) }
            optimistic = nil
            return all
        }

        // Peers inside their quantum keep their slot; then the longest-waiting peers.
        let keep = interested.filter { id in
            guard let since = unchokedSince[id], optimistic?.id != id else { return false }
            return now - since < slotDuration
        }
        // A peer whose quantum just ended counts as served now: to the back of the line.
        func servedAt(_ id: Int) -> UInt64 { unchokedSince[id] != nil ? now : lastServed[id] ?? 0 }
        let waiting = interested.filter { !keep.contains($0) && optimistic?.id != $0 }
            .sorted { (servedAt($0), $0) < (servedAt($1), $1) }
        var chosen = Array(keep.prefix(slots))
        for id in waiting where chosen.count < slots { chosen.append(id) }
        var result = Set(chosen)

        // Optimistic slot: a random interested peer outside the regular slots.
        if let current = optimistic, !interested.contains(current.id) || result.contains(current.id) || now - current.since >= optimisticDuration {
            optimistic = nil
        }
        if optimistic == nil {
            let candidates = interested.filter { !result.contains($0) }
            if let pick = candidates.randomElement(using: &random) { optimistic = (pick, now) }
        }
        if let current = optimistic { result.insert(current.id) }

        for id in result where unchokedSince[id] == nil { unchokedSince[id] = now }
        for (id, _) in unchokedSince where !result.contains(id) {
            unchokedSince[id] = nil
            lastServed[id] = now
        }
        return result
    }

    /// Forget a peer that disconnected.
    public mutating func remove(_ id: Int) {
        unchokedSince[id] = nil
        lastServed[id] = nil
        if optimistic?.id == id { optimistic = nil }
    }
}
