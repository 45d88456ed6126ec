import BitTorrent
import EventLoop
import Glibc
import Logging

/// Accepts and dials peer connections for every torrent on one port, enforces the
/// connection limits, and runs the periodic work (timeouts, keepalives, rechoking,
/// dialing). Loop-owned.
final class PeerServer {
    let peerID: [UInt8]
    let logger: Logger
    let sessionConfiguration: PeerSession.Configuration
    private unowned let loop: EventLoop
    private let pool: DiskPool
    private var config: SeederConfig
    private var listeners: [TCPListener] = []
    private var swarms: [InfoHash: Swarm] = [:]
    private var connections: [Int: PeerConnection] = [:]
    private var limits: ConnectionLimits
    /// Upload and download limits, for TCP and uTP alike.
    let bandwidth: BandwidthController
    /// Whether piece message headers count against the limits, not just block data.
    private(set) var countOverhead: Bool
    private var nextID = 0
    private var nextSwarmIndex = 0
    private var tickTimer: Timer?
    private var lastRechoke: UInt64 = 0
    private var stopping = false

    /// Totals for logs and, later, the status endpoint.
    private(set) var uploadedBytes: Int64 = 0
    private(set) var blocksServed: Int64 = 0
    private(set) var peerFaults = 0
    private(set) var downloadedBytes: Int64 = 0
    private(set) var hashFailures: Int64 = 0
    private(set) var downloadedUTPBytes: Int64 = 0
    /// Strikes for senders of pieces that failed their hash check, session-wide and by
    /// address, so that reconnecting or switching torrents does not wipe the record.
    private(set) var strikes: HashStrikes<[UInt8]>

    static let handshakeTimeout: UInt64 = 10_000_000
    static let rechokeInterval: UInt64 = 10_000_000
    static let requestQueueLength = 2000

    init(config: SeederConfig, loop: EventLoop, pool: DiskPool, logger: Logger, peerID: [UInt8]) {
        self.config = config
        self.loop = loop
        self.pool = pool
        self.logger = logger
        self.peerID = peerID
        bandwidth = BandwidthController(loop: loop, global: .init(upload: config.uploadLimit, download: config.downloadLimit),
                                        burst: config.burst > 0 ? config.burst : nil)
        countOverhead = config.countOverhead
        var session = PeerSession.Configuration()
        session.clientVersion = "Seeder \(SeederVersion.string)"
        session.listenPort = config.listenPort
        // libtorrent keeps min(our reqq, its 2000) requests outstanding. At 500 (8 MiB)
        // a fast peer that is off the CPU for 20 ms on a busy box leaves us idle;
        // 2000 (32 MiB) is what libtorrent advertises as a seed. Queued requests cost
        // a few dozen bytes each; reads stay bounded by PeerConnection.maxReadsInFlight.
        session.requestQueueLength = Self.requestQueueLength
        sessionConfiguration = session
        limits = ConnectionLimits(maxConnections: config.maxConnections, maxPerTorrent: config.maxConnectionsPerTorrent,
                                  maxPerIP: config.maxConnectionsPerIP, maxHalfOpen: config.maxHalfOpen)
        strikes = HashStrikes(threshold: config.invalidThreshold)
    }

    /// Listens on the configured addresses. Fails only when no address could be bound.
    func start() throws(TCPListener.BindError) {
        var failures: [String] = []
        for text in [config.bindIPv4, config.bindIPv6] where !text.isEmpty {
            guard let address = SocketAddress(ip: text, port: UInt16(config.listenPort)) else { continue }
            do {
                let listener = try TCPListener(loop: loop, address: address, onAccept: { [unowned self] fd, remote in
                    self.accept(fd: fd, remote: remote)
                }, onError: { [unowned self] message in
                    self.logger.warning("\(message)")
                })
                listeners.append(listener)
                logger.info("listening for peers on \(address) (TCP)")
            } catch {
                failures.append(error.description)
            }
        }
        for failure in failures { logger.error("\(failure)") }
        if listeners.isEmpty {
            throw TCPListener.BindError(description: failures.first ?? "no address to listen on")
        }
        tickTimer = Timer(loop: loop, after: 1_000_000, repeating: true) { [unowned self] in self.tick() }
    }

    var listeningPort: UInt16 { listeners.first?.boundPort ?? 0 }
    var connectionCount: Int { connections.count }
    /// Peers past the handshake, across every torrent.
    var activePeerCount: Int { swarms.values.reduce(0) { $0 + $1.peerCount } }

    // MARK: Torrents

    func register(_ torrent: Torrent) {
        guard swarms[torrent.infoHash] == nil else { return }
        let handle = bandwidth.addTorrent(limits: Self.limits(of: torrent, config: config))
        swarms[torrent.infoHash] = Swarm(torrent: torrent, index: nextSwarmIndex, uploadSlots: config.uploadSlots, bandwidth: handle)
        nextSwarmIndex += 1
    }

    func unregister(_ infoHash: InfoHash) {
        guard let swarm = swarms.removeValue(forKey: infoHash) else { return }
        swarm.closeAll(reason: "torrent removed")
        bandwidth.removeTorrent(swarm.bandwidth)
    }

    /// A torrent's own limits, or the config's per-torrent default.
    static func limits(of torrent: Torrent, config: SeederConfig) -> BandwidthController.Limits {
        .init(upload: torrent.uploadLimit ?? config.torrentUploadLimit, download: torrent.downloadLimit ?? config.torrentDownloadLimit)
    }

    func swarm(for infoHash: InfoHash) -> Swarm? { swarms[infoHash] }

    /// Peers a tracker returned for a torrent.
    func addCandidates(_ addresses: [SocketAddress], for infoHash: InfoHash) {
        swarms[infoHash]?.candidates.add(addresses.filter { !strikes.isBanned($0.ip) })
        dial(now: EventLoop.now())
    }

    // MARK: Connections

    private func accept(fd: Int32, remote: SocketAddress) {
        guard !stopping else { Glibc.close(fd); return }
        if !limits.canAdd(ip: remote.ip) {
            // At the global cap, a connection still in its handshake makes room: idle
            // floods cannot lock real peers out.
            if limits.count(ip: remote.ip) >= limits.maxPerIP || !evictOldestHandshaking() {
                Glibc.close(fd)
                return
            }
        }
        let pendingLimit = max(32, config.maxConnections / 4)
        if connections.values.lazy.filter({ !$0.outgoing && $0.isHandshaking }).count >= pendingLimit {
            _ = evictOldestHandshaking()
        }
        let connection = TCPTransport(TCPConnection(loop: loop, acceptedSocket: fd, remote: remote))
        add(PeerConnection(id: nextConnectionID(), server: self, connection: connection, outgoingTo: nil, now: EventLoop.now()), dialing: false)
    }

    /// An incoming uTP connection (its first DATA arrived): the same limits as a TCP
    /// accept. False refuses it.
    func acceptUTP(_ stream: UTPStream) -> Bool {
        guard !stopping else { return false }
        let remote = stream.remote
        if !limits.canAdd(ip: remote.ip) {
            if limits.count(ip: remote.ip) >= limits.maxPerIP || !evictOldestHandshaking() { return false }
        }
        let pendingLimit = max(32, config.maxConnections / 4)
        if connections.values.lazy.filter({ !$0.outgoing && $0.isHandshaking }).count >= pendingLimit {
            _ = evictOldestHandshaking()
        }
        add(PeerConnection(id: nextConnectionID(), server: self, connection: stream, outgoingTo: nil, now: EventLoop.now()), dialing: false)
        return true
    }

    private func evictOldestHandshaking() -> Bool {
        guard let oldest = connections.values.filter({ !$0.outgoing && $0.isHandshaking }).min(by: { $0.openedAt < $1.openedAt }) else {
            return false
        }
        oldest.close("evicted: no handshake while the server is full", peerFault: false)
        return true
    }

    private func nextConnectionID() -> Int {
        nextID += 1
        return nextID
    }

    private func add(_ peer: PeerConnection, dialing: Bool) {
        connections[peer.id] = peer
        limits.added(ip: peer.remote.ip, dialing: dialing)
    }

    /// Counts a handshaken peer against its torrent's limit.
    func attach(_ peer: PeerConnection, to swarm: Swarm) -> Bool {
        guard limits.hasRoom(torrent: swarm.index) else { return false }
        limits.attached(torrent: swarm.index)
        attachedTorrent[peer.id] = swarm.index
        return true
    }

    private var attachedTorrent: [Int: Int] = [:]

    func dialSucceeded(_ peer: PeerConnection) {
        limits.dialFinished()
        dialingIDs.remove(peer.id)
    }

    private var dialingIDs = Set<Int>()

    func markSelf(_ address: SocketAddress, swarm: Swarm) {
        swarm.candidates.markSelf(address)
    }

    func connectionClosed(_ peer: PeerConnection, reason: String, peerFault: Bool, wasConnecting: Bool) {
        guard connections.removeValue(forKey: peer.id) != nil else { return }
        if dialingIDs.remove(peer.id) != nil { limits.dialFinished() }
        limits.removed(ip: peer.remote.ip, torrent: attachedTorrent.removeValue(forKey: peer.id))
        let isFallback = fallbackIDs.remove(peer.id) != nil
        if peer.outgoing && wasConnecting && !isFallback && !stopping, let swarm = peer.swarm,
           let other = fallbackKind(after: peer.connection.kind), limits.canDial(ip: peer.remote.ip),
           let connection = outgoingTransport(to: peer.remote, kind: other) {
            // The preferred transport did not connect: try the other one before the
            // candidate counts as failed.
            logger.debug("peer \(peer.remote): \(reason); trying \(other.rawValue)")
            let retry = PeerConnection(id: nextConnectionID(), server: self, connection: connection, outgoingTo: swarm, now: EventLoop.now())
            dialingIDs.insert(retry.id)
            fallbackIDs.insert(retry.id)
            add(retry, dialing: true)
            return
        }
        if let swarm = peer.swarm {
            swarm.peerRemoved(peer)
            if peer.outgoing {
                let now = EventLoop.now()
                if wasConnecting || peer.session == nil { swarm.candidates.failed(peer.remote, now: now) } else { swarm.candidates.disconnected(peer.remote, now: now) }
            }
        }
        if peerFault {
            peerFaults += 1
            logger.info("disconnected peer \(peer.remote): \(reason)")
        } else {
            logger.debug("peer \(peer.remote) closed: \(reason)", metadata: ["uploaded": "\(peer.uploaded)"])
        }
    }

    private func dial(now: UInt64) {
        guard !stopping else { return }
        for swarm in swarms.values {
            guard limits.halfOpen < limits.maxHalfOpen else { return }
            guard swarm.torrent.state == .seeding, limits.hasRoom(torrent: swarm.index) else { continue }
            let room = min(limits.maxHalfOpen - limits.halfOpen, limits.maxPerTorrent - limits.count(torrent: swarm.index))
            let connected = Set(connections.values.filter { $0.swarm === swarm }.map(\.remote))
            let listening = Set(listeners.map { $0.address.port })
            let ready = swarm.candidates.takeReady(now: now, count: room) { address in
                connected.contains(address) || !self.limits.canDial(ip: address.ip)
                    || (listening.contains(address.port) && self.isLocalAddress(address))
            }
            for address in ready where limits.canDial(ip: address.ip) {
                let kind = preferredOutgoingKind
                guard let connection = outgoingTransport(to: address, kind: kind)
                    ?? fallbackKind(after: kind).flatMap({ outgoingTransport(to: address, kind: $0) }) else { continue }
                let peer = PeerConnection(id: nextConnectionID(), server: self, connection: connection, outgoingTo: swarm, now: now)
                dialingIDs.insert(peer.id)
                add(peer, dialing: true)
            }
        }
    }

    /// uTP on the UDP port; nil when it is off (`network.utp = false`) or the port could not be bound.
    var utp: UTPService?
    /// Dials that are the second transport's try, so a failure there does not loop back.
    private var fallbackIDs = Set<Int>()

    private var preferredOutgoingKind: PeerTransportKind {
        switch config.outgoing {
        case .preferUTP: return utp != nil ? .utp : .tcp
        case .utpOnly: return .utp
        case .preferTCP, .tcpOnly: return .tcp
        }
    }

    /// The transport to try when `kind` failed to connect, if the config allows one.
    private func fallbackKind(after kind: PeerTransportKind) -> PeerTransportKind? {
        switch (config.outgoing, kind) {
        case (.preferUTP, .utp): return .tcp
        case (.preferTCP, .tcp): return utp != nil ? .utp : nil
        default: return nil
        }
    }

    /// A connecting transport, or nil when uTP is wanted but unavailable (off, no UDP
    /// socket of that family, or the multiplexer full).
    private func outgoingTransport(to address: SocketAddress, kind: PeerTransportKind) -> PeerTransport? {
        switch kind {
        case .tcp: return TCPTransport(TCPConnection(loop: loop, connectingTo: address))
        case .utp: return utp?.connect(to: address)
        }
    }

    /// Our own listening address, which trackers hand back to us.
    private func isLocalAddress(_ address: SocketAddress) -> Bool {
        listeners.contains { $0.address == address }
    }

    // MARK: Blocks

    /// Memory for block batches, reused: a batch is at most a few hundred KiB.
    let blockBuffers = BufferPool(bufferSize: PeerConnection.maxBatch * (PeerMessage.pieceHeaderLength + BlockRequest.maxLength),
                                  maxFree: 32)

    /// Blocks read on the disk pool, framed as `piece` messages back to back in one
    /// buffer that the connection sends without copying.
    struct BlockBatch: Sendable {
        /// The connection's sequence number for the batch.
        let number: Int
        let blocks: [BlockRequest]
        /// Where each block's message starts in `buffer`; the last entry is the end.
        let offsets: [Int]
        let buffer: OutgoingBuffer
        /// Blocks that could not be read (index into `blocks`, and why).
        let failures: [(index: Int, error: StorageError)]
    }

    /// Reads `blocks` in one disk job: one hand-off to a disk thread and one back to the
    /// loop for the lot, each block read straight into the memory it is sent from.
    func readBlocks(_ blocks: [BlockRequest], number: Int, storage: TorrentStorage, pieceLength: Int, for peer: PeerConnection) {
        let bound = LoopBound(peer, loop: loop)
        let loop = self.loop
        let blockBuffers = self.blockBuffers
        pool.submit {
            var offsets: [Int] = []
            offsets.reserveCapacity(blocks.count + 1)
            var total = 0
            for block in blocks {
                offsets.append(total)
                total += PeerMessage.pieceHeaderLength + block.length
            }
            offsets.append(total)
            let buffer = OutgoingBuffer(count: total, pool: blockBuffers)
            var failures: [(index: Int, error: StorageError)] = []
            let bytes = buffer.bytes
            for (index, block) in blocks.enumerated() {
                guard bytes.count == total else {
                    failures.append((index, StorageError.system(path: "block buffer", operation: "malloc", errno: ENOMEM)))
                    continue
                }
                let start = offsets[index]
                PeerMessage.writePieceHeader(piece: block.piece, offset: block.offset, length: block.length,
                                             to: UnsafeMutableRawBufferPointer(rebasing: bytes[start..<(start + PeerMessage.pieceHeaderLength)]))
                let data = UnsafeMutableRawBufferPointer(rebasing: bytes[(start + PeerMessage.pieceHeaderLength)..<offsets[index + 1]])
                do throws(StorageError) {
                    try storage.read(offset: Int64(block.piece) * Int64(pieceLength) + Int64(block.offset), into: data)
                } catch {
                    failures.append((index, error))
                }
            }
            let batch = BlockBatch(number: number, blocks: blocks, offsets: offsets, buffer: buffer, failures: failures)
            loop.post { bound.value.blocksRead(batch) }
        }
    }

    func uploaded(_ bytes: Int) {
        uploadedBytes += Int64(bytes)
    }

    func downloaded(_ bytes: Int, over kind: PeerTransportKind) {
        downloadedBytes += Int64(bytes)
        if kind == .utp { downloadedUTPBytes += Int64(bytes) }
    }

    // MARK: Bans

    private static func text(ip: [UInt8]) -> String { SocketAddress(ip: ip, port: 0)?.ipString ?? "\(ip)" }

    func isBanned(_ ip: [UInt8]) -> Bool { strikes.isBanned(ip) }

    /// A downloaded piece failed its hash check: a strike for each address that sent a
    /// block of it; an address reaching the threshold is banned for the session, its
    /// connections closed and its candidate entries never dialed.
    func pieceFailed(_ piece: Int, of torrent: Torrent, failure: PiecePicker<DownloadPeer>.HashFailure) {
        hashFailures += 1
        let senders = Set(failure.contributors.map(\.ip))
        let blamed = Set(failure.blamed.map(\.ip))
        logger.warning("piece \(piece) of \(torrent.name) failed its hash check", metadata: [
            "senders": "\(senders.map { Self.text(ip: $0) }.sorted().joined(separator: ","))",
            "struck": "\(blamed.map { Self.text(ip: $0) }.sorted().joined(separator: ","))",
        ])
        for ip in strikes.pieceFailed(blamed: blamed) {
            let text = Self.text(ip: ip)
            logger.warning("banned peer \(text): sent blocks of \(strikes.threshold) pieces that failed their hash check")
            for swarm in swarms.values { swarm.candidates.ban(ip: ip) }
            for peer in Array(connections.values) where peer.remote.ip == ip {
                peer.close("banned: sent pieces that failed their hash check", peerFault: true)
            }
        }
    }

    func servedBlocks(_ count: Int) {
        blocksServed += Int64(count)
    }

    // MARK: Periodic work

    private func tick() {
        let now = EventLoop.now()
        for peer in Array(connections.values) {
            peer.tick(now: now, handshakeTimeout: Self.handshakeTimeout)
        }
        if now - lastRechoke >= Self.rechokeInterval {
            lastRechoke = now
            for swarm in swarms.values { swarm.rechoke(now: now) }
        }
        dial(now: now)
    }

    /// A reloaded config's connection limits, upload slots and ban threshold;
    /// connections over a lowered limit are not cut, new ones wait until the count is
    /// under it.
    func apply(limits new: SeederConfig) {
        config = new
        bandwidth.setGlobal(.init(upload: new.uploadLimit, download: new.downloadLimit), burst: new.burst > 0 ? new.burst : nil)
        countOverhead = new.countOverhead
        for swarm in swarms.values { bandwidth.set(swarm.bandwidth, limits: Self.limits(of: swarm.torrent, config: new)) }
        limits.maxConnections = new.maxConnections
        limits.maxPerTorrent = new.maxConnectionsPerTorrent
        limits.maxPerIP = new.maxConnectionsPerIP
        limits.maxHalfOpen = new.maxHalfOpen
        for swarm in swarms.values { swarm.setUploadSlots(new.uploadSlots) }
        strikes.setThreshold(new.invalidThreshold)
    }

    /// Stops accepting and closes every peer.
    func stop() {
        stopping = true
        tickTimer?.cancel()
        for listener in listeners { listener.close() }
        listeners.removeAll()
        for peer in Array(connections.values) { peer.close("shutting down", peerFault: false) }
    }
}
