/// What a peer session needs to know about its torrent, passed in on each event so
/// that hundreds of sessions share one copy of the bitfield.
public struct TorrentView: Sendable {
    public var pieceCount: Int
    public var pieceLength: Int
    public var totalLength: Int64
    public var have: Bitfield

    public init(pieceCount: Int, pieceLength: Int, totalLength: Int64, have: Bitfield) {
        self.pieceCount = pieceCount
        self.pieceLength = pieceLength
        self.totalLength = totalLength
        self.have = have
    }

    public init(metainfo: Metainfo, have: Bitfield) {
        self.init(pieceCount: metainfo.pieceCount, pieceLength: metainfo.pieceLength, totalLength: metainfo.totalLength, have: have)
    }

    public func length(ofPiece index: Int) -> Int {
        index == pieceCount - 1 ? Int(totalLength - Int64(index) * Int64(pieceLength)) : pieceLength
    }

    public var isComplete: Bool { have.isComplete }
}

/// Why a session ended; logged and counted.
public enum PeerCloseReason: Equatable, Sendable, CustomStringConvertible {
    case protocolError(String)
    case invalidRequest(BlockRequest, String)
    case bothSeeds
    case timedOut(String)
    case requestFlood(Int)

    public var description: String {
        switch self {
        case .protocolError(let why): return "protocol error: \(why)"
        case .invalidRequest(let block, let why): return "invalid request (\(block)): \(why)"
        case .bothSeeds: return "both sides are seeds"
        case .timedOut(let why): return "timed out: \(why)"
        case .requestFlood(let count): return "more than \(count) requests past the queue of \(count)"
        }
    }

    /// Whether the peer misbehaved (counted as a bad peer), rather than a normal end.
    public var isPeerFault: Bool {
        switch self {
        case .protocolError, .invalidRequest, .requestFlood: return true
        case .bothSeeds, .timedOut: return false
        }
    }
}

/// One peer connection's wire protocol after the handshake, as a seed: BEP 3 with the
/// BEP 6 fast extension and the BEP 10 extension handshake. Pure: messages and time
/// in, messages to send and decisions out.
///
/// Fast extension rule held here: every request gets exactly one `piece` or one
/// `reject_request`, including cancelled ones and those pending when we choke.
public struct PeerSession {
    public struct Configuration: Sendable {
        /// Requests we accept outstanding (our `reqq`).
        public var requestQueueLength = 500
        public var clientVersion = "Seeder"
        public var keepAliveInterval: UInt64 = 60_000_000
        public var idleTimeout: UInt64 = 120_000_000
        public var listenPort: Int?

        public init() {}
    }

    public enum Output: Equatable, Sendable {
        case send(PeerMessage)
        case close(PeerCloseReason)
    }

    /// What to do with a block whose disk read finished.
    public enum BlockDisposition: Equatable, Sendable {
        case send
        case reject
        case drop
    }

    enum State {
        case active
        case closed(PeerCloseReason)
    }

    private var state: State = .active
    public let configuration: Configuration
    public let peerSupportsFast: Bool
    public let peerSupportsExtensions: Bool

    public private(set) var amChoking = true
    public private(set) var peerInterested = false
    public private(set) var peerChoking = true
    public private(set) var peerExtensions: ExtensionHandshake?
    /// Pieces the peer has said it holds.
    public private(set) var peerPieceCount = 0
    public private(set) var peerHasAll = false
    private var peerHave: Bitfield?

    /// Requests accepted and not yet handed to the disk.
    public private(set) var queued: [BlockRequest] = []
    private var queuedHead = 0
    /// How many times each block is in `queued`: a cancel for a block that is not queued
    /// (a peer may send them by the million) costs a lookup, not a walk of the queue.
    private var queuedCounts: [BlockRequest: Int] = [:]
    /// Requests being read; true once they were cancelled or rejected while reading.
    private var reading: [BlockRequest: Bool] = [:]

    private var overflowedRequests = 0
    private var lastReceived: UInt64
    private var lastSent: UInt64

    public init(configuration: Configuration, peerReserved: [UInt8], now: UInt64) {
        self.configuration = configuration
        peerSupportsFast = peerReserved.count == 8 && peerReserved[7] & 0x04 != 0
        peerSupportsExtensions = peerReserved.count == 8 && peerReserved[5] & 0x10 != 0
        lastReceived = now
        lastSent = now
    }

    public var isClosed: Bool {
        if case .closed = state { return true }
        return false
    }

    /// Requests waiting for a disk read.
    public var queuedCount: Int { queued.count - queuedHead }
    public var readingCount: Int { reading.count }
    public var peerIsSeed: Bool { peerHasAll || peerHave?.isComplete == true }

    /// The messages that open the conversation after the handshakes: the extension
    /// handshake, then exactly one of bitfield, have_all, have_none.
    public mutating func start(torrent: TorrentView, yourIP: [UInt8]?, now: UInt64) -> [Output] {
        var out: [Output] = []
        if peerSupportsExtensions {
            var handshake = ExtensionHandshake()
            handshake.clientVersion = configuration.clientVersion
            handshake.requestQueueLength = configuration.requestQueueLength
            handshake.uploadOnly = torrent.isComplete
            handshake.yourIP = yourIP
            handshake.listenPort = configuration.listenPort
            out.append(.send(.extended(id: 0, payload: handshake.encoded())))
        }
        if peerSupportsFast && torrent.have.isComplete {
            out.append(.send(.haveAll))
        } else if peerSupportsFast && torrent.have.isEmpty {
            out.append(.send(.haveNone))
        } else {
            out.append(.send(.bitfield(torrent.have.bytes)))
        }
        lastSent = now
        return out
    }

    public mutating func receive(_ message: PeerMessage, torrent: TorrentView, now: UInt64) -> [Output] {
        guard case .active = state else { return [] }
        lastReceived = now
        switch message {
        case .keepAlive, .port, .suggestPiece, .allowedFast, .unknown, .piece:
            // A seed asks for nothing, so a piece is unsolicited; it is dropped, as are
            // suggestions and allowed-fast sets we have no use for.
            return []
        case .choke:
            peerChoking = true
            return []
        case .unchoke:
            peerChoking = false
            return []
        case .interested:
            peerInterested = true
            return []
        case .notInterested:
            peerInterested = false
            return []
        case .have(let piece):
            guard piece < torrent.pieceCount else { return close(.protocolError("have for piece \(piece) of \(torrent.pieceCount)")) }
            if peerHave == nil { peerHave = Bitfield(count: torrent.pieceCount) }
            if !peerHave![piece] {
                peerHave![piece] = true
                peerPieceCount += 1
            }
            return checkBothSeeds(torrent)
        case .bitfield(let bytes):
            guard let bitfield = Bitfield(count: torrent.pieceCount, bytes: bytes) else {
                return close(.protocolError("bitfield of \(bytes.count) bytes for \(torrent.pieceCount) pieces"))
            }
            peerHave = bitfield
            peerPieceCount = bitfield.setCount
            return checkBothSeeds(torrent)
        case .haveAll:
            guard peerSupportsFast else { return close(.protocolError("have_all without the fast extension")) }
            peerHasAll = true
            peerPieceCount = torrent.pieceCount
            return checkBothSeeds(torrent)
        case .haveNone:
            guard peerSupportsFast else { return close(.protocolError("have_none without the fast extension")) }
            return []
        case .request(let block):
            return request(block, torrent: torrent)
        case .cancel(let block):
            return cancel(block)
        case .rejectRequest:
            return []
        case .extended(let id, let payload):
            guard id == 0 else { return [] }  // we advertise no extension messages
            do {
                peerExtensions = try ExtensionHandshake(payload: payload)
            } catch {
                return close(.protocolError("extension handshake: \(error)"))
            }
            return checkBothSeeds(torrent)
        }
    }

    private mutating func request(_ block: BlockRequest, torrent: TorrentView) -> [Output] {
        guard block.piece < torrent.pieceCount else {
            return rejectAndClose(block, "no piece \(block.piece) in a torrent of \(torrent.pieceCount)")
        }
        guard block.length > 0 && block.length <= BlockRequest.maxLength else {
            return rejectAndClose(block, "length \(block.length) is outside 1...\(BlockRequest.maxLength)")
        }
        let pieceLength = torrent.length(ofPiece: block.piece)
        guard block.offset + block.length <= pieceLength else {
            return rejectAndClose(block, "ends at \(block.offset + block.length), past the piece's \(pieceLength) bytes")
        }
        guard torrent.have[block.piece] else {
            return rejectAndClose(block, "piece \(block.piece) is not one we said we have")
        }
        if amChoking {
            // Requests racing our choke are normal: reject (fast) or ignore them.
            return peerSupportsFast ? [.send(.rejectRequest(block))] : []
        }
        if queuedCount + reading.count >= configuration.requestQueueLength {
            // Past reqq: reject the excess. A client overshoots now and then; one that
            // keeps at it as many times again as reqq allows is flooding us.
            overflowedRequests += 1
            if overflowedRequests > configuration.requestQueueLength {
                return close(.requestFlood(configuration.requestQueueLength))
            }
            return peerSupportsFast ? [.send(.rejectRequest(block))] : []
        }
        queued.append(block)
        queuedCounts[block, default: 0] += 1
        return []
    }

    private mutating func cancel(_ block: BlockRequest) -> [Output] {
        if dequeueCount(block), let index = queued[queuedHead...].firstIndex(of: block) {
            queued.remove(at: index)
            return peerSupportsFast ? [.send(.rejectRequest(block))] : []
        }
        if reading[block] == false {
            // Being read: the reject goes out now, and the block is dropped when read.
            reading[block] = true
            return peerSupportsFast ? [.send(.rejectRequest(block))] : []
        }
        return []
    }

    /// Counts one copy of `block` out of `queued`; false when none is there.
    private mutating func dequeueCount(_ block: BlockRequest) -> Bool {
        guard let count = queuedCounts[block] else { return false }
        queuedCounts[block] = count > 1 ? count - 1 : nil
        return true
    }

    /// The next request to read from disk, if any; it counts as being read until
    /// `blockRead` or `blockReadFailed`.
    public mutating func nextRequest() -> BlockRequest? {
        guard case .active = state, queuedHead < queued.count else { return nil }
        let block = queued[queuedHead]
        queuedHead += 1
        _ = dequeueCount(block)
        if queuedHead == queued.count {
            queued.removeAll(keepingCapacity: true)
            queuedHead = 0
        } else if queuedHead > 256 && queuedHead * 2 > queued.count {
            queued.removeFirst(queuedHead)
            queuedHead = 0
        }
        reading[block] = false
        return block
    }

    /// A block's read finished: send it, unless it was cancelled or rejected meanwhile.
    public mutating func blockRead(_ block: BlockRequest, now: UInt64) -> BlockDisposition {
        guard let settled = reading.removeValue(forKey: block), case .active = state else { return .drop }
        if settled { return .drop }
        lastSent = now
        return .send
    }

    /// A block could not be read (our data is gone or unreadable): the peer is not at
    /// fault, so it gets a reject where the fast extension allows one.
    public mutating func blockReadFailed(_ block: BlockRequest) -> [Output] {
        guard let settled = reading.removeValue(forKey: block), !settled, case .active = state else { return [] }
        return peerSupportsFast ? [.send(.rejectRequest(block))] : []
    }

    /// Our choke decision for this peer.
    public mutating func setChoking(_ choke: Bool, now: UInt64) -> [Output] {
        guard case .active = state, choke != amChoking else { return [] }
        amChoking = choke
        lastSent = now
        guard choke else { return [.send(.unchoke)] }
        var out: [Output] = [.send(.choke)]
        // BEP 6: choking rejects everything pending. Without the fast extension the
        // peer drops its own outstanding requests when it sees the choke.
        if peerSupportsFast {
            for block in queued[queuedHead...] { out.append(.send(.rejectRequest(block))) }
            for (block, settled) in reading where !settled { out.append(.send(.rejectRequest(block))) }
        }
        queued.removeAll()
        queuedCounts.removeAll()
        queuedHead = 0
        for block in reading.keys { reading[block] = true }
        return out
    }

    /// Keepalives and the idle timeout; call every few seconds.
    public mutating func tick(now: UInt64) -> [Output] {
        guard case .active = state else { return [] }
        if now > lastReceived && now - lastReceived >= configuration.idleTimeout {
            return close(.timedOut("nothing received for \(configuration.idleTimeout / 1_000_000) s"))
        }
        if now > lastSent && now - lastSent >= configuration.keepAliveInterval {
            lastSent = now
            return [.send(.keepAlive)]
        }
        return []
    }

    /// Note that something was sent outside the session (piece data), for keepalives.
    public mutating func sent(now: UInt64) {
        lastSent = now
    }

    /// Tell the peer about a piece we just finished (downloads).
    public mutating func announce(piece: Int, now: UInt64) -> [Output] {
        guard case .active = state else { return [] }
        lastSent = now
        return [.send(.have(piece: piece))]
    }

    /// Our torrent just became complete (a download finished): a peer that is a seed
    /// has nothing for us now, nor we for it.
    public mutating func torrentCompleted(torrent: TorrentView) -> [Output] {
        guard case .active = state else { return [] }
        return checkBothSeeds(torrent)
    }

    private mutating func checkBothSeeds(_ torrent: TorrentView) -> [Output] {
        guard torrent.isComplete else { return [] }
        return peerIsSeed ? close(.bothSeeds) : []
    }

    private mutating func rejectAndClose(_ block: BlockRequest, _ why: String) -> [Output] {
        var out: [Output] = []
        if peerSupportsFast { out.append(.send(.rejectRequest(block))) }
        out.append(contentsOf: close(.invalidRequest(block, why)))
        return out
    }

    private mutating func close(_ reason: PeerCloseReason) -> [Output] {
        state = .closed(reason)
        queued.removeAll()
        queuedCounts.removeAll()
        queuedHead = 0
        reading.removeAll()
        return [.close(reason)]
    }
}
