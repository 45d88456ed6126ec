import BitTorrent
import Foundation
import Synchronization
import Testing
@testable import Seeder

/// A piece's SHA-1 followed from its writes, and the disk pool letting go of a job's
/// captures once it has run.
@Suite struct InlinePieceHashTests {
    static let blockLength = 16384

    static func bytes(_ count: Int, seed: UInt8) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) }
    }

    /// A piece of 4 blocks (the last one short) and its blocks.
    static func piece() -> (data: [UInt8], blocks: [(BlockRequest, [UInt8])]) {
        let data = bytes(3 * blockLength + 1000, seed: 7)
        let blocks = stride(from: 0, to: data.count, by: blockLength).map { offset in
            let end = min(offset + blockLength, data.count)
            return (BlockRequest(piece: 0, offset: offset, length: end - offset), Array(data[offset..<end]))
        }
        return (data, blocks)
    }

    @Test func inOrderBatchesGiveThePiecesDigest() {
        let (data, blocks) = Self.piece()
        let hash = InlinePieceHash(length: data.count, budget: .init(limit: 1 << 20))
        hash.add(Array(blocks[0..<2]))
        hash.add(Array(blocks[2...]))
        #expect(hash.digest() == SHA1.hash(data))
    }

    @Test func blocksAheadOfAGapWaitForIt() {
        let (data, blocks) = Self.piece()
        let budget = InlinePieceHash.Budget(limit: 1 << 20)
        let hash = InlinePieceHash(length: data.count, budget: budget)
        // A later write job finishing first, and a batch out of order in itself.
        hash.add([blocks[3], blocks[2]])
        #expect(budget.bytesHeld == blocks[2].1.count + blocks[3].1.count)
        hash.add([blocks[1], blocks[0]])
        #expect(budget.bytesHeld == 0)
        #expect(hash.digest() == SHA1.hash(data))
    }

    @Test func overTheBudgetThePieceIsHashedFromDisk() {
        let (data, blocks) = Self.piece()
        let budget = InlinePieceHash.Budget(limit: Self.blockLength)
        let hash = InlinePieceHash(length: data.count, budget: budget)
        hash.add([blocks[1]])  // held: exactly the budget
        hash.add([blocks[2]])  // would exceed it: the piece gives up
        #expect(budget.bytesHeld == 0, "what it held goes back to the budget")
        hash.add([blocks[0], blocks[3]])
        #expect(hash.digest() == nil)
    }

    @Test func aMissingOrRepeatedBlockGivesNoDigest() {
        let (data, blocks) = Self.piece()
        let short = InlinePieceHash(length: data.count, budget: .init(limit: 1 << 20))
        short.add(Array(blocks[0..<3]))
        #expect(short.digest() == nil)

        let repeated = InlinePieceHash(length: data.count, budget: .init(limit: 1 << 20))
        repeated.add([blocks[0], blocks[1]])
        repeated.add([blocks[1]])
        repeated.add([blocks[2], blocks[3]])
        #expect(repeated.digest() == nil)
    }

    @Test func discardReturnsHeldBytes() {
        let (data, blocks) = Self.piece()
        let budget = InlinePieceHash.Budget(limit: 1 << 20)
        let hash = InlinePieceHash(length: data.count, budget: budget)
        hash.add([blocks[2]])
        #expect(budget.bytesHeld > 0)
        hash.discard()
        #expect(budget.bytesHeld == 0)
    }

    final class Tracked: Sendable {
        let flag: Flag
        init(flag: Flag) { self.flag = flag }
        deinit { flag.set() }
    }

    final class Flag: Sendable {
        private let value = Atomic<Bool>(false)
        func set() { value.store(true, ordering: .sequentiallyConsistent) }
        var isSet: Bool { value.load(ordering: .sequentiallyConsistent) }
    }

    /// A job's captures (a write job's blocks) are freed once it has run, not kept by
    /// the pool's queue until it compacts.
    @Test func diskPoolReleasesAJobOnceRun() {
        let pool = DiskPool(threads: 1)
        defer { pool.shutdown() }
        let flag = Flag()
        let ran = Flag()
        do {
            let tracked = Tracked(flag: flag)
            pool.submit { _ = tracked; ran.set() }
        }
        // A second job: once it has run, the first is long finished.
        let done = Flag()
        pool.submit { done.set() }
        let deadline = Date().addingTimeInterval(5)
        while !(done.isSet && flag.isSet) && Date() < deadline { usleep(1000) }
        #expect(ran.isSet)
        #expect(flag.isSet, "the finished job's captures were freed")
    }
}
