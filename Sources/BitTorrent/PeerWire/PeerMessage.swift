/// A block of a piece: what `request`, `cancel` and `reject_request` name.
public struct BlockRequest: Hashable, Sendable, CustomStringConvertible {
    public let piece: Int
    public let offset: Int
    public let length: Int

    public init(piece: Int, offset: Int, length: Int) {
        self.piece = piece
        self.offset = offset
        self.length = length
    }

    public var description: String { "piece \(piece) offset \(offset) length \(length)" }

    /// The largest block anyone sends: libtorrent and Transmission disconnect a peer
    /// that sends more in one `piece` message.
    public static let maxLength = 16 << 10
}

/// Peer wire messages: BEP 3, BEP 5's `port`, BEP 6 (fast extension) and BEP 10
/// (extension protocol).
public enum PeerMessage: Equatable, Sendable {
    case keepAlive
    case choke
    case unchoke
    case interested
    case notInterested
    case have(piece: Int)
    case bitfield([UInt8])
    case request(BlockRequest)
    /// A block; `data` holds the block's bytes.
    case piece(piece: Int, offset: Int, data: [UInt8])
    case cancel(BlockRequest)
    case port(UInt16)
    case suggestPiece(piece: Int)
    case haveAll
    case haveNone
    case rejectRequest(BlockRequest)
    case allowedFast(piece: Int)
    case extended(id: UInt8, payload: [UInt8])
    /// A message id we do not implement; skipped, as every client does.
    case unknown(id: UInt8, length: Int)

    public enum ID: UInt8 {
        case choke = 0, unchoke = 1, interested = 2, notInterested = 3, have = 4, bitfield = 5,
             request = 6, piece = 7, cancel = 8, port = 9, suggestPiece = 13, haveAll = 14,
             haveNone = 15, rejectRequest = 16, allowedFast = 17, extended = 20
    }
}

extension PeerMessage {
    /// Appends the message, length prefix included.
    public func encode(into out: inout [UInt8]) {
        switch self {
        case .keepAlive: out.appendUInt32(0)
        case .choke: Self.appendBare(.choke, into: &out)
        case .unchoke: Self.appendBare(.unchoke, into: &out)
        case .interested: Self.appendBare(.interested, into: &out)
        case .notInterested: Self.appendBare(.notInterested, into: &out)
        case .haveAll: Self.appendBare(.haveAll, into: &out)
        case .haveNone: Self.appendBare(.haveNone, into: &out)
        case .have(let piece): Self.appendIndex(.have, piece, into: &out)
        case .suggestPiece(let piece): Self.appendIndex(.suggestPiece, piece, into: &out)
        case .allowedFast(let piece): Self.appendIndex(.allowedFast, piece, into: &out)
        case .bitfield(let bytes):
            out.appendUInt32(UInt32(1 + bytes.count))
            out.append(ID.bitfield.rawValue)
            out.append(contentsOf: bytes)
        case .request(let block): Self.appendBlock(.request, block, into: &out)
        case .cancel(let block): Self.appendBlock(.cancel, block, into: &out)
        case .rejectRequest(let block): Self.appendBlock(.rejectRequest, block, into: &out)
        case .piece(let piece, let offset, let data):
            Self.appendPieceHeader(piece: piece, offset: offset, length: data.count, into: &out)
            out.append(contentsOf: data)
        case .port(let port):
            out.appendUInt32(3)
            out.append(ID.port.rawValue)
            out.append(UInt8(port >> 8))
            out.append(UInt8(port & 0xFF))
        case .extended(let id, let payload):
            out.appendUInt32(UInt32(2 + payload.count))
            out.append(ID.extended.rawValue)
            out.append(id)
            out.append(contentsOf: payload)
        case .unknown:
            preconditionFailure("unknown messages are never sent")
        }
    }

    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        encode(into: &out)
        return out
    }

    /// The 13 bytes in front of a block, so the block itself can be written to the
    /// socket from wherever it lies without another copy.
    public static func appendPieceHeader(piece: Int, offset: Int, length: Int, into out: inout [UInt8]) {
        out.appendUInt32(UInt32(9 + length))
        out.append(ID.piece.rawValue)
        out.appendUInt32(UInt32(piece))
        out.appendUInt32(UInt32(offset))
    }

    /// Bytes in front of a block in a `piece` message: length, id, index, offset.
    public static let pieceHeaderLength = 13

    /// Writes the 13-byte `piece` header into `out` (at least 13 bytes), for blocks read
    /// straight into the memory they are sent from.
    public static func writePieceHeader(piece: Int, offset: Int, length: Int, to out: UnsafeMutableRawBufferPointer) {
        precondition(out.count >= pieceHeaderLength)
        out.storeBytes(of: UInt32(9 + length).bigEndian, toByteOffset: 0, as: UInt32.self)
        out[4] = ID.piece.rawValue
        out.storeBytes(of: UInt32(piece).bigEndian, toByteOffset: 5, as: UInt32.self)
        out.storeBytes(of: UInt32(offset).bigEndian, toByteOffset: 9, as: UInt32.self)
    }

    private static func appendBare(_ id: ID, into out: inout [UInt8]) {
        out.appendUInt32(1)
        out.append(id.rawValue)
    }

    private static func appendIndex(_ id: ID, _ index: Int, into out: inout [UInt8]) {
        out.appendUInt32(5)
        out.append(id.rawValue)
        out.appendUInt32(UInt32(index))
    }

    private static func appendBlock(_ id: ID, _ block: BlockRequest, into out: inout [UInt8]) {
        out.appendUInt32(13)
        out.append(id.rawValue)
        out.appendUInt32(UInt32(block.piece))
        out.appendUInt32(UInt32(block.offset))
        out.appendUInt32(UInt32(block.length))
    }
}

extension Array where Element == UInt8 {
    @inline(__always)
    mutating func appendUInt32(_ value: UInt32) {
        append(UInt8(value >> 24))
        append(UInt8((value >> 16) & 0xFF))
        append(UInt8((value >> 8) & 0xFF))
        append(UInt8(value & 0xFF))
    }
}
