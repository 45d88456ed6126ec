import BitTorrent
import EventLoop
import Glibc
import Logging
import Synchronization

/// The running server: loads torrents, checks their data on the disk pool one torrent
/// at a time (each check uses every disk thread), and serves them. Loop-owned.
public final class Session {
    public let config: SeederConfig
    private let loop: EventLoop
    private let pool: DiskPool
    private let cache: FileHandleCache
    private let logger: Logger
    public private(set) var torrents: [InfoHash: Torrent] = [:]
    private var checkQueue: [Torrent] = []
    private var checking: (torrent: Torrent, progress: CheckProgress, started: UInt64)?
    private var progressTimer: Timer?
    private var signals: [SignalWatcher] = []
    private var stopping = false
    private var peers: PeerServer?
    private var trackers: TrackerService?
    public let peerID = PeerID.generate()

    /// Called on the loop once every queued torrent has been checked.
    public var onAllChecked: (() -> Void)?

    public init(config: SeederConfig, loop: EventLoop, logger: Logger) {
        self.config = config
        self.loop = loop
        self.logger = logger
        pool = DiskPool(threads: config.diskThreads)
        cache = FileHandleCache(capacity: config.maxOpenFiles)
    }

    /// Parses and queues the torrents; a bad torrent file is logged and skipped.
    public func add(sources: [TorrentSource]) {
        for source in sources { add(source) }
        startNextCheck()
    }

    @discardableResult
    public func add(_ source: TorrentSource) -> Torrent? {
        let bytes: [UInt8]
        switch Self.readFile(source.file) {
        case .success(let data): bytes = data
        case .failure(let problem):
            logger.error("cannot load torrent: \(problem)", metadata: ["file": "\(source.file)"])
            return nil
        }
        let metainfo: Metainfo
        do {
            metainfo = try Metainfo(bytes: bytes)
        } catch {
            logger.error("refused torrent: \(error)", metadata: ["file": "\(source.file)"])
            return nil
        }
        for warning in metainfo.warnings {
            logger.warning("torrent \(metainfo.name): \(warning)", metadata: ["file": "\(source.file)"])
        }
        if let existing = torrents[metainfo.infoHash] {
            logger.warning("torrent \(metainfo.name) is already loaded from \(existing.sourceFile); ignoring the copy",
                           metadata: ["file": "\(source.file)", "info_hash": "\(metainfo.infoHash)"])
            return nil
        }
        let torrent = Torrent(metainfo: metainfo, sourceFile: source.file, dataDirectory: source.dataDirectory, cache: cache)
        torrents[metainfo.infoHash] = torrent
        checkQueue.append(torrent)
        logger.info("loaded \(metainfo.name)", metadata: [
            "info_hash": "\(metainfo.infoHash)", "size": "\(ByteUnits.format(metainfo.totalLength))",
            "pieces": "\(metainfo.pieceCount)", "data": "\(source.dataDirectory)",
        ])
        return torrent
    }

    /// Listens for peers and installs the signal handlers; SIGINT and SIGTERM stop.
    public func start() throws(SessionError) {
        signal(SIGPIPE, SIG_IGN)
        let server = PeerServer(config: config, loop: loop, pool: pool, logger: logger, peerID: peerID)
        do {
            try server.start()
        } catch {
            throw SessionError(description: error.description)
        }
        peers = server
        let trackers = TrackerService(loop: loop, logger: logger, settings: TrackerService.Settings(
            announceTimeout: Int32(config.announceTimeout),
            stopDeadline: UInt64(config.stopTimeout) * 1_000_000,
            numWant: config.numWant,
            scheduler: .init(maxConcurrent: config.maxConcurrentAnnounces, firstAnnounceJitter: UInt64(config.announceJitter) * 1_000_000)
        ), peerID: peerID)
        trackers.port = server.listeningPort
        trackers.stats = { [unowned server] torrent in
            TrackerService.TorrentStats(uploaded: server.swarm(for: torrent.infoHash)?.uploadedBytes ?? 0, downloaded: 0,
                                        left: torrent.metainfo.totalLength - torrent.bytesHave)
        }
        trackers.peersFound = { [unowned server] infoHash, addresses in server.addCandidates(addresses, for: infoHash) }
        self.trackers = trackers
        for torrent in torrents.values where torrent.state == .seeding { serve(torrent) }
        for number in [SIGINT, SIGTERM] {
            signals.append(SignalWatcher(loop: loop, signal: number) { [unowned self] in
                self.logger.info("received \(number == SIGINT ? "SIGINT" : "SIGTERM"), stopping")
                self.stop()
            })
        }
        signals.append(SignalWatcher(loop: loop, signal: SIGHUP) { [unowned self] in
            self.logger.warning("received SIGHUP: live reload is not implemented in this version; restart to apply config changes")
        })
        progressTimer = Timer(loop: loop, after: 5_000_000, repeating: true) { [unowned self] in self.logCheckProgress() }
        if torrents.isEmpty {
            logger.notice("no torrents loaded; put .torrent files in \(config.torrentsDirectory) or name them on the command line")
        }
    }

    /// Stops accepting peers, closes them, and sends `stopped` to the trackers (within
    /// the configured deadline) before the loop ends.
    public func stop() {
        guard !stopping else { return }
        stopping = true
        progressTimer?.cancel()
        peers?.stop()
        guard let trackers else { return loop.stop() }
        trackers.stop { [loop] in loop.stop() }
    }

    private func serve(_ torrent: Torrent) {
        peers?.register(torrent)
        trackers?.add(torrent)
    }

    /// Ends the disk threads after their current jobs. Call after the loop has returned.
    public func shutdown() {
        pool.shutdown()
        signals.removeAll()
    }

    private func startNextCheck() {
        guard checking == nil, !stopping else { return }
        guard !checkQueue.isEmpty else {
            onAllChecked?()
            return
        }
        let torrent = checkQueue.removeFirst()
        torrent.state = .checking
        let progress = CheckProgress(pieceCount: torrent.metainfo.pieceCount)
        checking = (torrent, progress, EventLoop.now())
        logger.info("checking \(torrent.name)", metadata: ["pieces": "\(torrent.metainfo.pieceCount)"])
        let metainfo = torrent.metainfo
        let bound = LoopBound(self, loop: loop)
        let loop = self.loop
        PieceHasher.hash(storage: torrent.storage, pieceLength: metainfo.pieceLength, pieces: Array(0..<metainfo.pieceCount), pool: pool,
                         result: { piece, outcome in
                             progress.record(piece: piece, outcome: outcome, expected: metainfo.pieceHash(piece))
                         },
                         done: {
                             loop.post { bound.value.finishCheck() }
                         })
    }

    private func finishCheck() {
        guard let (torrent, progress, started) = checking else { return }
        checking = nil
        let result = progress.snapshot()
        torrent.have = result.have
        let seconds = Double(EventLoop.now() - started) / 1_000_000
        let rate = seconds > 0 ? Int64(Double(torrent.metainfo.totalLength) / seconds) : 0
        if let failure = result.failure {
            logger.error("cannot read the data of \(torrent.name): \(failure)", metadata: ["data": "\(torrent.dataDirectory)"])
        }
        if result.corrupt > 0 {
            logger.warning("\(torrent.name): \(result.corrupt) pieces do not match their hash", metadata: ["info_hash": "\(torrent.infoHash)"])
        }
        torrent.state = .seeding
        serve(torrent)
        let held = result.have.setCount
        let total = result.have.count
        let share = total == 0 ? 100 : held * 100 / total
        logger.info("seeding \(torrent.name) (\(held) of \(total) pieces, \(share)%)", metadata: [
            "info_hash": "\(torrent.infoHash)", "checked_in": "\(ByteUnits.formatDecimal(seconds, places: 2))s",
            "check_rate": "\(ByteUnits.formatRate(rate))",
        ])
        startNextCheck()
    }

    private func logCheckProgress() {
        guard let (torrent, progress, _) = checking else { return }
        let done = progress.snapshot().done
        logger.info("checking \(torrent.name): \(done * 100 / max(1, torrent.metainfo.pieceCount))%", metadata: ["pieces_done": "\(done)"])
    }

    /// The TCP port peers reach us on (the configured one, or the kernel's pick for 0).
    public var listeningPort: UInt16 { peers?.listeningPort ?? 0 }

    static func readFile(_ path: String) -> Result<[UInt8], ProblemText> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .failure(ProblemText("\(path): \(String(cString: strerror(errno)))")) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { return .failure(ProblemText("\(path): \(String(cString: strerror(errno)))")) }
        let limit = BencodeLimits.torrentFile.maxInputSize
        guard info.st_size <= limit else { return .failure(ProblemText("\(path): larger than \(limit) bytes, not a torrent file")) }
        var bytes = [UInt8](repeating: 0, count: Int(info.st_size))
        var done = 0
        while done < bytes.count {
            let count = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, $0.count - done) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return .failure(ProblemText("\(path): read failed")) }
            done += count
        }
        return .success(bytes)
    }
}

/// Collects a hash check's results from the disk threads.
final class CheckProgress: Sendable {
    struct Snapshot: Sendable {
        var have: Bitfield
        var done = 0
        var corrupt = 0
        var failure: String?
    }

    private let state: Mutex<Snapshot>

    init(pieceCount: Int) {
        state = Mutex(Snapshot(have: Bitfield(count: pieceCount)))
    }

    func record(piece: Int, outcome: PieceHasher.Outcome, expected: ArraySlice<UInt8>) {
        state.withLock { state in
            state.done += 1
            switch outcome {
            case .digest(let digest):
                if digest[...] == expected { state.have[piece] = true } else { state.corrupt += 1 }
            case .missing:
                break
            case .failed(let error):
                if state.failure == nil { state.failure = error.description }
            }
        }
    }

    func snapshot() -> Snapshot { state.withLock { $0 } }
}

public struct SessionError: Error, CustomStringConvertible {
    public let description: String
}
