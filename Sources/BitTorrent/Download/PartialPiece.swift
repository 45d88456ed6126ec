/// The state of one block of a piece being downloaded.
public enum BlockState<Peer: Hashable>: Equatable {
    /// Nobody has it and nobody is asked for it.
    case open
    /// Asked of these peers, oldest request first. More than one only in end game.
    case requested([BlockRequester<Peer>])
    /// Received from this peer and handed to the caller to write.
    case received(from: Peer)
}

/// One outstanding request for a block: who was asked and when (monotonic µs).
public struct BlockRequester<Peer: Hashable>: Equatable {
    public let peer: Peer
    public let since: UInt64

    public init(peer: Peer, since: UInt64) {
        self.peer = peer
        self.since = since
    }
}

extension BlockState: Sendable where Peer: Sendable {}
extension BlockRequester: Sendable where Peer: Sendable {}

/// A piece with at least one block requested or received: the per-block state the
/// picker keeps only for the few pieces in flight (bounded by the partial-piece limit),
/// so that a torrent of a million pieces costs a bitfield and a counter per piece, not
/// a block table.
struct PartialPiece<Peer: Hashable> {
    var blocks: [BlockState<Peer>]
    /// Blocks in `.open`.
    private(set) var openCount: Int
    /// Blocks in `.received`.
    private(set) var receivedCount: Int
    /// Set when a peer on parole started the piece: nobody else is asked for its
    /// blocks, so its hash result is that peer's alone.
    var exclusiveTo: Peer?

    init(blockCount: Int, exclusiveTo: Peer? = nil) {
        self.exclusiveTo = exclusiveTo
        blocks = Array(repeating: .open, count: blockCount)
        openCount = blockCount
        receivedCount = 0
    }

    /// Every block is here: the piece waits for its hash check and takes no requests.
    var isFullyReceived: Bool { receivedCount == blocks.count }

    mutating func set(_ index: Int, _ state: BlockState<Peer>) {
        switch blocks[index] {
        case .open: openCount -= 1
        case .received: receivedCount -= 1
        case .requested: break
        }
        switch state {
        case .open: openCount += 1
        case .received: receivedCount += 1
        case .requested: break
        }
        blocks[index] = state
    }

    /// Peers that sent any block of the piece: whom to blame when its hash fails.
    var contributors: Set<Peer> {
        var peers = Set<Peer>()
        for case .received(let peer) in blocks { peers.insert(peer) }
        return peers
    }
}

extension PartialPiece: Sendable where Peer: Sendable {}
