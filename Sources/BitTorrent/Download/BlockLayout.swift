/// How a torrent's bytes cut into pieces and 16 KiB blocks (BEP 3): every piece is
/// `pieceLength` bytes except the last, which holds what is left; every block is
/// 16 KiB except the last block of a piece whose length is not a multiple of it (in
/// practice only the last piece's).
///
/// The download core asks for blocks of exactly these sizes and accepts only blocks
/// that match them, so a `piece` message of the wrong offset or size is recognised as
/// unexpected instead of corrupting the block bookkeeping.
public struct BlockLayout: Equatable, Sendable {
    public let pieceCount: Int
    public let pieceLength: Int
    public let totalLength: Int64

    /// The block size every client uses; requests for more are refused by libtorrent
    /// and Transmission.
    public static let blockLength = BlockRequest.maxLength

    public init(pieceCount: Int, pieceLength: Int, totalLength: Int64) {
        precondition(pieceCount >= 0 && pieceLength > 0 && totalLength >= 0)
        precondition(Int64(pieceCount) == (totalLength + Int64(pieceLength) - 1) / Int64(pieceLength),
                     "pieceCount must be ceil(totalLength / pieceLength)")
        self.pieceCount = pieceCount
        self.pieceLength = pieceLength
        self.totalLength = totalLength
    }

    public init(metainfo: Metainfo) {
        self.init(pieceCount: metainfo.pieceCount, pieceLength: metainfo.pieceLength, totalLength: metainfo.totalLength)
    }

    public init(torrent: TorrentView) {
        self.init(pieceCount: torrent.pieceCount, pieceLength: torrent.pieceLength, totalLength: torrent.totalLength)
    }

    /// Bytes in `piece`; the last piece is short.
    public func length(ofPiece piece: Int) -> Int {
        precondition(piece >= 0 && piece < pieceCount, "piece index out of range")
        return piece == pieceCount - 1 ? Int(totalLength - Int64(piece) * Int64(pieceLength)) : pieceLength
    }

    public func blockCount(ofPiece piece: Int) -> Int {
        (length(ofPiece: piece) + Self.blockLength - 1) / Self.blockLength
    }

    /// The `index`th block of `piece`, with its true length.
    public func block(_ index: Int, ofPiece piece: Int) -> BlockRequest {
        let pieceBytes = length(ofPiece: piece)
        let offset = index * Self.blockLength
        precondition(index >= 0 && offset < pieceBytes, "block index out of range")
        return BlockRequest(piece: piece, offset: offset, length: min(Self.blockLength, pieceBytes - offset))
    }

    /// Which block of its piece `block` is, or nil when it is not exactly one of our
    /// blocks: piece out of range, offset not on a block boundary or past the piece,
    /// or a length other than the block's. Never traps, whatever the peer sent.
    public func blockIndex(of block: BlockRequest) -> Int? {
        guard block.piece >= 0, block.piece < pieceCount, block.offset >= 0,
              block.offset % Self.blockLength == 0 else { return nil }
        let pieceBytes = length(ofPiece: block.piece)
        guard block.offset < pieceBytes, block.length == min(Self.blockLength, pieceBytes - block.offset) else { return nil }
        return block.offset / Self.blockLength
    }
}
