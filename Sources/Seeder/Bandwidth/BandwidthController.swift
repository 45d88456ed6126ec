import EventLoop
import Throttle

/// Who waits for bandwidth: told when bytes are granted in a direction.
protocol BandwidthClient: AnyObject {
    func bandwidthGranted(_ direction: BandwidthController.Direction, bytes: Int64)
}

/// The server's upload and download limits: one `BandwidthHierarchy` per direction
/// (global -> torrent -> peer), torrents and peers registered as they come and go, and
/// one timer armed at the earliest time either hierarchy wants a poll. Every transfer,
/// TCP or uTP, asks here first. Loop-owned.
final class BandwidthController {
    enum Direction: Sendable {
        case upload, download
    }

    struct Limits: Equatable, Sendable {
        var upload: Int64
        var download: Int64
    }

    /// A torrent's place in both hierarchies.
    struct TorrentHandle {
        fileprivate let upload: BandwidthHierarchy.TorrentID
        fileprivate let download: BandwidthHierarchy.TorrentID
    }

    /// A peer's place in both hierarchies.
    struct PeerHandle {
        fileprivate let upload: BandwidthHierarchy.PeerID
        fileprivate let download: BandwidthHierarchy.PeerID
    }

    private unowned let loop: EventLoop
    private var upload: BandwidthHierarchy
    private var download: BandwidthHierarchy
    /// Each hierarchy numbers its peers on its own: one table per direction.
    private var uploadClients: [BandwidthHierarchy.PeerID: WeakClient] = [:]
    private var downloadClients: [BandwidthHierarchy.PeerID: WeakClient] = [:]
    private var timer: Timer?
    private var timerAt: UInt64?
    private var burst: Int64?

    private struct WeakClient {
        weak var client: BandwidthClient?
    }

    init(loop: EventLoop, global: Limits, burst: Int64?) {
        self.loop = loop
        self.burst = burst
        let now = EventLoop.now()
        upload = BandwidthHierarchy(globalRate: global.upload, burst: burst, now: now)
        download = BandwidthHierarchy(globalRate: global.download, burst: burst, now: now)
    }

    var globalLimits: Limits { Limits(upload: upload.globalRate, download: download.globalRate) }

    func addTorrent(limits: Limits) -> TorrentHandle {
        let now = EventLoop.now()
        return TorrentHandle(upload: upload.addTorrent(rate: limits.upload, burst: burst, now: now),
                             download: download.addTorrent(rate: limits.download, burst: burst, now: now))
    }

    func removeTorrent(_ torrent: TorrentHandle) {
        upload.removeTorrent(torrent.upload)
        download.removeTorrent(torrent.download)
    }

    func addPeer(to torrent: TorrentHandle, client: BandwidthClient) -> PeerHandle? {
        let now = EventLoop.now()
        guard let up = upload.addPeer(to: torrent.upload, now: now),
              let down = download.addPeer(to: torrent.download, now: now) else { return nil }
        uploadClients[up] = WeakClient(client: client)
        downloadClients[down] = WeakClient(client: client)
        return PeerHandle(upload: up, download: down)
    }

    func removePeer(_ peer: PeerHandle) {
        upload.removePeer(peer.upload)
        download.removePeer(peer.download)
        uploadClients[peer.upload] = nil
        downloadClients[peer.download] = nil
    }

    /// Asks for `bytes` more; returns what may go now. The rest is granted later through
    /// `bandwidthGranted`, fairly among the peers waiting under the same limits.
    func request(_ direction: Direction, _ peer: PeerHandle, bytes: Int64) -> Int64 {
        let now = EventLoop.now()
        let result: BandwidthHierarchy.RequestResult
        switch direction {
        case .upload: result = upload.request(peer.upload, bytes: bytes, now: now)
        case .download: result = download.request(peer.download, bytes: bytes, now: now)
        }
        schedule(result.pollAt, now: now)
        return result.granted
    }

    /// Bytes granted but never sent or read.
    func giveBack(_ direction: Direction, _ peer: PeerHandle, bytes: Int64) {
        let now = EventLoop.now()
        switch direction {
        case .upload: schedule(upload.giveBack(peer.upload, bytes: bytes, now: now), now: now)
        case .download: schedule(download.giveBack(peer.download, bytes: bytes, now: now), now: now)
        }
    }

    /// Bytes that arrived without a grant (a TCP read, a uTP packet): charged, in debt if
    /// need be, so that the path grants nothing until it is paid off.
    func consume(_ direction: Direction, _ peer: PeerHandle, bytes: Int64) {
        let now = EventLoop.now()
        switch direction {
        case .upload: schedule(upload.consume(peer.upload, bytes: bytes, now: now), now: now)
        case .download: schedule(download.consume(peer.download, bytes: bytes, now: now), now: now)
        }
    }

    /// What the path could take now, `Int64.max` when nothing limits it.
    func allowance(_ direction: Direction, _ peer: PeerHandle) -> Int64 {
        let now = EventLoop.now()
        switch direction {
        case .upload: return upload.allowance(for: peer.upload, now: now)
        case .download: return download.allowance(for: peer.download, now: now)
        }
    }

    func cancel(_ direction: Direction, _ peer: PeerHandle) {
        switch direction {
        case .upload: upload.cancel(peer.upload)
        case .download: download.cancel(peer.download)
        }
    }

    // MARK: Reload

    func setGlobal(_ limits: Limits, burst: Int64?) {
        let now = EventLoop.now()
        self.burst = burst
        schedule(upload.setGlobalRate(limits.upload, burst: burst, now: now), now: now)
        schedule(download.setGlobalRate(limits.download, burst: burst, now: now), now: now)
    }

    func set(_ torrent: TorrentHandle, limits: Limits) {
        let now = EventLoop.now()
        schedule(upload.setRate(of: torrent.upload, to: limits.upload, burst: burst, now: now), now: now)
        schedule(download.setRate(of: torrent.download, to: limits.download, burst: burst, now: now), now: now)
    }

    // MARK: Rates for status

    func rates(of torrent: TorrentHandle) -> (upload: BandwidthHierarchy.Rates?, download: BandwidthHierarchy.Rates?) {
        let now = EventLoop.now()
        return (upload.rates(of: torrent.upload, now: now), download.rates(of: torrent.download, now: now))
    }

    func globalRates() -> (upload: BandwidthHierarchy.Rates, download: BandwidthHierarchy.Rates) {
        let now = EventLoop.now()
        return (upload.globalRates(now: now), download.globalRates(now: now))
    }

    // MARK: Polling

    /// Keeps one timer at the earliest poll either hierarchy asked for. A poll due now
    /// runs on the next loop turn, after every peer that wants to ask in this one has
    /// asked, so the poll shares the tokens among all of them.
    private func schedule(_ pollAt: UInt64?, now: UInt64) {
        guard let pollAt else { return }
        if let timerAt, timerAt <= pollAt, timer != nil { return }
        timerAt = pollAt
        timer = Timer(loop: loop, after: Int64(pollAt > now ? pollAt - now : 0)) { [unowned self] in self.poll() }
    }

    private func poll() {
        timer = nil
        timerAt = nil
        let now = EventLoop.now()
        let up = upload.poll(now: now)
        let down = download.poll(now: now)
        for grant in up.grants { uploadClients[grant.peer]?.client?.bandwidthGranted(.upload, bytes: grant.bytes) }
        for grant in down.grants { downloadClients[grant.peer]?.client?.bandwidthGranted(.download, bytes: grant.bytes) }
        // Clients may have asked again while being granted; ask each hierarchy afresh.
        let next = [upload.nextPollTime(now: now), download.nextPollTime(now: now)].compactMap { $0 }.min()
        schedule(next, now: EventLoop.now())
    }
}
