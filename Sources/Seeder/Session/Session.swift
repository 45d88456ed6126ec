import BitTorrent
import EventLoop
import Glibc
import Logging
import Synchronization
import Trackers

/// The running server: loads torrents, checks their data on the disk pool one torrent
/// at a time (each check uses every disk thread), and serves them. Loop-owned.
public final class Session {
    public private(set) var config: SeederConfig
    private let loop: EventLoop
    private let pool: DiskPool
    private let cache: FileHandleCache
    private let logger: Logger
    public private(set) var torrents: [InfoHash: Torrent] = [:]
    private var checkQueue: [Torrent] = []
    private var checking: CheckJob?
    private var progressTimer: Timer?
    private var signals: [SignalWatcher] = []
    private var stopping = false
    private var peers: PeerServer?
    private var udpPort: UDPPort?
    private var utp: UTPService?
    private var trackers: TrackerService?
    private var status: StatusService?
    private var downloads: DownloadService?
    public let peerID = PeerID.generate()
    /// Which torrent each loaded .torrent file holds, so that a file that leaves the
    /// watch folder or the config stops the right torrent.
    private var loadedFrom: [String: InfoHash] = [:]
    private var watcher: DirectoryWatcher?
    private let commandLine: (torrents: [String], data: String?)

    /// Called on the loop once every queued torrent has been checked.
    public var onAllChecked: (() -> Void)?
    /// Reads the config again for SIGHUP (the file, with the command-line flags applied
    /// on top); nil when there is nothing to re-read.
    public var reloadConfig: (() throws(ConfigError) -> SeederConfig)?
    /// The shared log level, changed by a reload.
    public var logLevel: LogLevelSwitch?

    public init(config: SeederConfig, loop: EventLoop, logger: Logger, commandLineTorrents: [String] = [], commandLineData: String? = nil) {
        self.config = config
        self.loop = loop
        self.logger = logger
        commandLine = (commandLineTorrents, commandLineData)
        pool = DiskPool(threads: config.diskThreads)
        cache = FileHandleCache(capacity: config.maxOpenFiles)
    }

    /// Loads the torrents the config, the torrents directory and the command line name;
    /// a bad torrent file is logged and skipped.
    public func loadTorrents() {
        let (sources, problems) = TorrentSource.all(config: config, commandLine: commandLine.torrents, commandLineData: commandLine.data)
        for problem in problems { logger.error("\(problem)") }
        add(sources: sources)
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
            // The same file written again (an editor's save, a second copy into the
            // watch folder): nothing changed.
            if existing.sourceFile == source.file { return existing }
            logger.warning("torrent \(metainfo.name) is already loaded from \(existing.sourceFile); ignoring the copy",
                           metadata: ["file": "\(source.file)", "info_hash": "\(metainfo.infoHash)"])
            return nil
        }
        if let previous = loadedFrom[source.file] {
            remove(previous, reason: "\(source.file) now holds another torrent")
        }
        let torrent = Torrent(metainfo: metainfo, sourceFile: source.file, dataDirectory: source.dataDirectory, cache: cache)
        torrent.uploadLimit = source.uploadLimit
        torrent.downloadLimit = source.downloadLimit
        torrents[metainfo.infoHash] = torrent
        loadedFrom[source.file] = metainfo.infoHash
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
            scheduler: Self.schedulerConfiguration(config)
        ), peerID: peerID)
        trackers.port = server.listeningPort
        trackers.stats = { [unowned server] torrent in
            let swarm = server.swarm(for: torrent.infoHash)
            return TrackerService.TorrentStats(uploaded: swarm?.uploadedBytes ?? 0, downloaded: swarm?.downloadedBytes ?? 0,
                                               left: torrent.metainfo.totalLength - torrent.bytesHave)
        }
        trackers.peersFound = { [unowned server] infoHash, addresses in server.addCandidates(addresses, for: infoHash) }
        self.trackers = trackers
        let downloads = DownloadService(loop: loop, pool: pool, peers: server, logger: logger, config: config)
        downloads.onCompleted = { [unowned trackers] torrent in trackers.completed(torrent.infoHash) }
        self.downloads = downloads
        startUDP(port: server.listeningPort, trackers: trackers)
        let status = StatusService(session: self, loop: loop, peers: server, trackers: trackers, logger: logger)
        status.listen(on: config.statusAddress)
        self.status = status
        for torrent in torrents.values where torrent.state == .seeding { serve(torrent) }
        for number in [SIGINT, SIGTERM] {
            signals.append(SignalWatcher(loop: loop, signal: number) { [unowned self] in
                self.logger.info("received \(number == SIGINT ? "SIGINT" : "SIGTERM"), stopping")
                self.stop()
            })
        }
        signals.append(SignalWatcher(loop: loop, signal: SIGHUP) { [unowned self] in
            self.logger.info("received SIGHUP, reloading the config")
            self.reload()
        })
        startWatching()
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
        watcher = nil
        progressTimer?.cancel()
        status?.stop()
        downloads?.stop()
        peers?.stop()
        guard let trackers else { return loop.stop() }
        trackers.stop { [loop] in loop.stop() }
    }

    /// The UDP port (uTP and UDP tracker replies) on the TCP port's number. Without it
    /// the server still seeds over TCP and announces over HTTP.
    private func startUDP(port: UInt16, trackers: TrackerService) {
        let addresses = [config.bindIPv4, config.bindIPv6].filter { !$0.isEmpty }.compactMap { SocketAddress(ip: $0, port: port) }
        let udp: UDPPort
        do {
            udp = try UDPPort(loop: loop, addresses: addresses, logger: logger)
        } catch {
            logger.error("no UDP port, so no UDP trackers: \(error)")
            return
        }
        let transport = UDPTrackerTransport(loop: loop, port: udp, configuration: .init(maxRetries: config.udpTrackerRetries))
        udp.onTrackerReply = { [unowned transport] datagram, source in transport.receive(datagram, from: source) }
        udp.onSendFailed = { [unowned transport] destination, code in transport.sendFailed(to: destination, errorCode: code) }
        trackers.udp = transport
        udpPort = udp
        guard config.utpEnabled, let peers else { return }
        let utp = UTPService(loop: loop, port: udp, logger: logger)
        utp.onAccept = { [unowned peers] stream in peers.acceptUTP(stream) }
        peers.utp = utp
        self.utp = utp
    }

    private func serve(_ torrent: Torrent) {
        peers?.register(torrent)
        trackers?.add(torrent)
        if downloads != nil, !torrent.have.isComplete, let (path, other) = sharedFile(of: torrent) {
            // Downloading would write over bytes the other torrent verified and serves.
            let message = "its file \(path) is also a file of \(other.name)"
            torrent.state = .error(message)
            logger.error("not downloading \(torrent.name): \(message)", metadata: [
                "info_hash": "\(torrent.infoHash)", "other_info_hash": "\(other.infoHash)",
            ])
            return
        }
        // What the check did not find is downloaded, then seeded.
        downloads?.start(torrent)
    }

    /// A file path of `torrent` that another loaded torrent also uses, and that torrent.
    private func sharedFile(of torrent: Torrent) -> (String, Torrent)? {
        let files = torrent.metainfo.files
        let paths = Set(torrent.storage.paths.indices.filter { !files[$0].isPadding }.map { torrent.storage.paths[$0] })
        for other in torrents.values where other !== torrent {
            let otherFiles = other.metainfo.files
            for (index, path) in other.storage.paths.enumerated() where !otherFiles[index].isPadding && paths.contains(path) {
                return (path, other)
            }
        }
        return nil
    }

    /// Whether the torrent is downloading what it misses (status shows "downloading").
    func isDownloading(_ infoHash: InfoHash) -> Bool { downloads?.isDownloading(infoHash) ?? false }

    /// Ends the disk threads after their current jobs. Call after the loop has returned.
    public func shutdown() {
        utp?.stop()
        udpPort?.close()
        pool.shutdown()
        signals.removeAll()
    }

    /// Stops serving a torrent: its peers are closed and its trackers told `stopped`.
    public func remove(_ infoHash: InfoHash, reason: String) {
        guard let torrent = torrents.removeValue(forKey: infoHash) else { return }
        checkQueue.removeAll { $0 === torrent }
        downloads?.remove(infoHash)
        if loadedFrom[torrent.sourceFile] == infoHash { loadedFrom[torrent.sourceFile] = nil }
        peers?.unregister(infoHash)
        trackers?.remove(infoHash)
        torrent.state = .stopped
        logger.info("stopped seeding \(torrent.name): \(reason)", metadata: ["info_hash": "\(infoHash)"])
    }

    // MARK: Reload and the watch folder

    /// SIGHUP: reads the config again and applies what can change while running (the
    /// torrents, limits, tracker settings, the log level, the watch folder). A config
    /// that does not load is refused and the running one stays.
    public func reload() {
        guard !stopping else { return }
        guard let reloadConfig else {
            logger.notice("no config file to reload (running on the embedded default config); rescanning \(config.torrentsDirectory)")
            return syncSources()
        }
        let new: SeederConfig
        do {
            new = try reloadConfig()
        } catch {
            logger.error("reload refused, still running the previous config: \(error)")
            return
        }
        apply(new)
    }

    private func apply(_ new: SeederConfig) {
        let old = config
        config = new
        let restartOnly: [(String, Bool)] = [
            ("network.listen_port", old.listenPort != new.listenPort),
            ("network.bind_ipv4", old.bindIPv4 != new.bindIPv4),
            ("network.bind_ipv6", old.bindIPv6 != new.bindIPv6),
            ("network.utp", old.utpEnabled != new.utpEnabled),
            ("network.outgoing", old.outgoing != new.outgoing),
            ("storage.state_dir", old.stateDirectory != new.stateDirectory),
            ("storage.disk_threads", old.diskThreads != new.diskThreads),
            ("storage.max_open_files", old.maxOpenFiles != new.maxOpenFiles),
        ]
        let pending = restartOnly.filter(\.1).map(\.0)
        if !pending.isEmpty {
            logger.warning("changed keys take effect at the next restart: \(pending.joined(separator: ", "))")
        }
        logLevel?.level = new.logLevel
        trackers?.udp?.configuration.maxRetries = new.udpTrackerRetries
        downloads?.config = new
        trackers?.update(announceTimeout: Int32(new.announceTimeout), stopDeadline: UInt64(new.stopTimeout) * 1_000_000,
                         numWant: new.numWant, scheduler: Self.schedulerConfiguration(new))
        let before = Set(torrents.keys)
        syncSources()
        peers?.apply(limits: new)
        if old.torrentsDirectory != new.torrentsDirectory { startWatching() }
        if old.statusAddress != new.statusAddress { status?.listen(on: new.statusAddress) }
        let after = Set(torrents.keys)
        logger.notice("config reloaded", metadata: [
            "torrents_added": "\(after.subtracting(before).count)", "torrents_removed": "\(before.subtracting(after).count)",
            "upload_limit": "\(ByteUnits.formatRate(new.uploadLimit))", "download_limit": "\(ByteUnits.formatRate(new.downloadLimit))",
        ])
    }

    private static func schedulerConfiguration(_ config: SeederConfig) -> AnnounceScheduler<InfoHash>.Configuration {
        .init(maxConcurrent: config.maxConcurrentAnnounces, firstAnnounceJitter: UInt64(config.announceJitter) * 1_000_000)
    }

    /// Makes the loaded torrents match what the config, the torrents directory and the
    /// command line name now.
    private func syncSources() {
        let (wanted, problems) = TorrentSource.all(config: config, commandLine: commandLine.torrents, commandLineData: commandLine.data)
        for problem in problems { logger.error("\(problem)") }
        var byFile: [String: TorrentSource] = [:]
        for source in wanted where byFile[source.file] == nil { byFile[source.file] = source }
        for (file, infoHash) in loadedFrom {
            guard let torrent = torrents[infoHash] else { continue }
            guard let source = byFile[file] else {
                remove(infoHash, reason: "no longer in the config or the torrents directory")
                continue
            }
            if source.dataDirectory != torrent.dataDirectory {
                remove(infoHash, reason: "its data directory changed to \(source.dataDirectory)")
                continue
            }
            torrent.uploadLimit = source.uploadLimit
            torrent.downloadLimit = source.downloadLimit
        }
        add(sources: wanted.filter { loadedFrom[$0.file] == nil })
    }

    private func startWatching() {
        watcher = nil
        do {
            watcher = try DirectoryWatcher(loop: loop, path: config.torrentsDirectory) { [unowned self] changes in
                self.watchFolderChanged(changes)
            }
            logger.info("watching \(config.torrentsDirectory) for .torrent files")
        } catch {
            logger.error("cannot watch the torrents directory; new files there are picked up on SIGHUP: \(error)")
        }
    }

    private func watchFolderChanged(_ changes: [DirectoryWatcher.Change]) {
        guard !stopping else { return }
        let directory = config.torrentsDirectory
        for change in changes {
            switch change {
            case .appeared(let name) where isTorrentFileName(name):
                add(TorrentSource(file: directory + "/" + name, dataDirectory: config.dataDirectory, origin: .torrentsDirectory))
            case .disappeared(let name) where isTorrentFileName(name):
                if let infoHash = loadedFrom[directory + "/" + name] {
                    remove(infoHash, reason: "\(name) was removed from \(directory)")
                }
            case .overflow:
                logger.warning("too many changes in \(directory) at once; rescanning it")
                syncSources()
            case .directoryGone:
                logger.error("the torrents directory \(directory) was deleted or moved; its torrents keep seeding until SIGHUP")
                watcher = nil
            case .appeared, .disappeared:
                break
            }
        }
        startNextCheck()
    }

    private func startNextCheck() {
        guard checking == nil, !stopping else { return }
        guard !checkQueue.isEmpty else {
            onAllChecked?()
            return
        }
        let torrent = checkQueue.removeFirst()
        torrent.state = .checking
        checking = CheckJob(torrent: torrent, progress: CheckProgress(pieceCount: torrent.metainfo.pieceCount), started: EventLoop.now())
        // Stat the files and read the resume data on a disk thread: with hundreds of
        // torrents on a busy disk that is real I/O.
        let metainfo = torrent.metainfo
        let storage = torrent.storage
        let stateDirectory = config.stateDirectory
        let bound = LoopBound(self, loop: loop)
        let loop = self.loop
        pool.submit {
            let plan = ResumeStore.plan(metainfo: metainfo, storage: storage, stateDirectory: stateDirectory)
            loop.post { bound.value.hash(plan) }
        }
    }

    /// Hashes what the resume data could not vouch for.
    private func hash(_ plan: ResumeStore.CheckPlan) {
        guard var job = checking, !stopping else { return }
        let torrent = job.torrent
        let metainfo = torrent.metainfo
        if let note = plan.note { logger.warning("\(torrent.name): \(note)") }
        job.progress = CheckProgress(have: plan.trusted)
        job.plan = plan
        checking = job
        if plan.pieces.count == metainfo.pieceCount {
            logger.info("checking \(torrent.name)", metadata: ["pieces": "\(metainfo.pieceCount)"])
        } else if !plan.pieces.isEmpty {
            logger.info("checking \(torrent.name): \(plan.filesChanged) files changed since the resume data", metadata: [
                "pieces": "\(plan.pieces.count)", "trusted_pieces": "\(plan.trusted.setCount)",
            ])
        }
        let progress = job.progress
        let bound = LoopBound(self, loop: loop)
        let loop = self.loop
        PieceHasher.hash(storage: torrent.storage, pieceLength: metainfo.pieceLength, pieces: plan.pieces, pool: pool,
                         result: { piece, outcome in
                             progress.record(piece: piece, outcome: outcome, expected: metainfo.pieceHash(piece))
                         },
                         done: {
                             loop.post { bound.value.finishCheck() }
                         })
    }

    private func finishCheck() {
        guard let job = checking, let plan = job.plan else { return }
        checking = nil
        let torrent = job.torrent
        guard torrents[torrent.infoHash] === torrent else {
            // Removed while it was being checked.
            return startNextCheck()
        }
        let result = job.progress.snapshot()
        torrent.have = result.have
        let seconds = Double(EventLoop.now() - job.started) / 1_000_000
        let hashedBytes = Int64(plan.pieces.count) * Int64(torrent.metainfo.pieceLength)
        let rate = seconds > 0 ? Int64(Double(min(hashedBytes, torrent.metainfo.totalLength)) / seconds) : 0
        if let failure = result.failure {
            logger.error("cannot read the data of \(torrent.name): \(failure)", metadata: ["data": "\(torrent.dataDirectory)"])
        }
        if result.corrupt > 0 {
            logger.warning("\(torrent.name): \(result.corrupt) pieces do not match their hash", metadata: ["info_hash": "\(torrent.infoHash)"])
        }
        torrent.state = .seeding
        let held = result.have.setCount
        let total = result.have.count
        let share = total == 0 ? 100 : held * 100 / total
        // Logged before `serve`, which logs "downloading" when pieces are missing: a
        // torrent that is not complete is never announced as "seeding".
        let verb = result.have.isComplete ? "seeding" : "checked"
        logger.info("\(verb) \(torrent.name) (\(held) of \(total) pieces, \(share)%)", metadata: [
            "info_hash": "\(torrent.infoHash)", "checked_in": "\(ByteUnits.formatDecimal(seconds, places: 2))s",
            "hashed_pieces": "\(plan.pieces.count)", "check_rate": "\(ByteUnits.formatRate(rate))",
        ])
        serve(torrent)
        if !plan.pieces.isEmpty || plan.note != nil { saveResume(torrent, stamps: plan.stamps) }
        startNextCheck()
    }

    /// Records what the check found, so that the next start hashes only what changed.
    /// A failed write costs the next start a full check, nothing more.
    private func saveResume(_ torrent: Torrent, stamps: [ResumeData.FileStamp]) {
        let resume = ResumeData(infoHash: torrent.infoHash, have: torrent.have, files: stamps)
        let stateDirectory = config.stateDirectory
        let logger = self.logger
        let name = torrent.name
        pool.submit {
            if let problem = ResumeStore.save(resume, stateDirectory: stateDirectory) {
                logger.warning("cannot save the resume data of \(name): \(problem)")
            }
        }
    }

    private func logCheckProgress() {
        guard let job = checking, let plan = job.plan else { return }
        let done = job.progress.snapshot().done
        logger.info("checking \(job.torrent.name): \(done * 100 / max(1, plan.pieces.count))%", metadata: ["pieces_done": "\(done)"])
    }

    /// The current status, as `GET /status` returns it.
    public func statusSnapshot() -> StatusSnapshot? { status?.snapshot() }

    /// The TCP port peers reach us on (the configured one, or the kernel's pick for 0).
    public var listeningPort: UInt16 { peers?.listeningPort ?? 0 }

    static func readFile(_ path: String) -> Result<[UInt8], ProblemText> {
        // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, and
        // this runs on the loop thread (the watch folder).
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return .failure(ProblemText("\(path): \(String(cString: strerror(errno)))")) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { return .failure(ProblemText("\(path): \(String(cString: strerror(errno)))")) }
        guard (info.st_mode & S_IFMT) == S_IFREG else { return .failure(ProblemText("\(path): not a regular file")) }
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

/// The torrent being checked: the plan arrives from a disk thread, then the hashing.
private struct CheckJob {
    let torrent: Torrent
    var progress: CheckProgress
    let started: UInt64
    var plan: ResumeStore.CheckPlan?
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

    /// Starts from pieces already known good (from resume data).
    init(have: Bitfield) {
        state = Mutex(Snapshot(have: have))
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
