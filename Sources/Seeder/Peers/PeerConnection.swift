import BitTorrent
import EventLoop
import Logging

/// One peer over TCP: the handshake, then a PeerSession whose decisions it carries
/// out, with block reads on the disk pool. Loop-owned.
final class PeerConnection: TCPConnectionDelegate {
    enum Phase {
        /// Incoming: waiting for the peer's handshake (48 bytes pick the torrent).
        case awaitingHandshake
        /// We sent our handshake and know the torrent; waiting for the peer's 20-byte id
        /// (incoming) or its whole handshake (outgoing).
        case awaitingPeerID(reserved: [UInt8])
        case awaitingConnect
        case active
        case closed
    }

    let id: Int
    let connection: TCPConnection
    let remote: SocketAddress
    let outgoing: Bool
    let openedAt: UInt64
    private unowned let server: PeerServer
    private(set) var phase: Phase
    private(set) var swarm: Swarm?
    private(set) var session: PeerSession?
    private(set) var peerID: [UInt8]?
    private var decoder: PeerMessageDecoder
    private var readsInFlight = 0
    private(set) var uploaded: Int64 = 0
    var everReceived = false

    /// Block reads kept in flight per peer: enough to keep a fast link busy while the
    /// disk answers, few enough that a thousand peers cannot flood the disk queue.
    static let maxReadsInFlight = 8
    /// Output queued before we stop reading blocks for this peer.
    static let outputHighWatermark = 512 << 10

    init(id: Int, server: PeerServer, connection: TCPConnection, outgoingTo swarm: Swarm?, now: UInt64) {
        self.id = id
        self.server = server
        self.connection = connection
        remote = connection.remote
        outgoing = swarm != nil
        openedAt = now
        self.swarm = swarm
        phase = swarm != nil ? .awaitingConnect : .awaitingHandshake
        decoder = PeerMessageDecoder(maxMessageLength: PeerMessageDecoder.limit(pieceCount: swarm?.torrent.metainfo.pieceCount ?? 0))
        connection.delegate = self
    }

    var isHandshaking: Bool {
        switch phase {
        case .awaitingHandshake, .awaitingPeerID, .awaitingConnect: return true
        case .active, .closed: return false
        }
    }

    var isClosed: Bool {
        if case .closed = phase { return true }
        return false
    }

    // MARK: TCPConnectionDelegate

    func connectionEstablished(_ connection: TCPConnection) {
        server.dialSucceeded(self)
        guard let swarm else { return }
        phase = .awaitingPeerID(reserved: [])
        connection.write(Handshake(reserved: Handshake.ourReserved, infoHash: swarm.torrent.infoHash, peerID: server.peerID).encoded())
    }

    func connectionReadable(_ connection: TCPConnection) {
        connection.readAvailable { bytes in decoder.append(bytes) }
        everReceived = true
        processInput()
    }

    func connectionWritable(_ connection: TCPConnection) {
        pumpReads()
    }

    func connectionClosed(_ connection: TCPConnection, reason: String) {
        finish(reason: reason, peerFault: false)
    }

    // MARK: Input

    private func processInput() {
        let now = EventLoop.now()
        while true {
            switch phase {
            case .awaitingHandshake:
                guard decoder.bufferedByteCount >= Handshake.prefixLength else { return }
                let prefix = decoder.takeRaw(Handshake.prefixLength)!
                let parsed: (reserved: [UInt8], infoHash: InfoHash)
                do { parsed = try Handshake.parsePrefix(prefix) } catch {
                    return close("\(error)", peerFault: true)
                }
                guard let found = server.swarm(for: parsed.infoHash) else {
                    return close("handshake for unknown torrent \(parsed.infoHash)", peerFault: true)
                }
                guard server.attach(self, to: found) else {
                    return close("torrent \(found.torrent.name) is at its connection limit", peerFault: false)
                }
                swarm = found
                decoder.maxMessageLength = PeerMessageDecoder.limit(pieceCount: found.torrent.metainfo.pieceCount)
                connection.write(Handshake(reserved: Handshake.ourReserved, infoHash: found.torrent.infoHash, peerID: server.peerID).encoded())
                phase = .awaitingPeerID(reserved: parsed.reserved)
            case .awaitingPeerID(let reserved):
                guard let swarm else { return close("no torrent", peerFault: false) }
                var peerReserved = reserved
                if outgoing {
                    guard decoder.bufferedByteCount >= Handshake.length else { return }
                    let bytes = decoder.takeRaw(Handshake.length)!
                    let parsed: (reserved: [UInt8], infoHash: InfoHash)
                    do { parsed = try Handshake.parsePrefix(bytes) } catch {
                        return close("\(error)", peerFault: true)
                    }
                    guard parsed.infoHash == swarm.torrent.infoHash else {
                        return close("peer answered with another torrent", peerFault: true)
                    }
                    peerReserved = parsed.reserved
                    peerID = Array(bytes[48..<68])
                } else {
                    guard decoder.bufferedByteCount >= 20 else { return }
                    peerID = decoder.takeRaw(20)!
                }
                if peerID == server.peerID {
                    server.markSelf(remote, swarm: swarm)
                    return close("connected to ourselves", peerFault: false)
                }
                if outgoing && !server.attach(self, to: swarm) {
                    return close("torrent \(swarm.torrent.name) is at its connection limit", peerFault: false)
                }
                var session = PeerSession(configuration: server.sessionConfiguration, peerReserved: peerReserved, now: now)
                let outputs = session.start(torrent: swarm.view, yourIP: remote.ip, now: now)
                self.session = session
                phase = .active
                swarm.peerActivated(self)
                server.logger.debug("peer connected", metadata: ["peer": "\(remote)", "torrent": "\(swarm.torrent.name)",
                                                                 "client": "\(PeerConnection.describe(peerID: peerID!))",
                                                                 "direction": "\(outgoing ? "out" : "in")"])
                guard perform(outputs) else { return }
            case .active:
                guard let swarm else { return }
                let message: PeerMessage?
                do { message = try decoder.next() } catch {
                    return close("\(error)", peerFault: true)
                }
                guard let message else {
                    pumpReads()
                    return
                }
                let wasInterested = session!.peerInterested
                let outputs = session!.receive(message, torrent: swarm.view, now: now)
                guard perform(outputs) else { return }
                if session!.peerInterested != wasInterested { swarm.interestChanged(self) }
            case .awaitingConnect, .closed:
                return
            }
        }
    }

    /// Carries out a session's outputs; false once the connection closed.
    @discardableResult
    private func perform(_ outputs: [PeerSession.Output]) -> Bool {
        guard !outputs.isEmpty else { return true }
        var bytes: [UInt8] = []
        for output in outputs {
            switch output {
            case .send(let message):
                message.encode(into: &bytes)
            case .close(let reason):
                connection.write(bytes)
                close(reason.description, peerFault: reason.isPeerFault)
                return false
            }
        }
        connection.write(bytes)
        return true
    }

    // MARK: Serving blocks

    /// Starts disk reads for queued requests while the socket has room.
    func pumpReads() {
        guard case .active = phase, let swarm else { return }
        while readsInFlight < Self.maxReadsInFlight && connection.outputLength < Self.outputHighWatermark,
              let block = session!.nextRequest() {
            readsInFlight += 1
            server.readBlock(block, storage: swarm.torrent.storage, pieceLength: swarm.torrent.metainfo.pieceLength, for: self)
        }
    }

    /// A disk read finished (on the loop).
    func blockRead(_ block: BlockRequest, message: [UInt8]?, error: StorageError?) {
        readsInFlight -= 1
        guard case .active = phase, let swarm else { return }
        let now = EventLoop.now()
        if let message {
            switch session!.blockRead(block, now: now) {
            case .send:
                connection.write(message)
                uploaded += Int64(block.length)
                swarm.uploaded(block.length)
                server.uploaded(block.length)
            case .reject:
                perform([.send(.rejectRequest(block))])
            case .drop:
                break
            }
        } else {
            server.logger.error("cannot read \(block) of \(swarm.torrent.name): \(error?.description ?? "unknown error")")
            guard perform(session!.blockReadFailed(block)) else { return }
        }
        pumpReads()
    }

    // MARK: Control

    func setChoking(_ choke: Bool) {
        guard case .active = phase else { return }
        if perform(session!.setChoking(choke, now: EventLoop.now())) { pumpReads() }
    }

    /// Timeouts and keepalives, from the server's periodic tick.
    func tick(now: UInt64, handshakeTimeout: UInt64) {
        switch phase {
        case .awaitingHandshake, .awaitingPeerID, .awaitingConnect:
            if now - openedAt >= handshakeTimeout {
                close(isConnectPhase ? "connect timed out" : "no handshake within \(handshakeTimeout / 1_000_000) s", peerFault: false)
            }
        case .active:
            perform(session!.tick(now: now))
        case .closed:
            break
        }
    }

    private var isConnectPhase: Bool {
        if case .awaitingConnect = phase { return true }
        return false
    }

    func close(_ reason: String, peerFault: Bool) {
        guard !isClosed else { return }
        connection.close()
        finish(reason: reason, peerFault: peerFault)
    }

    private func finish(reason: String, peerFault: Bool) {
        guard !isClosed else { return }
        let wasConnecting = isConnectPhase
        phase = .closed
        server.connectionClosed(self, reason: reason, peerFault: peerFault, wasConnecting: wasConnecting)
    }

    static func describe(peerID: [UInt8]) -> String {
        let printable = peerID.prefix(8).map { (0x20...0x7E).contains($0) ? Character(Unicode.Scalar($0)) : "." }
        return String(printable)
    }
}
