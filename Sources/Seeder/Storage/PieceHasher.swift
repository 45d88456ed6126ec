import BitTorrent
import Synchronization

/// Hashes a torrent's pieces on every disk thread at once. Each thread takes the next
/// unhashed piece, so the file is read nearly in order and no thread sits idle.
public enum PieceHasher {
    public enum Outcome: Sendable, Equatable {
        case digest([UInt8])
        /// The piece's bytes are not all on disk (missing or short file).
        case missing
        case failed(StorageError)
    }

    /// Bytes read and hashed at a time.
    static let chunkSize = 128 << 10

    /// Hashes `pieces` of a torrent. `result` is called on disk threads, once per piece,
    /// in no particular order; `done` once, after the last `result`.
    public static func hash(
        storage: TorrentStorage,
        pieceLength: Int,
        pieces: [Int],
        pool: DiskPool,
        result: @escaping @Sendable (_ piece: Int, _ outcome: Outcome) -> Void,
        done: @escaping @Sendable () -> Void
    ) {
        guard !pieces.isEmpty else { done(); return }
        let next = Atomic<Int>(0)
        let finishedWorkers = Atomic<Int>(0)
        let shared = Shared(next: next, finished: finishedWorkers)
        let workers = min(pool.threadCount, pieces.count)
        let total = storage.layout.totalLength
        for _ in 0..<workers {
            pool.submit {
                // Read and hash in chunks that stay in the L2 cache: hashing a whole piece
                // after copying it would fetch every byte from memory a second time.
                let chunkLength = min(pieceLength, chunkSize)
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkLength, alignment: 4096)
                defer { buffer.deallocate() }
                let context = SHA1Context()
                while true {
                    let slot = shared.next.add(1, ordering: .relaxed).oldValue
                    guard slot < pieces.count else { break }
                    let piece = pieces[slot]
                    let offset = Int64(piece) * Int64(pieceLength)
                    let length = Int(min(Int64(pieceLength), total - offset))
                    do throws(StorageError) {
                        var done = 0
                        while done < length {
                            let region = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<min(chunkLength, length - done)])
                            try storage.read(offset: offset + Int64(done), into: region)
                            context.update(UnsafeRawBufferPointer(region))
                            done += region.count
                        }
                        result(piece, .digest(context.finish()))
                    } catch {
                        context.reset()
                        result(piece, error.isMissingData ? .missing : .failed(error))
                    }
                }
                if shared.finished.add(1, ordering: .acquiringAndReleasing).newValue == workers { done() }
            }
        }
    }

    private final class Shared: Sendable {
        let next: Atomic<Int>
        let finished: Atomic<Int>
        init(next: consuming Atomic<Int>, finished: consuming Atomic<Int>) {
            self.next = next
            self.finished = finished
        }
    }
}
