import BitTorrent
import Glibc
import Synchronization

/// `seeder create`: a v1 torrent from a file or a folder, hashed on every core.
public enum TorrentCreator {
    public struct Options: Sendable {
        public var path: String
        public var trackerTiers: [[String]] = []
        public var webSeeds: [String] = []
        public var pieceLength: Int?
        public var isPrivate = false
        public var comment: String?
        public var createdBy: String? = "seeder \(SeederVersion.string)"
        public var creationDate: Int64?

        public init(path: String) { self.path = path }
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    /// The files of `path` as a torrent lays them out: a folder's files in byte-wise
    /// order of their paths (as mktorrent orders them), empty files included.
    public static func scan(_ path: String) throws(Failure) -> (name: String, isDirectory: Bool, files: [MetainfoBuilder.File], paths: [String]) {
        var trimmed = path
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed.removeLast() }
        var info = stat()
        guard stat(trimmed, &info) == 0 else { throw Failure("\(trimmed): \(String(cString: strerror(errno)))") }
        let name = String(trimmed.split(separator: "/").last ?? Substring(trimmed))
        if (info.st_mode & S_IFMT) == S_IFREG {
            guard info.st_size > 0 else { throw Failure("\(trimmed): the file is empty; a torrent needs data") }
            return (name, false, [.init(path: [name], length: Int64(info.st_size))], [trimmed])
        }
        guard (info.st_mode & S_IFMT) == S_IFDIR else { throw Failure("\(trimmed): neither a file nor a folder") }
        var found: [([UInt8], [String], Int64)] = []
        try walk(directory: trimmed, relative: [], into: &found)
        found.sort { $0.0.lexicographicallyPrecedes($1.0) }
        guard found.contains(where: { $0.2 > 0 }) else { throw Failure("\(trimmed): no data in the folder; a torrent needs data") }
        return (name, true, found.map { .init(path: $0.1, length: $0.2) },
                found.map { ([trimmed] + $0.1).joined(separator: "/") })
    }

    private static func walk(directory: String, relative: [String], into found: inout [([UInt8], [String], Int64)]) throws(Failure) {
        guard let handle = opendir(directory) else { throw Failure("\(directory): \(String(cString: strerror(errno)))") }
        defer { closedir(handle) }
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            if name == "." || name == ".." { continue }
            let full = directory + "/" + name
            var info = stat()
            guard lstat(full, &info) == 0 else { throw Failure("\(full): \(String(cString: strerror(errno)))") }
            let components = relative + [name]
            switch info.st_mode & S_IFMT {
            case S_IFDIR:
                try walk(directory: full, relative: components, into: &found)
            case S_IFREG:
                found.append((Array(components.joined(separator: "/").utf8), components, Int64(info.st_size)))
            case S_IFLNK:
                // A link to a file is its target's data; links to folders are skipped so
                // that a loop cannot recurse forever.
                var target = stat()
                if stat(full, &target) == 0 && (target.st_mode & S_IFMT) == S_IFREG {
                    found.append((Array(components.joined(separator: "/").utf8), components, Int64(target.st_size)))
                }
            default:
                continue
            }
        }
    }

    /// Hashes the data and returns the torrent file's bytes.
    public static func create(_ options: Options, pool: DiskPool, progress: ((_ done: Int64, _ total: Int64) -> Void)? = nil) throws(Failure) -> [UInt8] {
        let scanned = try scan(options.path)
        for component in scanned.files.flatMap(\.path) {
            do { try TorrentPath.validateComponent(component, field: "path") } catch {
                throw Failure("\(options.path): cannot go in a torrent: \(error.problem)")
            }
        }
        let total = scanned.files.reduce(0) { $0 + $1.length }
        let pieceLength = options.pieceLength ?? MetainfoBuilder.automaticPieceLength(totalLength: total)
        var builder = MetainfoBuilder(name: scanned.name, pieceLength: pieceLength, isDirectory: scanned.isDirectory, files: scanned.files)
        builder.trackerTiers = options.trackerTiers
        builder.webSeeds = options.webSeeds
        builder.isPrivate = options.isPrivate
        builder.comment = options.comment
        builder.createdBy = options.createdBy
        builder.creationDate = options.creationDate

        var offset: Int64 = 0
        let files = scanned.files.map { file in
            defer { offset += file.length }
            return TorrentFile(path: file.path, length: file.length, offset: offset)
        }
        let cache = FileHandleCache(capacity: 64)
        let storage = TorrentStorage(files: files, paths: scanned.paths, cache: cache)
        let pieceCount = builder.pieceCount
        let digests = Mutex([UInt8](repeating: 0, count: pieceCount * 20))
        let failure = Mutex<String?>(nil)
        BlockingHash.run(storage: storage, pieceLength: pieceLength, pieceCount: pieceCount, pool: pool,
                         progress: progress.map { report in { report($0, total) } }) { piece, outcome in
            switch outcome {
            case .digest(let digest):
                digests.withLock { $0.replaceSubrange((piece * 20)..<(piece * 20 + 20), with: digest) }
            case .missing:
                failure.withLock { $0 = $0 ?? "a file changed size while it was being hashed" }
            case .failed(let error):
                failure.withLock { $0 = $0 ?? error.description }
            }
        }
        if let message = failure.withLock({ $0 }) { throw Failure(message) }
        return builder.encode(pieceHashes: digests.withLock { $0 })
    }
}
