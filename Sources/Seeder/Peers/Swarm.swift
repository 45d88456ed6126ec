import BitTorrent
import EventLoop

/// A torrent's peers: who is connected, who is unchoked, and whom to dial. Loop-owned.
final class Swarm {
    let torrent: Torrent
    /// Small integer id for connection accounting.
    let index: Int
    private(set) var peers: [Int: PeerConnection] = [:]
    private var choker: SeedChoker
    private(set) var view: TorrentView
    private(set) var uploadedBytes: Int64 = 0
    /// Piece payload received from peers (counted as it arrives, wanted or not).
    private(set) var downloadedBytes: Int64 = 0
    /// While the torrent misses pieces: the picker and disk work its peers share.
    var download: TorrentDownload?
    var candidates = PeerCandidates()
    /// The torrent's place under the global limits.
    let bandwidth: BandwidthController.TorrentHandle
    private var random = SystemRandomNumberGenerator()

    init(torrent: Torrent, index: Int, uploadSlots: Int, bandwidth: BandwidthController.TorrentHandle) {
        self.torrent = torrent
        self.index = index
        self.bandwidth = bandwidth
        choker = SeedChoker(slots: uploadSlots)
        view = TorrentView(metainfo: torrent.metainfo, have: torrent.have)
    }

    var peerCount: Int { peers.count }

    func peerActivated(_ peer: PeerConnection) {
        peers[peer.id] = peer
        if peer.outgoing { candidates.connected(peer.remote) }
        rechoke(now: EventLoop.now())
    }

    func interestChanged(_ peer: PeerConnection) {
        rechoke(now: EventLoop.now())
    }

    func peerRemoved(_ peer: PeerConnection) {
        guard peers.removeValue(forKey: peer.id) != nil else { return }
        choker.remove(peer.id)
        rechoke(now: EventLoop.now())
    }

    func uploaded(_ bytes: Int) {
        uploadedBytes += Int64(bytes)
    }

    func downloaded(_ bytes: Int) {
        downloadedBytes += Int64(bytes)
    }

    /// A downloaded piece passed its hash check: peers now see it in our bitfield, and
    /// each gets a `have` and our interest re-evaluated.
    func pieceVerified(_ piece: Int) {
        view.have[piece] = true
        for peer in Array(peers.values) { peer.pieceVerified(piece) }
    }

    /// The download finished: peers drop their download halves, and seeds among them
    /// are let go (two seeds have nothing to trade).
    func downloadCompleted() {
        download = nil
        for peer in Array(peers.values) { peer.torrentCompleted() }
    }

    /// The download's disk writes caught up: peers paused on them read again.
    func diskDrained() {
        for peer in Array(peers.values) { peer.diskDrained() }
    }

    /// Applies the choker's decision to every peer.
    func rechoke(now: UInt64) {
        let states = peers.values.map { SeedChoker.Peer(id: $0.id, interested: $0.session?.peerInterested ?? false) }
        let unchoked = choker.rechoke(peers: states, now: now, using: &random)
        for peer in peers.values {
            peer.setChoking(!unchoked.contains(peer.id))
        }
    }

    func setUploadSlots(_ slots: Int) {
        guard choker.slots != slots else { return }
        choker.slots = slots
        rechoke(now: EventLoop.now())
    }

    func closeAll(reason: String) {
        for peer in Array(peers.values) { peer.close(reason, peerFault: false) }
    }
}

/// Addresses learned from trackers, with retry bookkeeping: a failed address waits
/// longer each time and is forgotten after a few failures; our own address is never
/// dialed again once recognised.
struct PeerCandidates {
    struct Candidate {
        var failures = 0
        var nextAttempt: UInt64 = 0
        var connected = false
        var isSelf = false
    }

    static let limit = 2000
    static let maxFailures = 3
    private(set) var entries: [SocketAddress: Candidate] = [:]

    var count: Int { entries.count }

    mutating func add(_ addresses: [SocketAddress]) {
        for address in addresses where entries[address] == nil && entries.count < Self.limit {
            entries[address] = Candidate()
        }
    }

    /// Up to `count` addresses ready to dial now; marks them as attempted.
    mutating func takeReady(now: UInt64, count: Int, excluding: (SocketAddress) -> Bool) -> [SocketAddress] {
        var ready: [SocketAddress] = []
        for (address, candidate) in entries where ready.count < count {
            guard !candidate.connected, !candidate.isSelf, candidate.nextAttempt <= now, !excluding(address) else { continue }
            ready.append(address)
        }
        for address in ready {
            entries[address]!.nextAttempt = now + 60_000_000
        }
        return ready
    }

    mutating func connected(_ address: SocketAddress) {
        entries[address]?.connected = true
        entries[address]?.failures = 0
    }

    mutating func failed(_ address: SocketAddress, now: UInt64) {
        guard var candidate = entries[address] else { return }
        candidate.connected = false
        candidate.failures += 1
        if candidate.failures >= Self.maxFailures {
            entries[address] = nil
            return
        }
        candidate.nextAttempt = now + UInt64(candidate.failures) * 120_000_000
        entries[address] = candidate
    }

    mutating func disconnected(_ address: SocketAddress, now: UInt64) {
        entries[address]?.connected = false
        entries[address]?.nextAttempt = now + 120_000_000
    }

    mutating func markSelf(_ address: SocketAddress) {
        entries[address, default: Candidate()].isSelf = true
    }

    /// A banned address is never dialed again (kept, marked, so a tracker's next list
    /// does not bring it back).
    mutating func ban(ip: [UInt8]) {
        for address in entries.keys where address.ip == ip { entries[address]!.isSelf = true }
    }
}
