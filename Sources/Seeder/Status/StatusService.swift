import EventLoop
import BitTorrent
import struct Foundation.Data
import class Foundation.JSONEncoder
import Logging
import Trackers

/// The status endpoint: `GET /status` (JSON) and `GET /metrics` (Prometheus), plus the
/// once-a-second sampling behind the rates they report and the periodic rate line in
/// the log. Building a snapshot walks the torrents once; it does no I/O and takes no
/// locks, so a status request costs the transfers nothing but that walk. Loop-owned.
final class StatusService {
    private unowned let session: Session
    private unowned let loop: EventLoop
    private let peers: PeerServer
    private let trackers: TrackerService
    private let logger: Logger
    private let startedAt = EventLoop.now()
    private var upload = TransferRate()
    private var torrentUpload: [InfoHash: TransferRate] = [:]
    private var download = TransferRate()
    private var torrentDownload: [InfoHash: TransferRate] = [:]
    private var sampler: Timer?
    private var server: HTTPServer?
    private var lastLogged: UInt64 = 0

    /// How often the log gets a line of current rates while data moves.
    static let logInterval: UInt64 = 60_000_000

    init(session: Session, loop: EventLoop, peers: PeerServer, trackers: TrackerService, logger: Logger) {
        self.session = session
        self.loop = loop
        self.peers = peers
        self.trackers = trackers
        self.logger = logger
        sampler = Timer(loop: loop, after: 1_000_000, repeating: true) { [unowned self] in self.sample() }
        sample()
    }

    /// Serves the endpoint on `address` (nil: off), replacing any earlier listener. A
    /// port that cannot be bound is logged: seeding goes on without the endpoint.
    func listen(on address: ListenAddress?) {
        server = nil
        guard let address else { return }
        guard let socketAddress = SocketAddress(ip: address.ip, port: UInt16(address.port)) else { return }
        do {
            server = try HTTPServer(loop: loop, address: socketAddress) { [unowned self] request in self.respond(to: request) }
            logger.info("status endpoint on http://\(address)/status and /metrics")
        } catch {
            logger.error("status endpoint unavailable: \(error)")
        }
    }

    func stop() {
        server = nil
        sampler = nil
    }

    private func respond(to request: HTTPServer.Request) -> HTTPServer.Response {
        switch request.path {
        case "/status":
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            guard let body = try? encoder.encode(snapshot()) else { return .init(status: 500, text: "cannot encode the status\n") }
            return .init(status: 200, contentType: "application/json", body: Array(body))
        case "/metrics":
            return .init(status: 200, contentType: PrometheusText.contentType, body: Array(PrometheusText.render(snapshot()).utf8))
        case "/":
            return .init(status: 200, text: "seeder \(SeederVersion.string): GET /status (JSON), GET /metrics (Prometheus)\n")
        default:
            return .init(status: 404, text: "not found: try /status or /metrics\n")
        }
    }

    private func sample() {
        let now = EventLoop.now()
        upload.sample(total: peers.uploadedBytes, now: now)
        download.sample(total: peers.downloadedBytes, now: now)
        var seen = Set<InfoHash>()
        for (infoHash, _) in session.torrents {
            seen.insert(infoHash)
            let swarm = peers.swarm(for: infoHash)
            torrentUpload[infoHash, default: TransferRate()].sample(total: swarm?.uploadedBytes ?? 0, now: now)
            torrentDownload[infoHash, default: TransferRate()].sample(total: swarm?.downloadedBytes ?? 0, now: now)
        }
        if torrentUpload.count > seen.count {
            torrentUpload = torrentUpload.filter { seen.contains($0.key) }
        }
        if torrentDownload.count > seen.count {
            torrentDownload = torrentDownload.filter { seen.contains($0.key) }
        }
        if now - lastLogged >= Self.logInterval {
            lastLogged = now
            logRates()
        }
    }

    private func logRates() {
        let rate = upload.bytesPerSecond
        let downRate = download.bytesPerSecond
        guard rate > 0 || downRate > 0 else { return }
        let busiest = torrentUpload.filter { $0.value.bytesPerSecond > 0 }.sorted { $0.value.bytesPerSecond > $1.value.bytesPerSecond }
        var metadata: Logger.Metadata = [
            "upload": "\(ByteUnits.formatRate(rate))", "uploaded": "\(ByteUnits.format(peers.uploadedBytes))",
            "peers": "\(peers.activePeerCount)", "active_torrents": "\(busiest.count)",
            "download": "\(ByteUnits.formatRate(downRate))", "downloaded": "\(ByteUnits.format(peers.downloadedBytes))",
        ]
        for (infoHash, rate) in busiest.prefix(3) {
            if let torrent = session.torrents[infoHash] { metadata["up.\(torrent.name)"] = "\(ByteUnits.formatRate(rate.bytesPerSecond))" }
        }
        logger.info("transfer rates", metadata: metadata)
    }

    func snapshot() -> StatusSnapshot {
        let now = EventLoop.now()
        let torrents = session.torrents.values.sorted { $0.name < $1.name || ($0.name == $1.name && $0.infoHash.description < $1.infoHash.description) }
        var total = StatusSnapshot.Peers(tcp: 0, utp: 0)
        let utpUploaded = peers.utp?.uploadedBytes ?? 0
        let list = torrents.map { torrent -> StatusSnapshot.Torrent in
            let swarm = peers.swarm(for: torrent.infoHash)
            let utpPeers = swarm?.peers.values.reduce(0) { $0 + ($1.connection.kind == .utp ? 1 : 0) } ?? 0
            let peerCount = StatusSnapshot.Peers(tcp: (swarm?.peerCount ?? 0) - utpPeers, utp: utpPeers)
            total.tcp += peerCount.tcp
            total.utp += peerCount.utp
            let have = torrent.have.setCount
            var error: String?
            if case .error(let message) = torrent.state { error = message }
            return StatusSnapshot.Torrent(
                name: torrent.name, infoHash: torrent.infoHash.description,
                state: session.isDownloading(torrent.infoHash) ? "downloading" : Self.name(of: torrent.state), error: error,
                progress: torrent.metainfo.pieceCount == 0 ? 1 : Double(have) / Double(torrent.metainfo.pieceCount),
                size: torrent.metainfo.totalLength, piecesHave: have, pieces: torrent.metainfo.pieceCount,
                transfer: .init(uploadRate: torrentUpload[torrent.infoHash]?.bytesPerSecond ?? 0,
                                downloadRate: torrentDownload[torrent.infoHash]?.bytesPerSecond ?? 0,
                                uploaded: swarm?.uploadedBytes ?? 0, downloaded: swarm?.downloadedBytes ?? 0),
                peers: peerCount,
                trackers: trackers.trackers(of: torrent.infoHash).map { Self.tracker($0, now: now) })
        }
        return StatusSnapshot(
            version: SeederVersion.string, uptime: Int((now - startedAt) / 1_000_000), listenPort: Int(session.listeningPort),
            transfer: .init(uploadRate: upload.bytesPerSecond, downloadRate: download.bytesPerSecond,
                            uploaded: peers.uploadedBytes, downloaded: peers.downloadedBytes),
            uploadedByTransport: ["tcp": peers.uploadedBytes - utpUploaded, "utp": utpUploaded],
            downloadedByTransport: ["tcp": peers.downloadedBytes - peers.downloadedUTPBytes, "utp": peers.downloadedUTPBytes],
            peers: total,
            counters: .init(blocksServed: peers.blocksServed, hashFailures: peers.hashFailures, peerFaults: Int64(peers.peerFaults),
                            announcesSucceeded: trackers.announcesSucceeded, announcesFailed: trackers.announcesFailed,
                            utpRetransmits: peers.utp?.retransmits ?? 0, utpSocket: Self.socketCounters(peers.utp)),
            uploadLimit: session.config.uploadLimit, downloadLimit: session.config.downloadLimit,
            torrents: list)
    }

    private static func socketCounters(_ utp: UTPService?) -> StatusSnapshot.UTPSocket {
        guard let stats = utp?.multiplexerStats else { return .init() }
        return .init(datagramsReceived: Int64(stats.datagramsReceived), malformed: Int64(stats.malformed),
                     stray: Int64(stats.strayPackets), synsReceived: Int64(stats.synsReceived), refused: Int64(stats.refused),
                     halfOpenEvicted: Int64(stats.halfOpenEvicted), halfOpenExpired: Int64(stats.halfOpenExpired),
                     cookiesAccepted: Int64(stats.cookiesAccepted))
    }

    private static func name(of state: Torrent.State) -> String {
        switch state {
        case .queued: return "queued"
        case .checking: return "checking"
        case .seeding: return "seeding"
        case .error: return "error"
        case .stopped: return "stopped"
        }
    }

    private static func tracker(_ status: TrackerStatus, now: UInt64) -> StatusSnapshot.Tracker {
        let state: String
        if status.isAnnouncing {
            state = "announcing"
        } else if status.consecutiveFailures > 0 {
            state = "failing"
        } else if status.lastSuccess != nil {
            state = "working"
        } else {
            state = "not contacted"
        }
        return StatusSnapshot.Tracker(
            url: status.url, tier: status.tier, status: state, lastError: status.lastError, warning: status.warning,
            seeders: status.seeders, leechers: status.leechers,
            nextAnnounceIn: status.nextAnnounce.map { Int(($0 > now ? $0 - now : 0) / 1_000_000) },
            lastSuccessAgo: status.lastSuccess.map { Int((now > $0 ? now - $0 : 0) / 1_000_000) })
    }
}
