/// Bans peers that keep sending bad data. When a piece fails its hash check, every
/// peer that sent any block of it gets one strike (`PiecePicker.pieceFailed` returns
/// them); at `threshold` strikes (libtorrent's "invalid threshold" idea, default 3) the
/// address is banned for the session. One strike per failed piece, so an innocent peer
/// that shared a piece with a liar once or twice is not banned.
///
/// Keyed by address, not connection, so that reconnecting does not wipe the record.
/// The table is bounded: past `capacity` addresses, the entry with the fewest strikes
/// (oldest among equals) is forgotten, bans last; past `capacity` bans the oldest ban
/// goes. A hostile swarm can therefore only cost `capacity` entries of memory.
public struct HashStrikes<Address: Hashable> {
    public enum Verdict: Equatable, Sendable {
        /// Counted; this many strikes so far.
        case struck(Int)
        /// This strike reached the threshold: disconnect the peer and refuse it.
        case banned
        /// Banned already.
        case alreadyBanned
    }

    private struct Entry {
        var strikes: Int
        var banned: Bool
        var lastStruck: UInt64
    }

    public private(set) var threshold: Int
    public let capacity: Int
    private var entries: [Address: Entry] = [:]
    /// Orders entries for eviction without a clock.
    private var sequence: UInt64 = 0

    public init(threshold: Int = 3, capacity: Int = 4096) {
        self.threshold = max(1, threshold)
        self.capacity = max(1, capacity)
    }

    /// A threshold from a config reload. It applies from each peer's next strike, so a
    /// lower one bans nobody without new evidence; a higher one lifts no ban.
    public mutating func setThreshold(_ value: Int) {
        threshold = max(1, value)
    }

    public func isBanned(_ address: Address) -> Bool { entries[address]?.banned == true }
    public func strikes(of address: Address) -> Int { entries[address]?.strikes ?? 0 }
    public var bannedCount: Int { entries.values.count { $0.banned } }
    public var count: Int { entries.count }

    /// One failed piece that the peer at `address` contributed to.
    @discardableResult
    public mutating func strike(_ address: Address) -> Verdict {
        sequence += 1
        if var entry = entries[address] {
            guard !entry.banned else { return .alreadyBanned }
            entry.strikes += 1
            entry.lastStruck = sequence
            entry.banned = entry.strikes >= threshold
            entries[address] = entry
            return entry.banned ? .banned : .struck(entry.strikes)
        }
        if entries.count >= capacity { evictOne() }
        let entry = Entry(strikes: 1, banned: threshold <= 1, lastStruck: sequence)
        entries[address] = entry
        return entry.banned ? .banned : .struck(1)
    }

    /// Strikes each peer blamed for a failed piece (`PiecePicker.HashFailure.blamed`,
    /// mapped to addresses); returns those now banned.
    public mutating func pieceFailed(blamed: some Sequence<Address>) -> [Address] {
        var banned: [Address] = []
        for address in blamed where strike(address) == .banned { banned.append(address) }
        return banned
    }

    /// Lifts a ban or clears strikes (an operator's choice).
    public mutating func forgive(_ address: Address) {
        entries[address] = nil
    }

    private mutating func evictOne() {
        // Unbanned entries go first, fewest strikes then least recently struck; a
        // table full of bans gives up its oldest ban.
        let victim = entries.min { a, b in
            (a.value.banned ? 1 : 0, a.value.strikes, a.value.lastStruck) < (b.value.banned ? 1 : 0, b.value.strikes, b.value.lastStruck)
        }
        if let victim { entries[victim.key] = nil }
    }
}

extension HashStrikes: Sendable where Address: Sendable {}
