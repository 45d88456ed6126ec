import BitTorrent
import Synchronization

/// `seeder verify`: which pieces of a torrent's data are good, and what that means for
/// each file.
public struct VerifyReport: Sendable {
    public enum FileState: String, Sendable {
        case complete, incomplete, missing
    }

    public struct FileSummary: Sendable {
        public let file: TorrentFile
        public let path: String
        public let goodPieces: Int
        public let totalPieces: Int
        public let state: FileState
    }

    public let have: Bitfield
    /// Pieces whose bytes are all there but hash wrong: corrupted data.
    public let corruptPieces: [Int]
    /// Pieces whose bytes are not all on disk.
    public let missingPieces: [Int]
    /// Pieces that could not be read (I/O errors other than missing data).
    public let unreadablePieces: [(piece: Int, error: StorageError)]
    public let files: [FileSummary]

    public var isComplete: Bool { have.isComplete }
}

public enum DataVerifier {
    public static func verify(metainfo: Metainfo, dataDirectory: String, pool: DiskPool,
                              progress: ((_ done: Int64, _ total: Int64) -> Void)? = nil) -> VerifyReport {
        let cache = FileHandleCache(capacity: 128)
        let storage = TorrentStorage(metainfo: metainfo, dataDirectory: dataDirectory, cache: cache)
        let collected = Mutex(Collected(have: Bitfield(count: metainfo.pieceCount)))
        let total = metainfo.totalLength
        BlockingHash.run(storage: storage, pieceLength: metainfo.pieceLength, pieceCount: metainfo.pieceCount, pool: pool,
                         progress: progress.map { report in { report($0, total) } }) { piece, outcome in
            collected.withLock { state in
                switch outcome {
                case .digest(let digest):
                    if digest[...] == metainfo.pieceHash(piece) { state.have[piece] = true } else { state.corrupt.append(piece) }
                case .missing:
                    state.missing.append(piece)
                case .failed(let error):
                    state.unreadable.append((piece, error))
                }
            }
        }
        let result = collected.withLock { $0 }
        var summaries: [VerifyReport.FileSummary] = []
        for (index, file) in metainfo.files.enumerated() where !file.isPadding {
            let pieces = storage.layout.pieces(ofFile: index, pieceLength: metainfo.pieceLength)
            let good = pieces.filter { result.have[$0] }.count
            let state: VerifyReport.FileState
            if good == pieces.count {
                state = file.length == 0 && storage.fileStatus(index) == nil ? .missing : .complete
            } else {
                state = storage.fileStatus(index) == nil ? .missing : .incomplete
            }
            summaries.append(.init(file: file, path: storage.paths[index], goodPieces: good, totalPieces: pieces.count, state: state))
        }
        return VerifyReport(have: result.have, corruptPieces: result.corrupt.sorted(), missingPieces: result.missing.sorted(),
                            unreadablePieces: result.unreadable.sorted { $0.0 < $1.0 }, files: summaries)
    }

    private struct Collected: Sendable {
        var have: Bitfield
        var corrupt: [Int] = []
        var missing: [Int] = []
        var unreadable: [(Int, StorageError)] = []
    }
}
