import BitTorrent
import Trackers

/// The client side of BEP 15 for one tracker endpoint (address and port), shared by every
/// torrent that announces or scrapes there.
///
/// A state machine in the swift-nio style, like `TorrentAnnouncer`: the caller feeds it
/// events (a request to send, a datagram that arrived, its timer firing) with the time,
/// and performs the actions it returns, in order. It never reads a clock, touches a
/// socket or draws randomness of its own, so every schedule below is testable with a
/// simulated clock.
///
/// How a caller drives it:
/// - `announce(id:request:urlData:now:using:)` and `scrape(id:infoHashes:now:using:)`
///   queue a request under a caller-chosen id; `cancel(id:now:)` drops one (its outcome
///   is never reported).
/// - Every datagram from the UDP socket that looks like a tracker reply (byte 0 is 0:
///   see protocol-notes.md) goes to `receive(_:from:now:)` of the client for that source;
///   the machine itself ignores datagrams from any address but its endpoint.
/// - `.setTimer(at)` arms the caller's one timer for this client (replacing the previous
///   one; nil disarms it). When it fires, call `timerFired(now:using:)`.
/// - `.send(bytes)` goes to `endpoint`. Each request ends in exactly one
///   `.announceSucceeded`/`.announceFailed` or `.scrapeSucceeded`/`.scrapeFailed`
///   (unless cancelled). A failed announce goes to `TorrentAnnouncer.announceFailed`,
///   which fails over to the next tracker of the tier.
/// - `transportFailed(_:now:)` when the socket refuses to send to the endpoint
///   (unreachable network): every pending request fails with that error.
///
/// What it holds to:
/// - **One connection id for everyone.** A connect exchange runs only when a request
///   needs a connection id and there is no fresh one; every request queued meanwhile
///   waits for the same exchange and goes out the moment its reply arrives. The id is
///   used until `connectionIDLifetime` (60 s, BEP 15: "until one minute after it has
///   received it") after its reply arrived; a request (or a retransmission) after that
///   reconnects first.
/// - **Transaction ids** are random (an off-path attacker must not guess them), unique
///   among this endpoint's outstanding exchanges, and kept for all retransmissions of
///   one exchange, so a slow reply to an earlier copy still counts. A reply must carry a
///   transaction id we are waiting for and come from the endpoint, or it is ignored
///   (a late duplicate, a stranger's guess); one that passes must then carry the action
///   we asked for or the error action.
/// - **Retransmission**, per request datagram (see `Configuration`): attempt n waits
///   15 * 2^n s for its reply (BEP 15), then the next attempt starts. A request fails
///   when attempt `maxRetries` times out as well: with the default 2, datagrams go out
///   at 0 s, 15 s and 45 s and the request fails at 105 s. Time spent waiting for a
///   connection id counts: the schedule runs from when the request was queued, whatever
///   was sent, so a dead tracker fails every request `failureTimeout` after it was
///   queued (later only by however late the caller's timer fires), and the torrent's
///   tier moves on then.
/// - A connect goes out when a request's attempt (its first, or a retransmission) needs
///   a connection id, unless another request sent one less than 15 s before: each attempt
///   is covered by a connect at most 15 s old, at most one connect goes out per 15 s
///   however many torrents wait, and a tracker that comes back is reached on the next
///   attempt of any request. The connect exchange (and its transaction id) is dropped
///   when no request waits for it any more.
/// - **Errors fail at once, without retrying**: an error reply (action 3), opentracker's
///   8-byte announce reply (an info-hash not on its whitelist), or a reply with our
///   transaction id that is too short or carries the wrong action. Retrying would get
///   the same answer; failing lets the announcer try the next tracker now.
/// - **Scrapes** are split into datagrams of at most 74 info-hashes (BEP 15's limit),
///   each with its own transaction id and retransmissions; the request succeeds with
///   every hash's counts in request order, or fails on the first part that fails.
public struct UDPTrackerClient: Sendable {
    public typealias RequestID = UInt64

    /// Operator-tunable timing. The retransmit schedule itself (15 * 2^n s, n capped
    /// at 8) is BEP 15's and not tunable.
    public struct Configuration: Hashable, Sendable {
        /// The first timeout; attempt n waits `baseTimeout << n`.
        public static let baseTimeout: UInt64 = 15_000_000
        /// BEP 15 stops doubling at n = 8 (3840 s).
        public static let maxDoublings = 8

        /// Retransmissions before a request fails, 0...8. The default 2 fails over
        /// after the second retransmission times out: datagrams at 0, 15 and 45 s,
        /// failure at 105 s. BEP 15's full schedule (8) would keep a torrent on a dead
        /// tracker for over two hours before its tier moves on. Values outside 0...8
        /// are clamped.
        public var maxRetries: Int {
            get { clampedMaxRetries }
            set { clampedMaxRetries = min(max(newValue, 0), Self.maxDoublings) }
        }
        private var clampedMaxRetries = 2
        /// Microseconds a connection id is used after its connect reply arrived.
        public var connectionIDLifetime: UInt64

        public init(maxRetries: Int = 2, connectionIDLifetime: UInt64 = 60_000_000) {
            self.connectionIDLifetime = connectionIDLifetime
            self.maxRetries = maxRetries
        }

        /// How long attempt `attempt` (0 first) waits for its reply.
        public func timeout(attempt: Int) -> UInt64 {
            Self.baseTimeout << UInt64(min(max(attempt, 0), Self.maxDoublings))
        }

        /// From queuing a request to its failure when the tracker never answers: the sum
        /// of the timeouts of attempts 0...maxRetries (105 s by default).
        public var failureTimeout: UInt64 {
            (0...maxRetries).reduce(0) { $0 + timeout(attempt: $1) }
        }
    }

    public enum Action: Equatable, Sendable {
        /// Send this datagram to `endpoint`.
        case send([UInt8])
        case announceSucceeded(id: RequestID, response: AnnounceResponse)
        case announceFailed(id: RequestID, error: TrackerError)
        /// Counts for every requested info-hash, in request order.
        case scrapeSucceeded(id: RequestID, results: [UDPScrapeResult])
        case scrapeFailed(id: RequestID, error: TrackerError)
        /// Arm this client's timer for `at` (monotonic µs), replacing any earlier one;
        /// nil: nothing is pending, disarm it. The last action of every call that
        /// changed anything.
        case setTimer(at: UInt64?)
    }

    /// The connection id exchange.
    public enum State: Hashable, Sendable {
        /// No connection id and no connect in flight.
        case idle
        /// A connect request is out, the last copy sent at `lastSent`. Its transaction id
        /// stays the same for every copy, so a reply to any of them counts.
        case connecting(transactionID: UInt32, lastSent: UInt64)
        /// A connection id, usable until `expires`.
        case connected(connectionID: UInt64, expires: UInt64)
    }

    public let endpoint: PeerAddress
    /// Changeable while running (a config reload): a request in flight keeps the
    /// deadline of its current attempt, and the new `maxRetries` decides what follows.
    public var configuration: Configuration
    public private(set) var state: State = .idle

    private enum Payload: Sendable {
        case announce(AnnounceRequest, urlData: [UInt8])
        case scrape([InfoHash])
    }

    /// One request datagram and its retransmissions: an announce, or one part of a
    /// scrape.
    private struct Exchange: Sendable {
        let requestID: RequestID
        /// Which part of a scrape; 0 for an announce.
        let part: Int
        let transactionID: UInt32
        let payload: Payload
        /// Queue order, so actions come out in the order requests were made.
        let sequence: UInt64
        /// 0 for the first attempt.
        var attempt: Int
        /// When the current attempt times out.
        var deadline: UInt64
        /// The current attempt waits for a connection id before its datagram can go.
        var awaitingConnection: Bool
        /// A datagram went out at least once, so a reply to it can arrive.
        var sent: Bool
    }

    private struct Request: Sendable {
        let isScrape: Bool
        var transactionIDs: [UInt32]
        /// Scrape parts answered so far, by part.
        var scrapeParts: [[UDPScrapeResult]?]
    }

    private var exchanges: [UInt32: Exchange] = [:]
    private var requests: [RequestID: Request] = [:]
    private var nextSequence: UInt64 = 0

    /// `endpoint` is the resolved tracker address; IPv4-mapped IPv6 is treated as IPv4.
    public init(endpoint: PeerAddress, configuration: Configuration = Configuration()) {
        self.endpoint = Self.canonical(endpoint)
        self.configuration = configuration
    }

    // MARK: Status

    /// Requests queued or in flight.
    public var pendingRequestCount: Int { requests.count }

    public func isPending(_ id: RequestID) -> Bool { requests[id] != nil }

    /// The usable connection id at `now`, if any.
    public func connectionID(now: UInt64) -> UInt64? {
        if case .connected(let id, let expires) = state, now < expires { return id }
        return nil
    }

    /// When the timer should fire next; nil when nothing is pending.
    public var nextDeadline: UInt64? {
        exchanges.values.lazy.map(\.deadline).min()
    }

    // MARK: Events

    /// Queues an announce. `urlData` is the tracker URL's `path?query`
    /// (`UDPTrackerURL.urlData`), sent as BEP 41 options. An `id` still pending is
    /// cancelled first.
    public mutating func announce(
        id: RequestID, request: AnnounceRequest, urlData: some Collection<UInt8> = [UInt8](), now: UInt64,
        using rng: inout some RandomNumberGenerator
    ) -> [Action] {
        var actions: [Action] = []
        drop(id)
        requests[id] = Request(isScrape: false, transactionIDs: [], scrapeParts: [])
        queue(id: id, part: 0, payload: .announce(request, urlData: Array(urlData)), now: now, rng: &rng, actions: &actions)
        return finish(actions, now: now)
    }

    /// Queues a scrape of `infoHashes`, any number, sent in datagrams of at most 74.
    /// An empty list succeeds at once. An `id` still pending is cancelled first.
    public mutating func scrape(
        id: RequestID, infoHashes: [InfoHash], now: UInt64, using rng: inout some RandomNumberGenerator
    ) -> [Action] {
        var actions: [Action] = []
        drop(id)
        guard !infoHashes.isEmpty else {
            actions.append(.scrapeSucceeded(id: id, results: []))
            return finish(actions, now: now)
        }
        let limit = UDPTrackerMessage.maxScrapeHashes
        let parts = stride(from: 0, to: infoHashes.count, by: limit).map {
            Array(infoHashes[$0..<min($0 + limit, infoHashes.count)])
        }
        requests[id] = Request(isScrape: true, transactionIDs: [], scrapeParts: Array(repeating: nil, count: parts.count))
        for (index, part) in parts.enumerated() {
            queue(id: id, part: index, payload: .scrape(part), now: now, rng: &rng, actions: &actions)
        }
        return finish(actions, now: now)
    }

    /// Drops a request; its outcome is never reported, and a late reply is ignored.
    public mutating func cancel(id: RequestID, now: UInt64) -> [Action] {
        drop(id)
        return finish([], now: now)
    }

    /// Sending to the endpoint failed (the caller's socket said the network or host is
    /// unreachable, or it has no socket of the endpoint's family): every pending request
    /// fails with `error`, and the connection state is forgotten.
    public mutating func transportFailed(_ error: TrackerError, now: UInt64) -> [Action] {
        var actions: [Action] = []
        let ids = requests.keys.sorted { firstSequence(of: $0) < firstSequence(of: $1) }
        for id in ids { fail(id, error, actions: &actions) }
        state = .idle
        return finish(actions, now: now)
    }

    /// A datagram arrived from `source`. Returns no actions at all when it is not for
    /// this client: from another address, shorter than a reply header, or with a
    /// transaction id we are not waiting for.
    public mutating func receive(_ datagram: UnsafeRawBufferPointer, from source: PeerAddress, now: UInt64) -> [Action] {
        guard Self.canonical(source) == endpoint,
              let (action, transactionID) = UDPTrackerMessage.replyHeader(datagram) else { return [] }
        var actions: [Action] = []
        if case .connecting(let connectTransaction, _) = state, transactionID == connectTransaction {
            receiveConnectReply(datagram, action: action, now: now, actions: &actions)
        } else if let exchange = exchanges[transactionID], exchange.sent {
            receiveReply(datagram, action: action, exchange: exchange, actions: &actions)
        } else {
            return []
        }
        return finish(actions, now: now)
    }

    public mutating func receive(_ datagram: [UInt8], from source: PeerAddress, now: UInt64) -> [Action] {
        datagram.withUnsafeBytes { receive($0, from: source, now: now) }
    }

    /// The timer armed by `.setTimer` fired (early or late is fine: only what is due at
    /// `now` happens). Attempts that timed out start their next attempt, measured from
    /// `now`, or fail.
    public mutating func timerFired(now: UInt64, using rng: inout some RandomNumberGenerator) -> [Action] {
        var actions: [Action] = []
        let due = exchanges.values.filter { $0.deadline <= now }.sorted { $0.sequence < $1.sequence }
        for timedOut in due {
            // An earlier failure of the same request may have removed this one.
            guard var exchange = exchanges[timedOut.transactionID] else { continue }
            exchange.attempt += 1
            guard exchange.attempt <= configuration.maxRetries else {
                let seconds = configuration.failureTimeout / 1_000_000
                fail(exchange.requestID, .transport(
                    "no reply from the UDP tracker at \(endpoint) in \(seconds) s (\(exchange.attempt) attempts)"
                ), actions: &actions)
                continue
            }
            exchange.deadline = now + configuration.timeout(attempt: exchange.attempt)
            exchanges[exchange.transactionID] = exchange
            startAttempt(exchange.transactionID, now: now, rng: &rng, actions: &actions)
        }
        return finish(actions, now: now)
    }

    // MARK: Internals

    private mutating func queue(
        id: RequestID, part: Int, payload: Payload, now: UInt64, rng: inout some RandomNumberGenerator, actions: inout [Action]
    ) {
        let transactionID = freshTransactionID(using: &rng)
        exchanges[transactionID] = Exchange(
            requestID: id, part: part, transactionID: transactionID, payload: payload, sequence: nextSequence,
            attempt: 0, deadline: now + configuration.timeout(attempt: 0), awaitingConnection: false, sent: false
        )
        nextSequence += 1
        requests[id]?.transactionIDs.append(transactionID)
        startAttempt(transactionID, now: now, rng: &rng, actions: &actions)
    }

    /// Sends the exchange's datagram if a connection id is fresh, else makes it wait
    /// for one, sending a connect unless another went out less than 15 s ago.
    private mutating func startAttempt(
        _ transactionID: UInt32, now: UInt64, rng: inout some RandomNumberGenerator, actions: inout [Action]
    ) {
        guard var exchange = exchanges[transactionID] else { return }
        if let connectionID = connectionID(now: now) {
            exchange.awaitingConnection = false
            exchange.sent = true
            actions.append(.send(packet(for: exchange, connectionID: connectionID)))
        } else {
            exchange.awaitingConnection = true
            switch state {
            case .connecting(let connectTransaction, let lastSent):
                if now >= lastSent + Configuration.baseTimeout {
                    state = .connecting(transactionID: connectTransaction, lastSent: now)
                    actions.append(.send(UDPTrackerMessage.connectRequest(transactionID: connectTransaction)))
                }
            case .idle, .connected:
                let connectTransaction = freshTransactionID(using: &rng)
                state = .connecting(transactionID: connectTransaction, lastSent: now)
                actions.append(.send(UDPTrackerMessage.connectRequest(transactionID: connectTransaction)))
            }
        }
        exchanges[transactionID] = exchange
    }

    private mutating func receiveConnectReply(_ datagram: UnsafeRawBufferPointer, action: UInt32, now: UInt64, actions: inout [Action]) {
        let result: Result<UInt64, TrackerError>
        switch UDPTrackerMessage.Action(rawValue: action) {
        case .connect: result = UDPTrackerMessage.parseConnectReply(datagram)
        case .error: result = .failure(.failure(reason: UDPTrackerMessage.parseErrorReply(datagram)))
        default: result = .failure(UDPTrackerMessage.invalid("action \(action) in reply to connect"))
        }
        let waiting = exchanges.values.filter(\.awaitingConnection).sorted { $0.sequence < $1.sequence }
        switch result {
        case .success(let connectionID):
            let (expires, overflow) = now.addingReportingOverflow(configuration.connectionIDLifetime)
            state = .connected(connectionID: connectionID, expires: overflow ? .max : expires)
            // Everyone who waited goes now; their attempt deadlines stay where they were,
            // so the failure time stays `failureTimeout` after queuing.
            for var exchange in waiting {
                exchange.awaitingConnection = false
                exchange.sent = true
                exchanges[exchange.transactionID] = exchange
                actions.append(.send(packet(for: exchange, connectionID: connectionID)))
            }
        case .failure(let error):
            state = .idle
            for exchange in waiting { fail(exchange.requestID, error, actions: &actions) }
        }
    }

    private mutating func receiveReply(_ datagram: UnsafeRawBufferPointer, action: UInt32, exchange: Exchange, actions: inout [Action]) {
        let id = exchange.requestID
        let ipv6: Bool = if case .v6 = endpoint.ip { true } else { false }
        switch (UDPTrackerMessage.Action(rawValue: action), exchange.payload) {
        case (.error, _):
            fail(id, .failure(reason: UDPTrackerMessage.parseErrorReply(datagram)), actions: &actions)
        case (.announce, .announce):
            switch UDPTrackerMessage.parseAnnounceReply(datagram, ipv6: ipv6) {
            case .success(let response):
                drop(id)
                actions.append(.announceSucceeded(id: id, response: response))
            case .failure(let error):
                fail(id, error, actions: &actions)
            }
        case (.scrape, .scrape(let hashes)):
            switch UDPTrackerMessage.parseScrapeReply(datagram, infoHashes: hashes) {
            case .success(let results):
                exchanges[exchange.transactionID] = nil
                guard var request = requests[id], exchange.part < request.scrapeParts.count else { return }
                request.scrapeParts[exchange.part] = results
                if request.scrapeParts.allSatisfy({ $0 != nil }) {
                    drop(id)
                    actions.append(.scrapeSucceeded(id: id, results: request.scrapeParts.flatMap { $0 ?? [] }))
                } else {
                    requests[id] = request
                }
            case .failure(let error):
                fail(id, error, actions: &actions)
            }
        default:
            let expected = if case .announce = exchange.payload { "announce" } else { "scrape" }
            fail(id, UDPTrackerMessage.invalid("action \(action) in reply to \(expected)"), actions: &actions)
        }
    }

    private func packet(for exchange: Exchange, connectionID: UInt64) -> [UInt8] {
        switch exchange.payload {
        case .announce(let request, let urlData):
            return UDPTrackerMessage.announceRequest(
                connectionID: connectionID, transactionID: exchange.transactionID, request: request, urlData: urlData)
        case .scrape(let hashes):
            return UDPTrackerMessage.scrapeRequest(connectionID: connectionID, transactionID: exchange.transactionID, infoHashes: hashes)
        }
    }

    /// Reports the request failed (once) and forgets it.
    private mutating func fail(_ id: RequestID, _ error: TrackerError, actions: inout [Action]) {
        guard let request = requests[id] else { return }
        drop(id)
        actions.append(request.isScrape ? .scrapeFailed(id: id, error: error) : .announceFailed(id: id, error: error))
    }

    private mutating func drop(_ id: RequestID) {
        guard let request = requests.removeValue(forKey: id) else { return }
        for transactionID in request.transactionIDs { exchanges[transactionID] = nil }
    }

    /// Drops a connect exchange nobody waits for any more, then reports the timer.
    private mutating func finish(_ actions: [Action], now: UInt64) -> [Action] {
        if case .connecting = state, !exchanges.values.contains(where: \.awaitingConnection) {
            state = .idle
        }
        return actions + [.setTimer(at: nextDeadline)]
    }

    private func firstSequence(of id: RequestID) -> UInt64 {
        requests[id]?.transactionIDs.compactMap { exchanges[$0]?.sequence }.min() ?? .max
    }

    /// A random transaction id no outstanding exchange (or the connect) uses. One draw,
    /// then the next free value: terminates whatever the generator returns.
    private func freshTransactionID(using rng: inout some RandomNumberGenerator) -> UInt32 {
        var candidate = UInt32(truncatingIfNeeded: rng.next())
        while exchanges[candidate] != nil || isConnectTransaction(candidate) { candidate &+= 1 }
        return candidate
    }

    private func isConnectTransaction(_ transactionID: UInt32) -> Bool {
        if case .connecting(let connectTransaction, _) = state { return connectTransaction == transactionID }
        return false
    }

    /// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) as plain IPv4: the same tracker whichever
    /// socket its reply came in on.
    static func canonical(_ address: PeerAddress) -> PeerAddress {
        if case .v6(let value) = address.ip, value >> 32 == 0xFFFF {
            return PeerAddress(ip: .v4(UInt32(truncatingIfNeeded: value)), port: address.port)
        }
        return address
    }
}
