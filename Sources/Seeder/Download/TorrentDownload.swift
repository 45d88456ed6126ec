import BitTorrent
import EventLoop
import Glibc

/// Who a block came from: unique per connection, and the address for strikes, since a
/// hash failure can blame a peer that has disconnected since.
struct DownloadPeer: Hashable, Sendable {
    let connection: Int
    let ip: [UInt8]
}

/// A torrent that still misses pieces: the picker its peers share, block writes and
/// piece hash checks on the disk pool, and what follows a check: `have` to everyone
/// (through `onVerified`), strikes for the senders of a bad piece, completion. A piece
/// counts only after its bytes are on disk and its SHA-1 matched. Loop-owned.
final class TorrentDownload {
    let torrent: Torrent
    var picker: PiecePicker<DownloadPeer>
    private unowned let loop: EventLoop
    private let pool: DiskPool
    /// Block writes on the disk pool, per piece: a piece is hashed once they are done.
    private var writesInFlight: [Int: Int] = [:]
    private var verifyWhenWritten: Set<Int> = []
    private var verifying: Set<Int> = []
    private(set) var hashFailures: Int64 = 0
    private(set) var downloadedBytes: Int64 = 0
    /// Set when a write failed (disk full, read-only directory): nothing more is written
    /// and the torrent shows the error; pieces already verified stay good.
    private(set) var failure: String?

    var onVerified: (Int) -> Void = { _ in }
    var onHashFailed: (PiecePicker<DownloadPeer>.HashFailure) -> Void = { _ in }
    var onFailure: (String) -> Void = { _ in }

    init(torrent: Torrent, loop: EventLoop, pool: DiskPool) {
        self.torrent = torrent
        self.loop = loop
        self.pool = pool
        picker = PiecePicker(layout: BlockLayout(metainfo: torrent.metainfo), have: torrent.have)
    }

    var isComplete: Bool { picker.isComplete }

    /// A wanted block arrived: write it; the picker already counts it as received.
    func write(_ block: BlockRequest, data: [UInt8]) {
        guard failure == nil else { return }
        downloadedBytes += Int64(data.count)
        writesInFlight[block.piece, default: 0] += 1
        let storage = torrent.storage
        let offset = Int64(block.piece) * Int64(torrent.metainfo.pieceLength) + Int64(block.offset)
        let bound = LoopBound(self, loop: loop)
        let loop = self.loop
        pool.submit {
            let outcome: StorageError? = data.withUnsafeBytes { bytes in
                do throws(StorageError) {
                    try storage.write(offset: offset, from: bytes)
                    return nil
                } catch {
                    return error
                }
            }
            loop.post { bound.value.written(block, error: outcome) }
        }
    }

    /// The piece has all its blocks: hash it once its writes are on disk.
    func verify(_ piece: Int) {
        guard failure == nil else { return }
        if writesInFlight[piece, default: 0] > 0 {
            verifyWhenWritten.insert(piece)
        } else {
            startHash(piece)
        }
    }

    private func written(_ block: BlockRequest, error: StorageError?) {
        let left = writesInFlight[block.piece, default: 1] - 1
        writesInFlight[block.piece] = left > 0 ? left : nil
        if let error {
            fail("cannot write \(torrent.name): \(error)")
            return
        }
        if left == 0, verifyWhenWritten.remove(block.piece) != nil { startHash(block.piece) }
    }

    private func startHash(_ piece: Int) {
        guard verifying.insert(piece).inserted else { return }
        let storage = torrent.storage
        let metainfo = torrent.metainfo
        let bound = LoopBound(self, loop: loop)
        let loop = self.loop
        PieceHasher.hash(storage: storage, pieceLength: metainfo.pieceLength, pieces: [piece], pool: pool,
                         result: { _, outcome in
                             let good: Bool
                             if case .digest(let digest) = outcome { good = digest[...] == metainfo.pieceHash(piece) } else { good = false }
                             loop.post { bound.value.hashed(piece, good: good) }
                         },
                         done: {})
    }

    private func hashed(_ piece: Int, good: Bool) {
        verifying.remove(piece)
        guard failure == nil else { return }
        if good {
            _ = picker.pieceVerified(piece)
            torrent.have[piece] = true
            onVerified(piece)
        } else {
            hashFailures += 1
            if let failure = picker.pieceFailed(piece) { onHashFailed(failure) }
        }
    }

    private func fail(_ message: String) {
        guard failure == nil else { return }
        failure = message
        verifyWhenWritten.removeAll()
        onFailure(message)
    }
}
