/// The session-wide queue every torrent's announces pass through, so that a thousand
/// torrents do not storm their trackers at once.
///
/// Two rules:
/// - At most `maxConcurrent` announces are in flight (trackers rate-limit by address,
///   and each announce holds a connection and, for HTTPS, a TLS handshake).
/// - A torrent's first announce waits a random 0 ... `firstAnnounceJitter`, so a
///   session that loads a thousand torrents at start-up spreads their `started`
///   announces over that window instead of queueing them all at the same instant.
///   `stopped` announces are never delayed (shutdown has a deadline), but they still
///   count against the cap.
///
/// Use: on `.announce` from a torrent's `TorrentAnnouncer`, `enqueue` its id; perform
/// the announces `nextReady` returns; report each end with `finished`, which hands
/// back the announces that may start now; arm one timer for `nextDeadline` and call
/// `nextReady` when it fires. A torrent has at most one entry waiting: enqueueing it
/// again keeps the earlier due time. When a torrent goes away (or `stop` needs no
/// announce while one is queued), `remove` it.
public struct AnnounceScheduler<ID: Hashable & Sendable>: Sendable {
    public struct Configuration: Hashable, Sendable {
        /// At least 1.
        public var maxConcurrent: Int
        /// Microseconds; the first announce of each torrent waits uniformly 0 ... this.
        public var firstAnnounceJitter: UInt64

        public init(maxConcurrent: Int = 8, firstAnnounceJitter: UInt64 = 10_000_000) {
            self.maxConcurrent = max(1, maxConcurrent)
            self.firstAnnounceJitter = firstAnnounceJitter
        }
    }

    private struct Entry: Hashable, Sendable {
        var readyAt: UInt64
        /// Ties on `readyAt` go first-come first-served.
        var sequence: UInt64
    }

    /// Changeable while running (a config reload): a lower cap lets the announces in
    /// flight finish and starts no new ones until under it.
    public var configuration: Configuration
    private var waiting: [ID: Entry] = [:]
    public private(set) var running: Set<ID> = []
    /// Torrents that already had their first announce queued (and its jitter).
    private var seen: Set<ID> = []
    private var sequence: UInt64 = 0

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    public var waitingCount: Int { waiting.count }

    /// When `id`'s queued announce is due; nil when none is queued.
    public func readyTime(of id: ID) -> UInt64? { waiting[id]?.readyAt }

    /// Queues an announce of `event` for torrent `id`. The first one of a torrent
    /// (unless it is `stopped`) gets the start-up jitter, drawn from `rng`.
    public mutating func enqueue(_ id: ID, event: AnnounceEvent, now: UInt64, using rng: inout some RandomNumberGenerator) {
        var readyAt = now
        if seen.insert(id).inserted && event != .stopped && configuration.firstAnnounceJitter > 0 {
            readyAt += UInt64.random(in: 0...configuration.firstAnnounceJitter, using: &rng)
        }
        if let existing = waiting[id] {
            waiting[id]!.readyAt = min(existing.readyAt, readyAt)
        } else {
            waiting[id] = Entry(readyAt: readyAt, sequence: sequence)
            sequence += 1
        }
    }

    /// The announces that may start now, earliest due first, up to the free slots;
    /// they count as running until `finished`.
    public mutating func nextReady(now: UInt64) -> [ID] {
        let free = configuration.maxConcurrent - running.count
        guard free > 0 else { return [] }
        let ready = waiting
            .filter { $0.value.readyAt <= now && !running.contains($0.key) }
            .sorted { ($0.value.readyAt, $0.value.sequence) < ($1.value.readyAt, $1.value.sequence) }
            .prefix(free)
            .map(\.key)
        for id in ready {
            waiting[id] = nil
            running.insert(id)
        }
        return ready
    }

    /// `id`'s announce ended (success, failure or abandoned); returns the announces
    /// that may start now in the freed slot.
    public mutating func finished(_ id: ID, now: UInt64) -> [ID] {
        running.remove(id)
        return nextReady(now: now)
    }

    /// Forgets `id`: its queued announce, its running slot, and that it had its first
    /// announce (a torrent added again gets the jitter again). Returns the announces
    /// that may start now.
    public mutating func remove(_ id: ID, now: UInt64) -> [ID] {
        waiting[id] = nil
        running.remove(id)
        seen.remove(id)
        return nextReady(now: now)
    }

    /// When to call `nextReady` next: the earliest queued announce that could start,
    /// or nil when nothing is queued or every slot is busy (then `finished` is what
    /// frees the queue). After `nextReady(now)` this is always later than `now`.
    public var nextDeadline: UInt64? {
        guard running.count < configuration.maxConcurrent else { return nil }
        return waiting.lazy.filter { !self.running.contains($0.key) }.map(\.value.readyAt).min()
    }
}
