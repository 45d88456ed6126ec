/// One torrent's announces to its trackers: which tracker, which event, and when.
///
/// A state machine in the swift-nio style: the caller feeds it events (start, the
/// download completing, stop, an announce's outcome, its timer firing) with the time,
/// and performs the action it returns: send an announce, (re)arm the torrent's timer,
/// or nothing. It never reads a clock or touches a socket, and it knows nothing of
/// peers: the caller takes those from the response it reports.
///
/// What it holds the trackers to:
/// - `started` goes to each tracker the first time we announce to it in a session,
///   including a tracker we fail over to, since that tracker does not list us yet
///   (BEP 3).
/// - Then a regular announce (no event) every `interval` of the last response.
/// - `completed` is sent once, when the download finishes, as an early announce that
///   still waits for the tracker's `min interval`; never by a torrent that was
///   complete when it started (trackers count it as a download).
/// - `stopped` goes on shutdown to the tracker that last answered, and only if some
///   tracker accepted a `started`: otherwise no tracker lists us.
/// - On a failure the next tracker is tried at once (BEP 12); after a whole round of
///   every tier failed, the next round waits per `AnnounceBackoff`.
///
/// Each report names the tracker URL; a report that does not match the announce in
/// flight (a late answer the caller failed to cancel) is ignored. When `stop` returns
/// an announce while another was in flight, the caller abandons the one in flight.
public struct TorrentAnnouncer: Sendable {
    public enum Action: Hashable, Sendable {
        /// Send this announce now, then report `announceSucceeded` or `announceFailed`.
        case announce(url: String, event: AnnounceEvent)
        /// Arm the torrent's timer (replacing any earlier one) and call `timerFired`.
        case wait(until: UInt64)
        /// Nothing new to do.
        case none
    }

    public enum State: Hashable, Sendable {
        /// Not started, or no trackers at all.
        case idle
        case announcing(url: String, event: AnnounceEvent)
        /// The next regular (or early `completed`) announce is due at `until`.
        case waiting(until: UInt64)
        /// A whole round failed; the next round starts at `until`.
        case backingOff(until: UInt64)
        /// The `stopped` announce is in flight.
        case stopping(url: String)
        case stopped
    }

    public private(set) var state: State = .idle
    public private(set) var tiers: AnnounceTiers
    public let startedComplete: Bool
    public let backoff: AnnounceBackoff
    /// The download finished and `completed` is owed to a tracker.
    public private(set) var completedPending = false
    /// A tracker accepted our `completed`.
    public private(set) var completedSent = false
    /// The tracker that answered last, where `stopped` goes.
    public private(set) var lastSucceeded: String?

    private var records: [String: TrackerStatus] = [:]
    /// Earliest time an early announce may go out: the last success plus its
    /// `min interval`.
    private var earliestEarlyAnnounce: UInt64 = 0

    /// - Parameters:
    ///   - tiers: BEP 12 `announce-list` (or `[[announce]]`); shuffled here, once.
    ///   - startedComplete: the torrent was complete when it started, so it never
    ///     sends `completed`.
    public init(
        tiers: [[String]], startedComplete: Bool, backoff: AnnounceBackoff = AnnounceBackoff(),
        using rng: inout some RandomNumberGenerator
    ) {
        self.init(tiers: AnnounceTiers(tiers, using: &rng), startedComplete: startedComplete, backoff: backoff)
    }

    public init(tiers: AnnounceTiers, startedComplete: Bool, backoff: AnnounceBackoff = AnnounceBackoff()) {
        self.tiers = tiers
        self.startedComplete = startedComplete
        self.backoff = backoff
        for (tier, urls) in tiers.tiers.enumerated() {
            for url in urls { records[url] = TrackerStatus(url: url, tier: tier) }
        }
    }

    // MARK: Events

    /// The torrent starts (or starts again after `stop`): `started` to the first tracker.
    public mutating func start(now: UInt64) -> Action {
        switch state {
        case .idle, .stopped:
            if state == .stopped {
                // A new session: every tracker has forgotten us, or will.
                for url in records.keys { records[url]!.started = false }
                lastSucceeded = nil
                earliestEarlyAnnounce = 0
            }
            return announceCurrent()
        case .announcing, .waiting, .backingOff, .stopping:
            return .none
        }
    }

    /// The download finished. Owes the trackers one `completed`, sent as soon as the
    /// last response's `min interval` allows (at once when it gave none), unless the
    /// torrent started complete or already sent it. During a backoff or an announce in
    /// flight it rides on the next announce instead.
    public mutating func completed(now: UInt64) -> Action {
        guard !startedComplete, !completedSent, !completedPending else { return .none }
        completedPending = true
        guard case .waiting(let until) = state else { return .none }
        let earliest = max(now, earliestEarlyAnnounce)
        if earliest <= now { return announceCurrent() }
        guard earliest < until else { return .none }
        state = .waiting(until: earliest)
        return .wait(until: earliest)
    }

    /// Shutdown: `stopped` to the tracker that last answered, if any tracker accepted a
    /// `started`. The caller abandons any announce in flight, and gives this one a
    /// deadline (a slow tracker must not hold shutdown), reporting a failure on expiry.
    public mutating func stop(now: UInt64) -> Action {
        switch state {
        case .idle, .stopped, .stopping:
            return .none
        case .announcing, .waiting, .backingOff:
            guard let url = lastSucceeded, records[url]?.started == true else {
                finishSession()
                return .none
            }
            state = .stopping(url: url)
            return .announce(url: url, event: .stopped)
        }
    }

    public mutating func announceSucceeded(url: String, response: AnnounceResponse, now: UInt64) -> Action {
        switch state {
        case .announcing(let inFlight, let event) where inFlight == url:
            record(success: response, url: url, now: now)
            records[url]!.started = true
            if event == .completed {
                completedPending = false
                completedSent = true
            }
            tiers.succeeded(url)
            lastSucceeded = url
            earliestEarlyAnnounce = now + Self.micros(response.minInterval ?? 0)
            var next = now + Self.micros(response.interval)
            if completedPending { next = min(next, earliestEarlyAnnounce) }
            if next <= now { return announceCurrent() }
            state = .waiting(until: next)
            return .wait(until: next)
        case .stopping(let target) where target == url:
            record(success: response, url: url, now: now)
            finishSession()
            return .none
        default:
            return .none
        }
    }

    /// The announce failed (transport, HTTP status, `failure reason`, unreadable
    /// response). Fails over to the next tracker at once; after a whole failed round,
    /// waits per `backoff`, with jitter drawn from `rng`.
    public mutating func announceFailed(
        url: String, error: TrackerError, now: UInt64, using rng: inout some RandomNumberGenerator
    ) -> Action {
        switch state {
        case .announcing(let inFlight, _) where inFlight == url:
            record(failure: error, url: url, now: now)
            guard tiers.failed(url) else { return announceCurrent() }
            let until = now + backoff.delay(afterFailedRounds: tiers.consecutiveFailedRounds, using: &rng)
            state = .backingOff(until: until)
            return .wait(until: until)
        case .stopping(let target) where target == url:
            record(failure: error, url: url, now: now)
            finishSession()
            return .none
        default:
            return .none
        }
    }

    /// The timer armed by a `.wait` fired. An early call re-arms it.
    public mutating func timerFired(now: UInt64) -> Action {
        switch state {
        case .waiting(let until), .backingOff(let until):
            guard now >= until else { return .wait(until: until) }
            return announceCurrent()
        case .idle, .announcing, .stopping, .stopped:
            return .none
        }
    }

    // MARK: Status

    /// Every tracker in the order it would be tried, with when it is due next.
    public var trackers: [TrackerStatus] {
        tiers.allTrackers.map { status(of: $0)! }
    }

    public func status(of url: String) -> TrackerStatus? {
        guard var status = records[url] else { return nil }
        status.isAnnouncing = false
        status.nextAnnounce = nil
        switch state {
        case .announcing(let inFlight, _): status.isAnnouncing = inFlight == url
        case .stopping(let inFlight): status.isAnnouncing = inFlight == url
        case .waiting(let until), .backingOff(let until): if tiers.current == url { status.nextAnnounce = until }
        case .idle, .stopped: break
        }
        return status
    }

    /// The `tracker id` to send to `url` (BEP 3), if it gave us one.
    public func trackerID(for url: String) -> String? {
        records[url]?.trackerID
    }

    /// When the next announce is due, if one is scheduled.
    public var nextAnnounce: UInt64? {
        switch state {
        case .waiting(let until), .backingOff(let until): return until
        default: return nil
        }
    }

    // MARK: Internals

    /// `started` for a tracker that does not list us yet, else `completed` when owed,
    /// else a regular announce.
    private func event(for url: String) -> AnnounceEvent {
        if records[url]?.started != true { return .started }
        return completedPending ? .completed : .none
    }

    private mutating func announceCurrent() -> Action {
        guard let url = tiers.current else {
            state = .idle
            return .none
        }
        let event = event(for: url)
        state = .announcing(url: url, event: event)
        return .announce(url: url, event: event)
    }

    private mutating func finishSession() {
        state = .stopped
        for url in records.keys { records[url]!.started = false }
    }

    private mutating func record(success response: AnnounceResponse, url: String, now: UInt64) {
        guard var status = records[url] else { return }
        status.lastSuccess = now
        status.consecutiveFailures = 0
        status.seeders = response.seeders
        status.leechers = response.leechers
        status.warning = response.warning
        status.interval = response.interval
        status.minInterval = response.minInterval
        if let trackerID = response.trackerID { status.trackerID = trackerID }
        records[url] = status
    }

    private mutating func record(failure error: TrackerError, url: String, now: UInt64) {
        guard var status = records[url] else { return }
        status.lastFailure = now
        status.lastError = error.description
        status.consecutiveFailures += 1
        records[url] = status
    }

    private static func micros(_ seconds: Int) -> UInt64 {
        UInt64(max(0, seconds)) * 1_000_000
    }
}
