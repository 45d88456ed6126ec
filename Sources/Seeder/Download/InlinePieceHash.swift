import BitTorrent
import Synchronization

/// The SHA-1 of a piece being downloaded, computed on the disk pool from the blocks its
/// write jobs have just written (still in the cache), so that a completed piece is not
/// read back from disk to be hashed. Blocks are hashed in offset order: a block that
/// arrives ahead of a gap (blocks from several peers, or write jobs finishing out of
/// order) is held here until the gap fills, within a byte budget the torrent's pieces
/// share. A piece whose blocks do not fit that (or that sees the same offset twice) gives
/// no digest, and is hashed from disk as before.
final class InlinePieceHash: Sendable {
    /// Bytes held out of order, across a torrent's pieces.
    final class Budget: Sendable {
        let limit: Int
        fileprivate let used = Atomic<Int>(0)
        init(limit: Int) { self.limit = limit }
        var bytesHeld: Int { used.load(ordering: .relaxed) }
    }

    private struct State {
        let context = SHA1Context()
        var hashedUpTo = 0
        var held: [Int: [UInt8]] = [:]
        var heldBytes = 0
        var broken = false
    }

    private let state = Mutex(State())
    private let budget: Budget
    let length: Int

    init(length: Int, budget: Budget) {
        self.length = length
        self.budget = budget
    }

    /// Blocks of the piece just written (on a disk thread); any order.
    func add(_ blocks: [(BlockRequest, [UInt8])]) {
        let budget = self.budget
        state.withLock { state in
            guard !state.broken else { return }
            let ordered = blocks.count < 2 || zip(blocks, blocks.dropFirst()).allSatisfy { $0.0.offset < $1.0.offset }
                ? blocks : blocks.sorted { $0.0.offset < $1.0.offset }
            for (block, data) in ordered {
                if block.offset == state.hashedUpTo {
                    data.withUnsafeBytes { state.context.update($0) }
                    state.hashedUpTo += data.count
                    while let next = state.held.removeValue(forKey: state.hashedUpTo) {
                        next.withUnsafeBytes { state.context.update($0) }
                        state.hashedUpTo += next.count
                        state.heldBytes -= next.count
                        budget.used.subtract(next.count, ordering: .relaxed)
                    }
                } else if block.offset > state.hashedUpTo, state.held[block.offset] == nil,
                          budget.used.add(data.count, ordering: .relaxed).newValue <= budget.limit {
                    state.held[block.offset] = data
                    state.heldBytes += data.count
                } else {
                    if block.offset > state.hashedUpTo && state.held[block.offset] == nil {
                        budget.used.subtract(data.count, ordering: .relaxed)  // over budget: not held
                    }
                    Self.giveUp(&state, budget: budget)
                    return
                }
            }
        }
    }

    /// The piece's digest once every byte was added in order; nil if it could not be
    /// followed (hash the piece from disk then). Call after the piece's last write.
    func digest() -> [UInt8]? {
        let length = self.length
        let budget = self.budget
        return state.withLock { state -> [UInt8]? in
            guard !state.broken, state.hashedUpTo == length else {
                Self.giveUp(&state, budget: budget)
                return nil
            }
            return state.context.finish()
        }
    }

    /// Stops following the piece (it failed, or the download stopped): held bytes go back
    /// to the budget.
    func discard() {
        let budget = self.budget
        state.withLock { Self.giveUp(&$0, budget: budget) }
    }

    private static func giveUp(_ state: inout State, budget: Budget) {
        state.broken = true
        if state.heldBytes > 0 { budget.used.subtract(state.heldBytes, ordering: .relaxed) }
        state.held = [:]
        state.heldBytes = 0
    }
}
