import BitTorrent
import EventLoop
import Logging
import Trackers

/// Announces every torrent to its trackers: one `TorrentAnnouncer` per torrent decides
/// where and with which event, the session-wide `AnnounceScheduler` caps how many
/// announces run at once and spreads the first ones out, and a transport per URL scheme
/// does the I/O. Peers from responses go to the peer server. Loop-owned.
final class TrackerService {
    struct Settings {
        var announceTimeout: Int32
        var stopDeadline: UInt64
        var numWant: Int
        var scheduler: AnnounceScheduler<InfoHash>.Configuration
    }

    /// What the service needs from the rest of the session for an announce.
    struct TorrentStats {
        var uploaded: Int64
        var downloaded: Int64
        var left: Int64
    }

    private final class Entry {
        let torrent: Torrent
        var announcer: TorrentAnnouncer
        /// The announce the scheduler holds for this torrent, waiting for a slot.
        var queued: (url: String, event: AnnounceEvent)?
        var inFlight: (url: String, event: AnnounceEvent, cancel: () -> Void)?
        var timer: Timer?
        var announcedOnce = false

        init(torrent: Torrent, announcer: TorrentAnnouncer) {
            self.torrent = torrent
            self.announcer = announcer
        }
    }

    private unowned let loop: EventLoop
    private let logger: Logger
    private var settings: Settings
    private let peerID: [UInt8]
    /// Same for the whole session (BEP 3 `key`): lets a tracker recognise us across an
    /// address change.
    private let key = UInt32.random(in: .min ... .max)
    private let http: HTTPTrackerTransport
    /// Nil when the UDP port could not be bound: udp:// trackers then fail over.
    var udp: UDPTrackerTransport?
    private var entries: [InfoHash: Entry] = [:]
    private var scheduler: AnnounceScheduler<InfoHash>
    private var schedulerTimer: Timer?
    private var random = SystemRandomNumberGenerator()
    private var stopping: (deadline: Timer, done: () -> Void)?
    /// After shutdown's `stopped` round: no torrent is announced again.
    private var stopped = false

    private(set) var announcesSucceeded: Int64 = 0
    private(set) var announcesFailed: Int64 = 0

    /// The port peers reach us on; set once the listener is bound.
    var port: UInt16 = 0
    var stats: (Torrent) -> TorrentStats = { _ in TorrentStats(uploaded: 0, downloaded: 0, left: 0) }
    var peersFound: (InfoHash, [SocketAddress]) -> Void = { _, _ in }

    init(loop: EventLoop, logger: Logger, settings: Settings, peerID: [UInt8]) {
        self.loop = loop
        self.logger = logger
        self.settings = settings
        self.peerID = peerID
        http = HTTPTrackerTransport(loop: loop)
        scheduler = AnnounceScheduler(configuration: settings.scheduler)
    }

    /// Starts announcing a torrent whose data has been checked.
    func add(_ torrent: Torrent) {
        guard stopping == nil, !stopped else { return }
        if let old = entries[torrent.infoHash] {
            guard old.torrent !== torrent else { return }
            // The same torrent removed and loaded again while its `stopped` is still out:
            // that announce is moot, and waiting for it would leave the torrent off its
            // trackers for good.
            forget(old, now: EventLoop.now())
        }
        let tiers = torrent.metainfo.trackerTiers
        guard !tiers.isEmpty else {
            logger.info("\(torrent.name) has no trackers; peers must find it some other way",
                        metadata: ["info_hash": "\(torrent.infoHash)"])
            return
        }
        let announcer = TorrentAnnouncer(tiers: tiers, startedComplete: torrent.have.isComplete, using: &random)
        let entry = Entry(torrent: torrent, announcer: announcer)
        entries[torrent.infoHash] = entry
        let now = EventLoop.now()
        handle(entry.announcer.start(now: now), for: entry, now: now)
    }

    /// The torrent finished downloading: its trackers get a `completed`.
    func completed(_ infoHash: InfoHash) {
        guard let entry = entries[infoHash], stopping == nil, !stopped else { return }
        let now = EventLoop.now()
        handle(entry.announcer.completed(now: now), for: entry, now: now)
    }

    /// Stops announcing a torrent: `stopped` to its tracker, without a deadline of its own
    /// (the HTTP timeout bounds it).
    func remove(_ infoHash: InfoHash) {
        guard let entry = entries[infoHash] else { return }
        let now = EventLoop.now()
        abandon(entry, now: now)
        let action = entry.announcer.stop(now: now)
        if case .announce = action {
            handle(action, for: entry, now: now)
        } else {
            forget(entry, now: now)
        }
    }

    /// Shutdown: `stopped` to every tracker that lists us, all within the deadline;
    /// `done` runs once they have all answered or the deadline passed.
    func stop(done: @escaping () -> Void) {
        guard stopping == nil, !stopped else { return done() }
        let now = EventLoop.now()
        let deadline = Timer(loop: loop, after: Int64(settings.stopDeadline)) { [unowned self] in
            let left = self.entries.values.filter { $0.inFlight != nil || $0.queued != nil }.count
            if left > 0 {
                self.logger.warning("gave up on \(left) `stopped` announces after \(self.settings.stopDeadline / 1_000_000) s")
            }
            self.finishStopping()
        }
        stopping = (deadline, done)
        for entry in Array(entries.values) {
            // A removed torrent's `stopped` is already queued or out: it counts against
            // the deadline like the others rather than being cancelled.
            if case .stopping = entry.announcer.state { continue }
            abandon(entry, now: now)
            let action = entry.announcer.stop(now: now)
            if case .announce = action {
                handle(action, for: entry, now: now)
            } else {
                forget(entry, now: now)
            }
        }
        if entries.isEmpty { finishStopping() }
    }

    private func finishStopping() {
        guard let (deadline, done) = stopping else { return }
        deadline.cancel()
        for entry in entries.values {
            entry.inFlight?.cancel()
            entry.inFlight = nil
            entry.timer = nil
        }
        entries.removeAll()
        schedulerTimer = nil
        stopping = nil
        stopped = true
        done()
    }

    /// A reloaded config's tracker settings; announces in flight keep their timeout.
    func update(announceTimeout: Int32, stopDeadline: UInt64, numWant: Int, scheduler configuration: AnnounceScheduler<InfoHash>.Configuration) {
        settings.announceTimeout = announceTimeout
        settings.stopDeadline = stopDeadline
        settings.numWant = numWant
        settings.scheduler = configuration
        scheduler.configuration = configuration
        runScheduler(now: EventLoop.now())
    }

    /// Every torrent's trackers, for status output.
    func trackers(of infoHash: InfoHash) -> [TrackerStatus] {
        entries[infoHash]?.announcer.trackers ?? []
    }

    // MARK: Announcer actions

    private func handle(_ action: TorrentAnnouncer.Action, for entry: Entry, now: UInt64) {
        switch action {
        case .announce(let url, let event):
            entry.timer = nil
            entry.queued = (url, event)
            scheduler.enqueue(entry.torrent.infoHash, event: event, now: now, using: &random)
            runScheduler(now: now)
        case .wait(let until):
            let delay = until > now ? until - now : 0
            entry.timer = Timer(loop: loop, after: Int64(delay)) { [unowned self, unowned entry] in
                let now = EventLoop.now()
                self.handle(entry.announcer.timerFired(now: now), for: entry, now: now)
            }
        case .none:
            if case .stopped = entry.announcer.state { forget(entry, now: now) }
        }
    }

    private func runScheduler(now: UInt64) {
        for infoHash in scheduler.nextReady(now: now) { send(infoHash, now: now) }
        armSchedulerTimer(now: now)
    }

    private func armSchedulerTimer(now: UInt64) {
        guard let deadline = scheduler.nextDeadline else {
            schedulerTimer = nil
            return
        }
        schedulerTimer = Timer(loop: loop, after: Int64(deadline > now ? deadline - now : 0)) { [unowned self] in
            self.runScheduler(now: EventLoop.now())
        }
    }

    private func send(_ infoHash: InfoHash, now: UInt64) {
        guard let entry = entries[infoHash], let (url, event) = entry.queued else {
            for next in scheduler.finished(infoHash, now: now) { send(next, now: now) }
            return
        }
        entry.queued = nil
        let stats = self.stats(entry.torrent)
        let request = AnnounceRequest(
            infoHash: infoHash, peerID: peerID, port: port,
            uploaded: stats.uploaded, downloaded: stats.downloaded, left: stats.left,
            event: event, numWant: event == .stopped ? 0 : settings.numWant, key: key,
            trackerID: entry.announcer.trackerID(for: url))
        logger.debug("announcing \(entry.torrent.name) to \(url)", metadata: ["event": "\(event)"])
        let completion: (Result<AnnounceResponse, TrackerError>) -> Void = { [unowned self, unowned entry] result in
            entry.inFlight = nil
            self.finished(entry, url: url, event: event, result: result)
        }
        // Completions always arrive on a later loop turn, so `inFlight` is set first.
        let cancel: () -> Void
        switch TrackerURL.scheme(of: url) {
        case "http", "https":
            cancel = http.announce(url: url, request: request, timeoutSeconds: settings.announceTimeout, completion: completion)
        case "udp" where udp != nil:
            cancel = udp!.announce(url: url, request: request, completion: completion)
        case let scheme:
            let problem = scheme == "udp" ? "no UDP socket (the UDP port could not be bound)" : "unsupported tracker URL scheme \(scheme ?? "(none)")"
            let failure = Timer(loop: loop, after: 0) { completion(.failure(.transport(problem))) }
            cancel = { failure.cancel() }
        }
        entry.inFlight = (url, event, cancel)
    }

    private func finished(_ entry: Entry, url: String, event: AnnounceEvent, result: Result<AnnounceResponse, TrackerError>) {
        let now = EventLoop.now()
        let infoHash = entry.torrent.infoHash
        let action: TorrentAnnouncer.Action
        switch result {
        case .success(let response):
            announcesSucceeded += 1
            let addresses = response.peers.compactMap { SocketAddress(ip: $0.ip.bytes, port: $0.port) }
            let metadata: Logger.Metadata = [
                "event": "\(event)", "peers": "\(addresses.count)",
                "seeders": "\(response.seeders.map(String.init) ?? "?")", "leechers": "\(response.leechers.map(String.init) ?? "?")",
                "interval": "\(response.interval)s",
            ]
            if event == .none && entry.announcedOnce {
                logger.debug("announced \(entry.torrent.name) to \(url)", metadata: metadata)
            } else {
                logger.info("announced \(entry.torrent.name) to \(url)", metadata: metadata)
            }
            entry.announcedOnce = true
            if let warning = response.warning {
                logger.warning("tracker \(url) warns about \(entry.torrent.name): \(warning)")
            }
            if event != .stopped && !addresses.isEmpty { peersFound(infoHash, addresses) }
            action = entry.announcer.announceSucceeded(url: url, response: response, now: now)
        case .failure(let error):
            announcesFailed += 1
            action = entry.announcer.announceFailed(url: url, error: error, now: now, using: &random)
            var metadata: Logger.Metadata = ["event": "\(event)"]
            if case .wait(let until) = action {
                metadata["retry_in"] = "\((until - min(until, now)) / 1_000_000)s"
            } else if case .announce(let next, _) = action {
                metadata["next"] = "\(next)"
            }
            logger.warning("announce of \(entry.torrent.name) to \(url) failed: \(error)", metadata: metadata)
        }
        for next in scheduler.finished(infoHash, now: now) { send(next, now: now) }
        handle(action, for: entry, now: now)
        armSchedulerTimer(now: now)
    }

    // MARK: Bookkeeping

    /// Drops what the torrent has queued or in flight; the announcer is told by the caller.
    private func abandon(_ entry: Entry, now: UInt64) {
        entry.timer = nil
        entry.queued = nil
        if let inFlight = entry.inFlight {
            inFlight.cancel()
            entry.inFlight = nil
        }
        for next in scheduler.remove(entry.torrent.infoHash, now: now) { send(next, now: now) }
    }

    private func forget(_ entry: Entry, now: UInt64) {
        abandon(entry, now: now)
        entries[entry.torrent.infoHash] = nil
        if stopping != nil && entries.isEmpty { finishStopping() }
    }
}

enum TrackerURL {
    /// The lower-cased scheme of a tracker URL, nil when it has none.
    static func scheme(of url: String) -> String? {
        guard let colon = url.firstIndex(of: ":"), colon > url.startIndex else { return nil }
        return url[..<colon].lowercased()
    }
}
