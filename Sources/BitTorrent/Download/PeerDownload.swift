/// The download half of one peer connection: the peer's BEP 3 / BEP 6 messages in,
/// `PiecePicker` and `RequestPipeline` events through, and what to send or do out.
/// It runs beside the seed-side `PeerSession` on the same messages: the session
/// answers the peer's requests, this asks for blocks. Pure, like both of those.
///
/// BEP 6 in this direction:
/// - `reject_request` puts the block back in the pool (from a peer without the fast
///   extension it is a protocol error);
/// - `allowed_fast` pieces may be requested while the peer chokes us;
/// - `have_all` / `have_none` stand for a bitfield;
/// - a choke from a fast peer cancels nothing (it must reject each request); from
///   any other peer it discards every request;
/// - `suggest_piece` is ignored, as the BEP allows.
public struct PeerDownload<Peer: Hashable> {
    public enum Output: Equatable {
        /// Send to this peer: interested, not_interested, request or cancel.
        case send(PeerMessage)
        /// The `piece` just received is wanted: write its data.
        case write(BlockRequest)
        /// That write completed the piece: once written, hash it, then call
        /// `PiecePicker.pieceVerified` or `pieceFailed` (see the torrent-level steps).
        case verify(piece: Int)
        /// End game: `peer` has the same block outstanding; call its
        /// `PeerDownload.cancel(_:)`, which sends the `cancel`.
        case cancel(BlockRequest, at: Peer)
        /// The peer broke the protocol; disconnect, then call `disconnected`.
        case close(PeerCloseReason)
    }

    public let peer: Peer
    public let peerSupportsFast: Bool
    public private(set) var peerChoking = true
    public private(set) var amInterested = false
    public private(set) var isClosed = false
    public var pipeline: RequestPipeline
    /// Blocks that answered no request of ours (wrong size, never asked): the caller
    /// may disconnect a peer that piles these up.
    public private(set) var unexpectedBlocks = 0

    public init(peer: Peer, peerSupportsFast: Bool, pipeline: RequestPipeline.Configuration = .init(), now: UInt64) {
        self.peer = peer
        self.peerSupportsFast = peerSupportsFast
        self.pipeline = RequestPipeline(configuration: pipeline, now: now)
    }

    /// The peer's BEP 10 handshake: its `reqq` caps our pipeline.
    public mutating func extensionHandshake(_ handshake: ExtensionHandshake) {
        pipeline.peerQueueLength = handshake.requestQueueLength
    }

    /// A message from the peer. Messages of the seed direction (request, cancel,
    /// interested ...) are ignored here.
    public mutating func receive(_ message: PeerMessage, picker: inout PiecePicker<Peer>, now: UInt64,
                                 using random: inout some RandomNumberGenerator) -> [Output] {
        guard !isClosed else { return [] }
        var out: [Output] = []
        switch message {
        case .choke:
            peerChoking = true
            if !peerSupportsFast {
                _ = picker.peerChoked(peer, peerSupportsFast: false)
                _ = pipeline.removeAll()
            }
        case .unchoke:
            peerChoking = false
        case .have(let piece):
            guard picker.peerHave(peer, piece: piece) else {
                return close(.protocolError("have for piece \(piece) of \(picker.layout.pieceCount)"))
            }
        case .bitfield(let bytes):
            guard let bitfield = Bitfield(count: picker.layout.pieceCount, bytes: bytes) else {
                return close(.protocolError("bitfield of \(bytes.count) bytes for \(picker.layout.pieceCount) pieces"))
            }
            picker.peerBitfield(peer, bitfield)
        case .haveAll, .haveNone:
            guard peerSupportsFast else { return close(.protocolError("have_all/have_none without the fast extension")) }
            if message == .haveAll { picker.peerHaveAll(peer) } else { picker.peerHaveNone(peer) }
        case .allowedFast(let piece):
            // Out-of-range or surplus allowed-fast indices are harmless: ignored.
            guard peerSupportsFast else { return close(.protocolError("allowed_fast without the fast extension")) }
            picker.peerAllowedFast(peer, piece: piece)
        case .rejectRequest(let block):
            guard peerSupportsFast else { return close(.protocolError("reject_request without the fast extension")) }
            // A reject for something no longer outstanding (we cancelled it) is normal.
            guard pipeline.remove(block) else { return [] }
            picker.requestRejected(block, by: peer, now: now)
            // Rejected while choking us: the piece is no longer allowed fast for us.
            if peerChoking { picker.peerRevokedAllowedFast(peer, piece: block.piece) }
        case .piece(let piece, let offset, let data):
            let block = BlockRequest(piece: piece, offset: offset, length: data.count)
            let arrival = pipeline.received(block, now: now)
            let receipt = picker.blockReceived(block, from: peer, now: now)
            if case .accepted(let completes, let others) = receipt {
                out.append(.write(block))
                for other in others { out.append(.cancel(block, at: other)) }
                if completes { out.append(.verify(piece: piece)) }
            }
            // A block still needed is kept even unasked (the hash check guards it),
            // but asking for nothing and getting it counts against the peer.
            if receipt == .unexpected || arrival == .unrequested { unexpectedBlocks += 1 }
        default:
            return []
        }
        out += updateInterest(picker: picker)
        out += fill(picker: &picker, now: now, using: &random)
        return out
    }

    /// Another peer delivered a block this peer also had outstanding (end game): the
    /// picker has already released it here; send the `cancel`.
    public mutating func cancel(_ block: BlockRequest, picker: inout PiecePicker<Peer>, now: UInt64,
                                using random: inout some RandomNumberGenerator) -> [Output] {
        guard !isClosed, pipeline.remove(block) else { return [] }
        return [.send(.cancel(block))] + fill(picker: &picker, now: now, using: &random)
    }

    /// Call every second or so: request time-outs, snubbing, and topping up the
    /// pipeline with blocks other peers released.
    public mutating func tick(picker: inout PiecePicker<Peer>, now: UInt64,
                              using random: inout some RandomNumberGenerator) -> [Output] {
        guard !isClosed else { return [] }
        let result = pipeline.tick(now: now)
        for block in result.timedOut { picker.requestTimedOut(block, at: peer, now: now) }
        return updateInterest(picker: picker) + fill(picker: &picker, now: now, using: &random)
    }

    /// Sends `interested` / `not_interested` when our need for the peer's pieces
    /// changed: after any `pieceVerified`, call it for every peer.
    public mutating func updateInterest(picker: PiecePicker<Peer>) -> [Output] {
        guard !isClosed else { return [] }
        let wanted = picker.isInteresting(peer)
        guard wanted != amInterested else { return [] }
        amInterested = wanted
        return [.send(wanted ? .interested : .notInterested)]
    }

    /// Requests as many blocks as the pipeline has room for, if the peer lets us.
    public mutating func fill(picker: inout PiecePicker<Peer>, now: UInt64,
                              using random: inout some RandomNumberGenerator) -> [Output] {
        guard !isClosed, amInterested, !peerChoking || peerSupportsFast else { return [] }
        let room = pipeline.room
        guard room > 0 else { return [] }
        let blocks = picker.pick(for: peer, count: room, peerChoking: peerChoking, now: now, using: &random)
        pipeline.requested(blocks, now: now)
        return blocks.map { .send(.request($0)) }
    }

    /// The connection is gone: its requests return to the pool, its pieces stop
    /// counting toward availability.
    public mutating func disconnected(picker: inout PiecePicker<Peer>) {
        isClosed = true
        _ = pipeline.removeAll()
        picker.peerLeft(peer)
    }

    private mutating func close(_ reason: PeerCloseReason) -> [Output] {
        isClosed = true
        return [.close(reason)]
    }
}

extension PeerDownload: Sendable where Peer: Sendable {}
extension PeerDownload.Output: Sendable where Peer: Sendable {}
