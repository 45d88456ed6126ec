import Testing
@testable import BitTorrent
import SeededRandom

@Suite struct BlockLayoutTests {
    @Test func shortLastPieceAndLastBlock() {
        // 3 pieces of 40000 bytes (not a multiple of 16 KiB) and a last piece of 5000.
        let cut = layout(pieces: 4, pieceLength: 40000, lastPiece: 5000)
        #expect(cut.totalLength == 125_000)
        #expect(cut.length(ofPiece: 3) == 5000)
        #expect(cut.blockCount(ofPiece: 0) == 3)
        #expect(cut.block(2, ofPiece: 0) == BlockRequest(piece: 0, offset: 32768, length: 7232))
        #expect(cut.blockCount(ofPiece: 3) == 1)
        #expect(cut.block(0, ofPiece: 3) == BlockRequest(piece: 3, offset: 0, length: 5000))
    }

    @Test func refusesBlocksThatAreNotOurs() {
        let cut = layout(pieces: 2, pieceLength: 32 * KiB, lastPiece: 20000)
        #expect(cut.blockIndex(of: BlockRequest(piece: 1, offset: 16384, length: 3616)) == 1)
        #expect(cut.blockIndex(of: BlockRequest(piece: 1, offset: 16384, length: 16384)) == nil)  // too long
        #expect(cut.blockIndex(of: BlockRequest(piece: 0, offset: 100, length: 16384)) == nil)  // unaligned
        #expect(cut.blockIndex(of: BlockRequest(piece: 0, offset: 32768, length: 16384)) == nil)  // past the piece
        #expect(cut.blockIndex(of: BlockRequest(piece: 2, offset: 0, length: 16384)) == nil)  // no such piece
        #expect(cut.blockIndex(of: BlockRequest(piece: -1, offset: 0, length: 16384)) == nil)
        #expect(cut.blockIndex(of: BlockRequest(piece: 0, offset: -16384, length: 16384)) == nil)
        #expect(cut.blockIndex(of: BlockRequest(piece: Int.max, offset: Int.max, length: 0)) == nil)
    }
}

@Suite struct PiecePickerTests {
    /// 8 one-block pieces; a seed, a peer with 0..<6 and one with 0..<4: pieces 6 and 7
    /// are rarest (1), 4 and 5 next (2), 0..<4 commonest (3).
    func rarityPicker() -> PiecePicker<Int> {
        var picker = picker(layout(pieces: 8, pieceLength: 16 * KiB))
        picker.peerHaveAll(0)
        picker.peerBitfield(1, bitfield(8, 0..<6))
        picker.peerBitfield(2, bitfield(8, 0..<4))
        return picker
    }

    @Test func picksRarestFirstWithRandomTies() {
        var firstPicks = Set<Int>()
        for seed in UInt64(1)...20 {
            var picker = rarityPicker()
            var random = DownloadRNG(seed: seed)
            let first = picker.pick(for: 0, count: 1, now: 0, using: &random)
            #expect(first.count == 1)
            #expect([6, 7].contains(first[0].piece))
            firstPicks.insert(first[0].piece)
        }
        #expect(firstPicks == [6, 7], "ties among the rarest are broken at random")

        var orders = Set<[Int]>()
        for seed in UInt64(1)...20 {
            var picker = rarityPicker()
            var random = DownloadRNG(seed: seed)
            let all = picker.pick(for: 0, count: 8, now: 0, using: &random).map(\.piece)
            #expect(Set(all.prefix(2)) == [6, 7])
            #expect(Set(all[2..<4]) == [4, 5])
            #expect(Set(all.suffix(4)) == [0, 1, 2, 3])
            orders.insert(all)
        }
        #expect(orders.count > 1)
    }

    @Test func sameSeedSamePicks() {
        var a = rarityPicker(), b = rarityPicker()
        var randomA = DownloadRNG(seed: 42), randomB = DownloadRNG(seed: 42)
        #expect(a.pick(for: 0, count: 8, now: 0, using: &randomA) == b.pick(for: 0, count: 8, now: 0, using: &randomB))
    }

    @Test func finishesPartialPiecesFirst() {
        var picker = picker(layout(pieces: 4, pieceLength: 64 * KiB))
        var random = DownloadRNG(seed: 3)
        picker.peerHaveAll(1)
        picker.peerHaveAll(2)
        let first = picker.pick(for: 1, count: 2, now: 0, using: &random)
        let started = first[0].piece
        #expect(first.map(\.offset) == [0, 16384] && first.allSatisfy { $0.piece == started })
        let second = picker.pick(for: 2, count: 2, now: 0, using: &random)
        #expect(second == [BlockRequest(piece: started, offset: 32768, length: 16384), BlockRequest(piece: started, offset: 49152, length: 16384)])
        let third = picker.pick(for: 2, count: 1, now: 0, using: &random)
        #expect(third.count == 1 && third[0].piece != started && third[0].offset == 0)
        // A received block makes its piece more advanced than a merely started one.
        #expect(picker.partialPieces.count == 2)
    }

    @Test func boundsPiecesInProgress() {
        var picker = picker(layout(pieces: 10, pieceLength: 32 * KiB)) { $0.partialPieceLimit = 2 }
        var random = DownloadRNG(seed: 5)
        picker.peerHaveAll(1)
        picker.peerBitfield(2, bitfield(10, [8, 9]))
        // Pieces 8 and 9 are commoner, so the seed starts two of 0..<8 and stops.
        let seedPicks = picker.pick(for: 1, count: 20, now: 0, using: &random)
        #expect(seedPicks.count == 4)
        #expect(Set(seedPicks.map(\.piece)).isDisjoint(with: [8, 9]))
        #expect(picker.inProgressCount == 2)
        // Peer 2 can help with neither: it may start one piece at a time past the limit,
        // never more than twice the limit.
        #expect(picker.pick(for: 2, count: 20, now: 0, using: &random).count == 2)
        #expect(picker.pick(for: 2, count: 20, now: 0, using: &random).count == 2)
        #expect(picker.inProgressCount == 4)
        #expect(picker.pick(for: 2, count: 20, now: 0, using: &random).isEmpty)
        #expect(picker.pick(for: 1, count: 20, now: 0, using: &random).isEmpty)
    }

    @Test func neverPicksPiecesWeHaveOrThePeerLacks() {
        var picker = picker(layout(pieces: 6, pieceLength: 32 * KiB), have: [0, 2])
        var random = DownloadRNG(seed: 1)
        picker.peerBitfield(1, bitfield(6, [0, 1, 2]))
        picker.peerHaveNone(2)
        let picks = picker.pick(for: 1, count: 100, now: 0, using: &random)
        #expect(picks == [BlockRequest(piece: 1, offset: 0, length: 16384), BlockRequest(piece: 1, offset: 16384, length: 16384)])
        #expect(picker.pick(for: 2, count: 100, now: 0, using: &random).isEmpty)
        #expect(picker.pick(for: 99, count: 100, now: 0, using: &random).isEmpty, "an unknown peer gets nothing")
        // A seed gets the untouched pieces 3..<6 first; only then, in end game,
        // duplicates of piece 1. Never 0 or 2.
        picker.peerHaveAll(3)
        #expect(!picker.isEndGame)
        let seedPicks = picker.pick(for: 3, count: 100, now: 0, using: &random)
        #expect(seedPicks.prefix(6).allSatisfy { [3, 4, 5].contains($0.piece) })
        #expect(seedPicks.dropFirst(6) == picks[...])
        #expect(picker.isEndGame)
    }

    @Test func endGameHandsOutDuplicatesAndReportsCancels() {
        var picker = picker(layout(pieces: 2, pieceLength: 16 * KiB))
        var random = DownloadRNG(seed: 9)
        for peer in 1...4 { picker.peerHaveAll(peer) }
        let all = picker.pick(for: 1, count: 10, now: 0, using: &random)
        #expect(all.count == 2)
        #expect(picker.isEndGame)
        #expect(Set(picker.pick(for: 2, count: 10, now: 10, using: &random)) == Set(all))
        #expect(Set(picker.pick(for: 3, count: 10, now: 20, using: &random)) == Set(all))
        // Three requesters per block at most (the default).
        #expect(picker.pick(for: 4, count: 10, now: 30, using: &random).isEmpty)
        #expect(picker.pick(for: 1, count: 10, now: 30, using: &random).isEmpty, "never twice from the same peer")

        let block = BlockRequest(piece: 0, offset: 0, length: 16384)
        #expect(picker.blockReceived(block, from: 2, now: 40) == .accepted(completesPiece: true, cancel: [1, 3]))
        #expect(!picker.requests(of: 1).contains(block) && !picker.requests(of: 3).contains(block))
        #expect(picker.blockReceived(block, from: 1, now: 41) == .duplicate)
        #expect(picker.pieceVerified(0) == [])
        #expect(picker.blockReceived(block, from: 3, now: 42) == .duplicate)
        // Once a block is free again, it goes to the least-duplicated first.
        let other = BlockRequest(piece: 1, offset: 0, length: 16384)
        picker.requestRejected(other, by: 1, now: 0)
        #expect(picker.pick(for: 4, count: 10, now: 50, using: &random) == [other])
    }

    @Test func endGameDuplicateLimitIsConfigurable() {
        var picker = picker(layout(pieces: 1, pieceLength: 16 * KiB)) { $0.endGameRequestsPerBlock = 1 }
        var random = DownloadRNG(seed: 9)
        picker.peerHaveAll(1)
        picker.peerHaveAll(2)
        #expect(picker.pick(for: 1, count: 10, now: 0, using: &random).count == 1)
        #expect(picker.pick(for: 2, count: 10, now: 0, using: &random).isEmpty)
    }

    @Test func shortLastPieceIsRequestedAndCountedExactly() {
        let cut = layout(pieces: 3, pieceLength: 32 * KiB, lastPiece: 20000)
        var picker = picker(cut, have: [0, 1])
        var random = DownloadRNG(seed: 2)
        #expect(picker.bytesLeft == 20000)
        picker.peerHaveAll(1)
        let picks = picker.pick(for: 1, count: 10, now: 0, using: &random)
        #expect(picks == [BlockRequest(piece: 2, offset: 0, length: 16384), BlockRequest(piece: 2, offset: 16384, length: 3616)])
        #expect(picker.blockReceived(BlockRequest(piece: 2, offset: 16384, length: 16384), from: 1, now: 1) == .unexpected)
        #expect(picker.blockReceived(picks[1], from: 1, now: 1) == .accepted(completesPiece: false, cancel: []))
        #expect(picker.blockReceived(picks[0], from: 1, now: 2) == .accepted(completesPiece: true, cancel: []))
        #expect(!picker.isComplete && picker.bytesLeft == 20000, "nothing counts before the hash check")
        #expect(picker.pieceVerified(2) == [1])
        #expect(picker.isComplete && picker.bytesLeft == 0)
        #expect(picker.pick(for: 1, count: 10, now: 3, using: &random).isEmpty)
    }

    @Test func hashFailureResetsThePieceAndNamesContributors() {
        var picker = picker(layout(pieces: 2, pieceLength: 64 * KiB))
        var random = DownloadRNG(seed: 4)
        picker.peerHaveAll(1)
        picker.peerHaveAll(2)
        picker.peerHaveAll(3)
        let a = picker.pick(for: 1, count: 2, now: 0, using: &random)
        let b = picker.pick(for: 2, count: 2, now: 0, using: &random)
        let piece = a[0].piece
        #expect(b.allSatisfy { $0.piece == piece })
        for block in a { _ = picker.blockReceived(block, from: 1, now: 1) }
        #expect(picker.blockReceived(b[0], from: 2, now: 1) == .accepted(completesPiece: false, cancel: []))
        #expect(picker.blockReceived(b[1], from: 2, now: 1) == .accepted(completesPiece: true, cancel: []))
        #expect(picker.pick(for: 3, count: 100, now: 2, using: &random).allSatisfy { $0.piece != piece }, "waiting for its hash check")
        #expect(picker.pieceFailed(piece) == .init(contributors: [1, 2], blamed: [1, 2]))
        for block in a + b { #expect(picker.state(of: block) == .open) }
        #expect(picker.bytesLeft == 128 * Int64(KiB))
        #expect(picker.pieceFailed(piece) == nil, "only once")
        let again = picker.pick(for: 3, count: 4, now: 3, using: &random)
        #expect(Set(again) == Set(a + b))
    }

    @Test func contributorsOfAFailedPieceGoOnParole() {
        var picker = picker(layout(pieces: 4, pieceLength: 32 * KiB))
        var random = DownloadRNG(seed: 4)
        for peer in 1...3 { picker.peerHaveAll(peer) }
        let a = picker.pick(for: 1, count: 1, now: 0, using: &random)
        let b = picker.pick(for: 2, count: 1, now: 0, using: &random)
        #expect(a[0].piece == b[0].piece)
        _ = picker.blockReceived(a[0], from: 1, now: 1)
        _ = picker.blockReceived(b[0], from: 2, now: 1)
        #expect(picker.pieceFailed(a[0].piece)?.contributors == [1, 2])
        #expect(picker.isOnParole(1) && picker.isOnParole(2) && !picker.isOnParole(3))
        // Peer 1 starts a piece of its own; neither peer 2 nor peer 3 joins it.
        let own = picker.pick(for: 1, count: 1, now: 2, using: &random)
        #expect(own.count == 1)
        #expect(picker.pick(for: 2, count: 1, now: 2, using: &random).allSatisfy { $0.piece != own[0].piece })
        #expect(picker.pick(for: 3, count: 8, now: 2, using: &random).allSatisfy { $0.piece != own[0].piece })
        // ... and it joins nobody else's.
        #expect(picker.pick(for: 1, count: 8, now: 2, using: &random).allSatisfy { $0.piece == own[0].piece })
        for block in picker.requests(of: 1) { _ = picker.blockReceived(block, from: 1, now: 3) }
        _ = picker.pieceVerified(own[0].piece)
        #expect(!picker.isOnParole(1) && picker.isOnParole(2))
    }

    @Test func paroleBlamesOnlyForPiecesOfOnesOwn() {
        var picker = picker(layout(pieces: 4, pieceLength: 32 * KiB))
        var random = DownloadRNG(seed: 4)
        picker.peerHaveAll(1)
        picker.peerHaveAll(2)
        // Two pieces shared between peers 1 and 2, both bad.
        var shared: [Int] = []
        for _ in 0..<2 {
            let a = picker.pick(for: 1, count: 1, now: 0, using: &random)
            let b = picker.pick(for: 2, count: 1, now: 0, using: &random)
            #expect(a[0].piece == b[0].piece)
            _ = picker.blockReceived(a[0], from: 1, now: 1)
            _ = picker.blockReceived(b[0], from: 2, now: 1)
            shared.append(a[0].piece)
        }
        #expect(picker.pieceFailed(shared[0]) == .init(contributors: [1, 2], blamed: [1, 2]))
        // The second was shared before parole: nobody is struck twice for it.
        #expect(picker.pieceFailed(shared[1]) == .init(contributors: [1, 2], blamed: []))
        // A piece peer 1 downloaded alone on parole is its own to answer for.
        let own = picker.pick(for: 1, count: 2, now: 2, using: &random)
        #expect(own.count == 2 && own[0].piece == own[1].piece)
        for block in own { _ = picker.blockReceived(block, from: 1, now: 3) }
        #expect(picker.pieceFailed(own[0].piece) == .init(contributors: [1], blamed: [1]))
    }

    @Test func aParolePieceIsOpenedToOthersWhenItsHolderLetsGo() {
        var picker = picker(layout(pieces: 2, pieceLength: 32 * KiB))
        var random = DownloadRNG(seed: 4)
        picker.peerHaveAll(1)
        picker.peerHaveAll(2)
        let first = picker.pick(for: 1, count: 2, now: 0, using: &random)
        for block in first { _ = picker.blockReceived(block, from: 1, now: 1) }
        _ = picker.pieceFailed(first[0].piece)
        let held = picker.pick(for: 1, count: 1, now: 2, using: &random)
        #expect(picker.pick(for: 2, count: 4, now: 2, using: &random).allSatisfy { $0.piece != held[0].piece })
        picker.requestTimedOut(held[0], at: 1, now: 30_000_000)
        #expect(picker.pick(for: 2, count: 4, now: 30_000_001, using: &random).contains(held[0]))
    }

    @Test func peerLeavingReleasesRequestsAndAvailability() {
        var picker = picker(layout(pieces: 4, pieceLength: 32 * KiB))
        var random = DownloadRNG(seed: 6)
        picker.peerBitfield(1, bitfield(4, [0, 1]))
        picker.peerBitfield(2, bitfield(4, [1, 2]))
        picker.peerHaveAll(3)
        #expect(picker.availability(ofPiece: 1) == 3)
        let picks = picker.pick(for: 1, count: 3, now: 0, using: &random)
        #expect(picks.count == 3)
        #expect(picker.peerLeft(1).count == 3)
        for block in picks { #expect(picker.state(of: block) == .open) }
        #expect(picker.availability(ofPiece: 0) == 1)
        #expect(picker.availability(ofPiece: 1) == 2)
        #expect(!picker.isInteresting(1))
        picker.peerLeft(3)
        #expect(picker.availability(ofPiece: 3) == 0)
        #expect(picker.availability(ofPiece: 1) == 1)
        // The released blocks go to the next peer that has them.
        let retaken = picker.pick(for: 2, count: 10, now: 1, using: &random)
        #expect(Set(retaken.map(\.piece)).isSubset(of: [1, 2]))
        #expect(Set(picks.filter { $0.piece == 1 }).isSubset(of: Set(retaken)))
    }

    @Test func rejectedAndTimedOutBlocksAreReissued() {
        var picker = picker(layout(pieces: 1, pieceLength: 32 * KiB))
        var random = DownloadRNG(seed: 8)
        picker.peerHaveAll(1)
        picker.peerHaveAll(2)
        let picks = picker.pick(for: 1, count: 2, now: 0, using: &random)
        #expect(picker.requestRejected(picks[0], by: 1, now: 0) == true)
        #expect(picker.requestRejected(picks[0], by: 1, now: 0) == false, "not outstanding any more")
        #expect(picker.requestRejected(picks[1], by: 2, now: 0) == false, "never asked of peer 2")
        #expect(picker.requestTimedOut(picks[1], at: 1, now: 0) == true)
        #expect(picker.requests(of: 1).isEmpty)
        #expect(picker.pick(for: 2, count: 2, now: 1, using: &random) == picks)
        // A late answer from the peer that timed out is still taken, and the request
        // now at peer 2 is reported for cancelling.
        #expect(picker.blockReceived(picks[1], from: 1, now: 2) == .accepted(completesPiece: false, cancel: [2]))
        #expect(picker.requestCancelled(picks[0], at: 2) == true)
        #expect(picker.state(of: picks[0]) == .open)
    }

    @Test func aPeerIsNotAskedAgainAtOnceForWhatItRefused() {
        var picker = picker(layout(pieces: 1, pieceLength: 32 * KiB))
        var random = DownloadRNG(seed: 8)
        picker.peerHaveAll(1)
        let picks = picker.pick(for: 1, count: 2, now: 0, using: &random)
        picker.requestRejected(picks[0], by: 1, now: 1_000_000)
        picker.requestTimedOut(picks[1], at: 1, now: 2_000_000)
        #expect(picker.pick(for: 1, count: 2, now: 3_000_000, using: &random).isEmpty)
        // A lone seed is asked again once the retry delay has passed.
        #expect(picker.pick(for: 1, count: 2, now: 31_000_000, using: &random) == [picks[0]])
        #expect(picker.pick(for: 1, count: 2, now: 32_000_000, using: &random) == [picks[1]])
    }

    @Test func chokeReleasesOnlyWithoutTheFastExtension() {
        var picker = picker(layout(pieces: 2, pieceLength: 32 * KiB))
        var random = DownloadRNG(seed: 8)
        picker.peerHaveAll(1)
        picker.peerHaveAll(2)
        let slow = picker.pick(for: 1, count: 2, now: 0, using: &random)
        let fast = picker.pick(for: 2, count: 2, now: 0, using: &random)
        #expect(picker.peerChoked(2, peerSupportsFast: true) == [])
        #expect(picker.requests(of: 2) == Set(fast))
        #expect(Set(picker.peerChoked(1, peerSupportsFast: false)) == Set(slow))
        for block in slow { #expect(picker.state(of: block) == .open) }
    }

    @Test func allowedFastPiecesWhileChoked() {
        var picker = picker(layout(pieces: 8, pieceLength: 32 * KiB))
        var random = DownloadRNG(seed: 8)
        picker.peerHaveAll(1)
        #expect(picker.pick(for: 1, count: 10, peerChoking: true, now: 0, using: &random).isEmpty)
        picker.peerAllowedFast(1, piece: 5)
        #expect(picker.peerAllowedFast(1, piece: 8) == false)
        let picks = picker.pick(for: 1, count: 10, peerChoking: true, now: 0, using: &random)
        #expect(picks.map(\.piece) == [5, 5])
        picker.peerRevokedAllowedFast(1, piece: 5)
        #expect(picker.allowedFast(of: 1).isEmpty)
    }

    @Test func allowedFastSetIsBounded() {
        var picker = picker(layout(pieces: 1000, pieceLength: 16 * KiB)) { $0.allowedFastLimit = 10 }
        for piece in 0..<1000 { picker.peerAllowedFast(1, piece: piece) }
        #expect(picker.allowedFast(of: 1).count == 10)
    }

    @Test func tracksInterestCheaply() {
        var picker = picker(layout(pieces: 16, pieceLength: 16 * KiB), have: [0])
        picker.peerBitfield(1, bitfield(16, [0]))
        #expect(!picker.isInteresting(1))
        picker.peerHave(1, piece: 3)
        #expect(picker.isInteresting(1))
        picker.peerHave(1, piece: 3)  // repeated: no double count
        #expect(picker.pieceVerified(3) == [1])
        #expect(!picker.isInteresting(1))
        picker.peerHaveAll(2)
        #expect(picker.isInteresting(2))
        #expect(picker.peerHasSomethingWeNeed(bitfield(16, [0, 3])) == false)
        #expect(picker.peerHasSomethingWeNeed(bitfield(16, [15])))
        #expect(picker.peerHasSomethingWeNeed(Bitfield(count: 15)) == false)
        for piece in 0..<16 where !picker.have[piece] {
            let bored = picker.pieceVerified(piece)
            #expect(bored == (picker.isComplete ? [2] : []))
        }
    }

    @Test func aPeerCompletingItsBitfieldBecomesASeed() {
        var picker = picker(layout(pieces: 3, pieceLength: 16 * KiB))
        picker.peerBitfield(1, bitfield(3, [0, 1]))
        picker.peerHave(1, piece: 2)
        #expect((0..<3).allSatisfy { picker.availability(ofPiece: $0) == 1 })
        picker.peerBitfield(2, bitfield(3, 0..<3))
        #expect((0..<3).allSatisfy { picker.availability(ofPiece: $0) == 2 })
        picker.peerLeft(1)
        picker.peerHaveNone(2)
        #expect((0..<3).allSatisfy { picker.availability(ofPiece: $0) == 0 })
    }

    @Test func hostileInputNeverTraps() {
        var picker = picker(layout(pieces: 4, pieceLength: 32 * KiB))
        var random = DownloadRNG(seed: 1)
        #expect(picker.peerHave(1, piece: 4) == false)
        #expect(picker.peerHave(1, piece: -1) == false)
        #expect(picker.peerHave(1, piece: Int.max) == false)
        #expect(picker.peerBitfield(1, Bitfield(count: 5)) == false)
        #expect(picker.peerAllowedFast(1, piece: 1 << 40) == false)
        picker.peerHaveAll(1)
        for bad in [BlockRequest(piece: 9, offset: 0, length: 16384), BlockRequest(piece: 0, offset: 0, length: 0),
                    BlockRequest(piece: 0, offset: 1, length: 16384), BlockRequest(piece: 0, offset: 0, length: 1 << 30),
                    BlockRequest(piece: -5, offset: -5, length: -5)] {
            #expect(picker.blockReceived(bad, from: 1, now: 0) == .unexpected)
            #expect(picker.requestRejected(bad, by: 1, now: 0) == false)
        }
        // A block of a piece nobody was asked for is not taken.
        #expect(picker.blockReceived(BlockRequest(piece: 2, offset: 0, length: 16384), from: 1, now: 0) == .unexpected)
        let picks = picker.pick(for: 1, count: 2, now: 0, using: &random)
        _ = picker.blockReceived(picks[0], from: 1, now: 1)
        #expect(picker.blockReceived(picks[0], from: 1, now: 1) == .duplicate)
        #expect(picker.pieceVerified(7) == [] && picker.pieceFailed(-1) == nil)
        #expect(picker.pick(for: 1, count: -3, now: 0, using: &random).isEmpty)
        #expect(picker.pick(for: 1, count: Int.max, now: 0, using: &random).count == 6, "the other 3 pieces; end game has nothing this peer lacks")
    }
}
