import BitTorrent
import EventLoop
import Glibc

/// Who a block came from: unique per connection, and the address for strikes, since a
/// hash failure can blame a peer that has disconnected since.
struct DownloadPeer: Hashable, Sendable {
    let connection: Int
    let ip: [UInt8]

    /// The connection id alone tells peers apart: the picker looks peers up several
    /// times per block, and hashing the address bytes each time was wasted work.
    func hash(into hasher: inout Hasher) {
        hasher.combine(connection)
    }
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
    /// Block writes, one job at a time (see `SerialDiskJobs`).
    private let writer: SerialDiskJobs
    /// Block writes on the disk pool, per piece: a piece is hashed once they are done.
    private var writesInFlight: [Int: Int] = [:]
    private var verifyWhenWritten: Set<Int> = []
    private var verifying: Set<Int> = []
    /// Per piece being written: its SHA-1 followed as the blocks are written, so a
    /// complete piece is checked without reading it back (see `InlinePieceHash`).
    private var inlineHashes: [Int: InlinePieceHash] = [:]
    /// Out-of-order bytes the inline hashes may hold, across the torrent's pieces.
    private let inlineHashBudget = InlinePieceHash.Budget(limit: 8 << 20)
    private(set) var hashFailures: Int64 = 0
    private(set) var downloadedBytes: Int64 = 0
    /// Set when a write failed (disk full, read-only directory): nothing more is written
    /// and the torrent shows the error; pieces already verified stay good.
    private(set) var failure: String?

    var onVerified: (Int) -> Void = { _ in }
    var onHashFailed: (Int, PiecePicker<DownloadPeer>.HashFailure) -> Void = { _, _ in }
    var onFailure: (String) -> Void = { _ in }

    /// Blocks that arrived while the files were being preallocated: written after.
    private var heldWrites: [(BlockRequest, [UInt8])]?
    /// Pieces verified since the resume data was last saved.
    var verifiedSinceSave = 0

    init(torrent: Torrent, loop: EventLoop, pool: DiskPool, preallocate: Bool) {
        self.torrent = torrent
        self.loop = loop
        self.pool = pool
        writer = SerialDiskJobs(pool: pool)
        picker = PiecePicker(layout: BlockLayout(metainfo: torrent.metainfo), have: torrent.have)
        if preallocate {
            startPreallocation()
        } else {
            createEmptyFiles()
        }
    }

    /// Zero-length files get no writes: they are created up front, off the loop.
    private func createEmptyFiles() {
        let storage = torrent.storage
        guard storage.hasEmptyFiles else { return }
        let bound = LoopBound(self, loop: loop)
        let loop = self.loop
        let name = torrent.name
        pool.submit {
            do throws(StorageError) {
                try storage.createEmptyFiles()
            } catch {
                loop.post { bound.value.fail("cannot create the empty files of \(name): \(error)") }
            }
        }
    }

    /// Reserves the files' lengths on the disk pool before anything is written: writes
    /// wait in memory meanwhile (a few blocks, the time of one fallocate per file).
    private func startPreallocation() {
        heldWrites = []
        let storage = torrent.storage
        let bound = LoopBound(self, loop: loop)
        let loop = self.loop
        pool.submit {
            let outcome: StorageError?
            do throws(StorageError) {
                try storage.preallocate()
                try storage.createEmptyFiles()
                outcome = nil
            } catch {
                outcome = error
            }
            loop.post { bound.value.preallocated(error: outcome) }
        }
    }

    private func preallocated(error: StorageError?) {
        let held = heldWrites ?? []
        heldWrites = nil
        if let error {
            fail("cannot allocate the files of \(torrent.name): \(error)")
            return
        }
        for (block, data) in held { enqueue(block, data: data) }
        for piece in verifyWhenWritten { flush(piece) }
        for piece in verifyWhenWritten where writesInFlight[piece, default: 0] == 0 {
            verifyWhenWritten.remove(piece)
            startHash(piece)
        }
    }

    var isComplete: Bool { picker.isComplete }

    /// A wanted block arrived: write it; the picker already counts it as received.
    func write(_ block: BlockRequest, data: [UInt8]) {
        guard failure == nil else { return }
        downloadedBytes += Int64(data.count)
        bytesQueued += data.count
        enqueue(block, data: data)
    }

    /// Received block data not yet on disk. Past `maxQueuedBytes` the peers stop reading
    /// their sockets (`isBackedUp`) until the disk has caught up to half of it: a disk
    /// slower than the network must not turn into unbounded memory.
    private(set) var bytesQueued = 0
    static let maxQueuedBytes = 64 << 20
    var isBackedUp: Bool { bytesQueued > Self.maxQueuedBytes }
    private var wasBackedUp = false
    /// The disk caught up after `isBackedUp`: peers may read again.
    var onDrained: () -> Void = {}

    /// Call after taking more input: remembers that peers paused on the disk.
    func noteBackedUp() {
        wasBackedUp = true
    }

    private func written(bytes: Int) {
        bytesQueued -= bytes
        if wasBackedUp && bytesQueued <= Self.maxQueuedBytes / 2 {
            wasBackedUp = false
            onDrained()
        }
    }

    /// Blocks of a piece wait here to go to the disk together: a disk job costs a
    /// thread hand-off each way, which per 16 KiB block was a good part of the CPU.
    private var unwritten: [Int: [(BlockRequest, [UInt8])]] = [:]
    /// Blocks per disk job (256 KiB); a piece's last blocks go when it completes.
    static let writeBatch = 16

    private func enqueue(_ block: BlockRequest, data: [UInt8]) {
        if heldWrites != nil {
            heldWrites!.append((block, data))
            return
        }
        unwritten[block.piece, default: []].append((block, data))
        if unwritten[block.piece]!.count >= Self.writeBatch { flush(block.piece) }
    }

    /// Sends a piece's waiting blocks to the disk in one job.
    private func flush(_ piece: Int) {
        guard let blocks = unwritten.removeValue(forKey: piece), !blocks.isEmpty else { return }
        writesInFlight[piece, default: 0] += 1
        let bytes = blocks.reduce(0) { $0 + $1.1.count }
        let inlineHash: InlinePieceHash
        if let existing = inlineHashes[piece] {
            inlineHash = existing
        } else {
            inlineHash = InlinePieceHash(length: torrent.metainfo.length(ofPiece: piece), budget: inlineHashBudget)
            inlineHashes[piece] = inlineHash
        }
        let storage = torrent.storage
        let pieceStart = Int64(piece) * Int64(torrent.metainfo.pieceLength)
        let bound = LoopBound(self, loop: loop)
        let loop = self.loop
        writer.submit {
            var outcome: StorageError?
            // A seed answers a little out of order at times: in offset order, the job's
            // blocks make fewer and longer gathered writes.
            let blocks = zip(blocks, blocks.dropFirst()).allSatisfy({ $0.0.offset < $1.0.offset })
                ? blocks : blocks.sorted { $0.0.offset < $1.0.offset }
            var first = 0
            while first < blocks.count && outcome == nil {
                // A run of consecutive blocks goes to the disk in one gathered write.
                var end = first + 1
                while end < blocks.count && blocks[end].0.offset == blocks[end - 1].0.offset + blocks[end - 1].1.count { end += 1 }
                outcome = Self.withBytes(of: blocks[first..<end], []) { buffers in
                    do throws(StorageError) {
                        try storage.write(offset: pieceStart + Int64(blocks[first].0.offset), from: buffers)
                        return nil
                    } catch {
                        return error
                    }
                }
                first = end
            }
            if outcome == nil { inlineHash.add(blocks) }
            let result = outcome
            loop.post { bound.value.written(piece, bytes: bytes, error: result) }
        }
    }

    /// Calls `body` with the bytes of every block in `blocks`, valid for the call.
    private static func withBytes<R>(of blocks: ArraySlice<(BlockRequest, [UInt8])>, _ collected: [UnsafeRawBufferPointer],
                                     _ body: ([UnsafeRawBufferPointer]) -> R) -> R {
        guard let first = blocks.first else { return body(collected) }
        return first.1.withUnsafeBytes { withBytes(of: blocks.dropFirst(), collected + [$0], body) }
    }

    /// The piece has all its blocks: hash it once its writes are on disk.
    func verify(_ piece: Int) {
        guard failure == nil else { return }
        guard heldWrites == nil else {
            verifyWhenWritten.insert(piece)
            return
        }
        flush(piece)
        if writesInFlight[piece, default: 0] > 0 {
            verifyWhenWritten.insert(piece)
        } else {
            startHash(piece)
        }
    }

    private func written(_ piece: Int, bytes: Int, error: StorageError?) {
        written(bytes: bytes)
        let left = writesInFlight[piece, default: 1] - 1
        writesInFlight[piece] = left > 0 ? left : nil
        if let error {
            fail("cannot write \(torrent.name): \(error)")
            return
        }
        if left == 0, verifyWhenWritten.remove(piece) != nil { startHash(piece) }
    }

    private func startHash(_ piece: Int) {
        guard verifying.insert(piece).inserted else { return }
        let storage = torrent.storage
        let metainfo = torrent.metainfo
        let bound = LoopBound(self, loop: loop)
        let loop = self.loop
        if let digest = inlineHashes.removeValue(forKey: piece)?.digest() {
            // Hashed as written: answered through the loop's queue like a disk result,
            // not from inside the caller's message handling.
            let good = digest[...] == metainfo.pieceHash(piece)
            loop.post { bound.value.hashed(piece, good: good) }
            return
        }
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
            verifiedSinceSave += 1
            onVerified(piece)
        } else {
            hashFailures += 1
            if let failure = picker.pieceFailed(piece) { onHashFailed(piece, failure) }
        }
    }

    private func fail(_ message: String) {
        guard failure == nil else { return }
        failure = message
        verifyWhenWritten.removeAll()
        unwritten.removeAll()
        for hash in inlineHashes.values { hash.discard() }
        inlineHashes.removeAll()
        // Nothing more is written: peers must not wait on the disk.
        bytesQueued = 0
        if wasBackedUp {
            wasBackedUp = false
            onDrained()
        }
        onFailure(message)
    }
}
