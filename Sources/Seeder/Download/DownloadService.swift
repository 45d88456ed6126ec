import BitTorrent
import EventLoop
import Logging

/// Downloads every torrent that is not complete after its check: a `TorrentDownload`
/// hung on the torrent's swarm (its peer connections find it there), what follows a
/// verified or failed piece across the swarm, completion, the error state after a
/// write failure, and resume data while downloading. Loop-owned.
final class DownloadService {
    private unowned let loop: EventLoop
    private let pool: DiskPool
    private let peers: PeerServer
    private let logger: Logger
    /// Resume interval, preallocation and the state directory come from here; a reload
    /// applies to the resume timer at once and to preallocation for the next download.
    var config: SeederConfig {
        didSet { if !active.isEmpty { armResumeTimer() } }
    }
    private var active: [InfoHash: TorrentDownload] = [:]
    private var resumeTimer: Timer?
    private var resumeTimerInterval = 0
    /// The torrent finished downloading (trackers owe a `completed`).
    var onCompleted: (Torrent) -> Void = { _ in }

    init(loop: EventLoop, pool: DiskPool, peers: PeerServer, logger: Logger, config: SeederConfig) {
        self.loop = loop
        self.pool = pool
        self.peers = peers
        self.logger = logger
        self.config = config
    }

    func isDownloading(_ infoHash: InfoHash) -> Bool { active[infoHash] != nil }

    /// Starts downloading what a served torrent misses; complete torrents just seed.
    func start(_ torrent: Torrent) {
        guard active[torrent.infoHash] == nil, torrent.state == .seeding, !torrent.have.isComplete,
              let swarm = peers.swarm(for: torrent.infoHash) else { return }
        let download = TorrentDownload(torrent: torrent, loop: loop, pool: pool, preallocate: config.preallocate)
        // The swarm holds the download, which holds these closures: weak, not a cycle.
        download.onVerified = { [unowned self, weak swarm, weak download] piece in
            guard let swarm, let download else { return }
            self.verified(piece, download: download, swarm: swarm)
        }
        download.onHashFailed = { [unowned self, weak torrent] piece, failure in
            guard let torrent else { return }
            self.peers.pieceFailed(piece, of: torrent, failure: failure)
        }
        download.onDrained = { [weak swarm] in swarm?.diskDrained() }
        download.onFailure = { [unowned self, weak swarm] message in
            guard let swarm else { return }
            self.failed(swarm: swarm, message: message)
        }
        swarm.download = download
        active[torrent.infoHash] = download
        logger.info("downloading \(torrent.name)", metadata: [
            "info_hash": "\(torrent.infoHash)", "missing_pieces": "\(torrent.have.count - torrent.have.setCount)",
            "preallocate": "\(config.preallocate)",
        ])
        armResumeTimer()
    }

    /// The torrent left the session: its progress is saved, its download dropped.
    func remove(_ infoHash: InfoHash) {
        guard let download = active.removeValue(forKey: infoHash) else { return }
        saveResume(download.torrent, writing: true)
        peers.swarm(for: infoHash)?.download = nil
    }

    /// Shutdown: the progress of every download is saved (the disk pool finishes its
    /// queue before it stops).
    func stop() {
        resumeTimer = nil
        for download in active.values where download.failure == nil { saveResume(download.torrent, writing: true) }
    }

    private func verified(_ piece: Int, download: TorrentDownload, swarm: Swarm) {
        swarm.pieceVerified(piece)
        guard download.isComplete else { return }
        let torrent = download.torrent
        active[torrent.infoHash] = nil
        swarm.downloadCompleted()
        // Every write finished before its piece was hashed: the files are final now.
        saveResume(torrent, writing: false)
        logger.notice("completed \(torrent.name)", metadata: [
            "info_hash": "\(torrent.infoHash)", "downloaded": "\(ByteUnits.format(swarm.downloadedBytes))",
            "hash_failures": "\(download.hashFailures)",
        ])
        onCompleted(torrent)
    }

    /// A write failed (disk full, read-only directory): the torrent stops downloading
    /// and shows the error; what was verified stays, and other torrents go on.
    private func failed(swarm: Swarm, message: String) {
        let torrent = swarm.torrent
        guard let download = active.removeValue(forKey: torrent.infoHash) else { return }
        torrent.state = .error(message)
        logger.error("download of \(torrent.name) stopped: \(message)", metadata: [
            "info_hash": "\(torrent.infoHash)", "pieces_have": "\(torrent.have.setCount)", "pieces": "\(torrent.have.count)",
        ])
        swarm.download = nil
        swarm.closeAll(reason: "torrent error: \(message)")
        if download.verifiedSinceSave > 0 { saveResume(torrent, writing: true) }
    }

    // MARK: Resume data

    private func armResumeTimer() {
        guard resumeTimer == nil || resumeTimerInterval != config.resumeInterval else { return }
        resumeTimerInterval = config.resumeInterval
        let interval = UInt64(config.resumeInterval) * 1_000_000
        resumeTimer = Timer(loop: loop, after: Int64(interval), repeating: true) { [unowned self] in self.saveProgress() }
    }

    /// Every `resume_interval` seconds: what each download verified since the last save.
    private func saveProgress() {
        for download in active.values where download.verifiedSinceSave > 0 && download.failure == nil {
            saveResume(download.torrent, writing: true)
        }
        if active.isEmpty { resumeTimer = nil }
    }

    /// Saves in flight, per torrent, and whether another must follow: two disk threads
    /// could otherwise finish an older save after a newer one.
    private var saving: [InfoHash: (again: Bool, writing: Bool)] = [:]

    /// Records the verified pieces (whose bytes are on disk: pieces are hashed after
    /// their writes) with the files' stamps, atomically, on the disk pool.
    private func saveResume(_ torrent: Torrent, writing: Bool) {
        active[torrent.infoHash]?.verifiedSinceSave = 0
        if let inFlight = saving[torrent.infoHash] {
            // The final (non-writing) stamps win once the download is over.
            saving[torrent.infoHash] = (true, inFlight.again ? inFlight.writing && writing : writing)
            return
        }
        saving[torrent.infoHash] = (false, writing)
        let bound = LoopBound(self, loop: loop)
        let boundTorrent = LoopBound(torrent, loop: loop)
        let loop = self.loop
        let have = torrent.have
        let infoHash = torrent.infoHash
        let metainfo = torrent.metainfo
        let storage = torrent.storage
        let stateDirectory = config.stateDirectory
        let logger = self.logger
        let name = torrent.name
        pool.submit {
            let stamps = writing ? ResumeStore.writingStamps(of: metainfo, storage: storage) : ResumeStore.stamps(of: metainfo, storage: storage)
            if let problem = ResumeStore.save(ResumeData(infoHash: infoHash, have: have, files: stamps), stateDirectory: stateDirectory) {
                logger.warning("cannot save the resume data of \(name): \(problem)")
            }
            loop.post { bound.value.saved(boundTorrent.value) }
        }
    }

    private func saved(_ torrent: Torrent) {
        guard let state = saving.removeValue(forKey: torrent.infoHash), state.again else { return }
        saveResume(torrent, writing: state.writing)
    }
}
