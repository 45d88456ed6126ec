@testable import BitTorrent
import SeededRandom

typealias DownloadRNG = SplitMix64

let KiB = 1024

func layout(pieces: Int, pieceLength: Int, lastPiece: Int? = nil) -> BlockLayout {
    let last = lastPiece ?? pieceLength
    return BlockLayout(pieceCount: pieces, pieceLength: pieceLength, totalLength: Int64(pieces - 1) * Int64(pieceLength) + Int64(last))
}

func bitfield(_ count: Int, _ pieces: some Sequence<Int>) -> Bitfield {
    var bits = Bitfield(count: count)
    for piece in pieces { bits[piece] = true }
    return bits
}

func picker(_ layout: BlockLayout, have: some Sequence<Int> = [], configure: (inout PiecePicker<Int>.Configuration) -> Void = { _ in }) -> PiecePicker<Int> {
    var configuration = PiecePicker<Int>.Configuration()
    configure(&configuration)
    return PiecePicker(layout: layout, have: bitfield(layout.pieceCount, have), configuration: configuration)
}
