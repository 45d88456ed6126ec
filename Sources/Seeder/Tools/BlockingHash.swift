import BitTorrent
import Dispatch
import Synchronization

/// Runs PieceHasher and waits for it, for the command-line tools, reporting progress
/// in bytes hashed from the calling thread.
enum BlockingHash {
    static func run(
        storage: TorrentStorage,
        pieceLength: Int,
        pieceCount: Int,
        pool: DiskPool,
        progress: ((_ bytesDone: Int64) -> Void)?,
        result: @escaping @Sendable (_ piece: Int, _ outcome: PieceHasher.Outcome) -> Void
    ) {
        let finished = DispatchSemaphore(value: 0)
        let bytesDone = Atomic<Int64>(0)
        let counter = Counter(bytesDone)
        let total = storage.layout.totalLength
        PieceHasher.hash(storage: storage, pieceLength: pieceLength, pieces: Array(0..<pieceCount), pool: pool, result: { piece, outcome in
            let length = min(Int64(pieceLength), total - Int64(piece) * Int64(pieceLength))
            counter.value.add(length, ordering: .relaxed)
            result(piece, outcome)
        }, done: { finished.signal() })
        while finished.wait(timeout: .now() + .milliseconds(250)) == .timedOut {
            progress?(counter.value.load(ordering: .relaxed))
        }
        progress?(total)
    }

    private final class Counter: Sendable {
        let value: Atomic<Int64>
        init(_ value: consuming Atomic<Int64>) { self.value = value }
    }
}
