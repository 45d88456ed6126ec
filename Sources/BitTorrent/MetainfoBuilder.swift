/// Writes a v1 torrent file. The caller hashes the data; this only lays out the
/// dictionaries, so that the same files and piece size give the same info-hash as
/// mktorrent and libtorrent.
public struct MetainfoBuilder: Sendable {
    public struct File: Sendable {
        public var path: [String]
        public var length: Int64
        public init(path: [String], length: Int64) {
            self.path = path
            self.length = length
        }
    }

    public var name: String
    public var pieceLength: Int
    /// Multi-file layout even for one file: true when made from a directory.
    public var isDirectory: Bool
    public var files: [File]
    public var trackerTiers: [[String]] = []
    public var webSeeds: [String] = []
    public var isPrivate = false
    public var comment: String?
    public var createdBy: String?
    public var creationDate: Int64?

    public init(name: String, pieceLength: Int, isDirectory: Bool, files: [File]) {
        self.name = name
        self.pieceLength = pieceLength
        self.isDirectory = isDirectory
        self.files = files
    }

    public var totalLength: Int64 { files.reduce(0) { $0 + $1.length } }

    public var pieceCount: Int { Int((totalLength + Int64(pieceLength) - 1) / Int64(pieceLength)) }

    /// The torrent file's bytes; `pieceHashes` is 20 bytes per piece, in order.
    public func encode(pieceHashes: [UInt8]) -> [UInt8] {
        precondition(pieceHashes.count == pieceCount * 20, "one 20-byte hash per piece")
        var info = BencodeDictionary()
        info["name"] = .string(name)
        info["piece length"] = .integer(Int64(pieceLength))
        info["pieces"] = .bytes(pieceHashes)
        if isDirectory {
            info["files"] = .list(files.map { file in
                var entry = BencodeDictionary()
                entry["length"] = .integer(file.length)
                entry["path"] = .list(file.path.map { .string($0) })
                return .dictionary(entry)
            })
        } else {
            info["length"] = .integer(files[0].length)
        }
        if isPrivate { info["private"] = .integer(1) }

        var top = BencodeDictionary()
        top["info"] = .dictionary(info)
        if let first = trackerTiers.first?.first { top["announce"] = .string(first) }
        if trackerTiers.count > 1 || (trackerTiers.first?.count ?? 0) > 1 {
            top["announce-list"] = .list(trackerTiers.map { .list($0.map { .string($0) }) })
        }
        if webSeeds.count == 1 {
            top["url-list"] = .string(webSeeds[0])
        } else if webSeeds.count > 1 {
            top["url-list"] = .list(webSeeds.map { .string($0) })
        }
        if let comment { top["comment"] = .string(comment) }
        if let createdBy { top["created by"] = .string(createdBy) }
        if let creationDate { top["creation date"] = .integer(creationDate) }
        return Bencode.dictionary(top).encoded()
    }

    /// A piece size for `totalLength` bytes: a power of two from 16 KiB to 16 MiB that
    /// keeps the piece count near 1,000-2,000, the range clients handle well.
    public static func automaticPieceLength(totalLength: Int64) -> Int {
        var length = 16 << 10
        while length < 16 << 20 && totalLength / Int64(length) > 2000 {
            length <<= 1
        }
        return length
    }
}
