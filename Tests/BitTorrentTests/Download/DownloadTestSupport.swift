@testable import BitTorrent

/// A deterministic generator for the download tests (SplitMix64).
struct DownloadRNG: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

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
