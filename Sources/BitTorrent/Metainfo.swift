/// One file of a torrent, placed in the torrent's byte stream.
public struct TorrentFile: Equatable, Sendable {
    /// Path components below the torrent's directory (multi-file) or the single name.
    public let path: [String]
    public let length: Int64
    /// Where the file starts in the torrent's byte stream.
    public let offset: Int64
    /// BEP 47 padding: zeros that are hashed but never written to disk.
    public let isPadding: Bool
    public let isExecutable: Bool

    public init(path: [String], length: Int64, offset: Int64, isPadding: Bool = false, isExecutable: Bool = false) {
        self.path = path
        self.length = length
        self.offset = offset
        self.isPadding = isPadding
        self.isExecutable = isExecutable
    }

    public var pathString: String { path.joined(separator: "/") }
}

/// A parsed v1 torrent (BEP 3), with BEP 12 tiers, BEP 19 web seeds, BEP 27 private
/// flag and BEP 47 padding files. Hybrid v1+v2 torrents are read by their v1 part.
public struct Metainfo: Sendable {
    public let infoHash: InfoHash
    public let name: String
    public let pieceLength: Int
    public let pieceCount: Int
    public let totalLength: Int64
    public let files: [TorrentFile]
    /// True when the info dictionary has `files`: its data lives under DATA/<name>/.
    public let isMultiFile: Bool
    /// Tracker tiers (BEP 12). `announce` alone becomes one tier of one.
    public let trackerTiers: [[String]]
    public let webSeeds: [String]
    public let isPrivate: Bool
    public let comment: String?
    public let createdBy: String?
    public let creationDate: Int64?
    /// The info dictionary exactly as it stood in the file (BEP 9 serves these bytes).
    public let infoBytes: [UInt8]
    /// Oddities that did not stop the torrent from loading, for the log.
    public let warnings: [String]

    private let piecesRange: Range<Int>

    /// The expected SHA-1 of piece `index`.
    public func pieceHash(_ index: Int) -> ArraySlice<UInt8> {
        precondition(index >= 0 && index < pieceCount)
        let start = piecesRange.lowerBound + index * 20
        return infoBytes[start..<(start + 20)]
    }

    /// Length of piece `index`; only the last may be shorter.
    public func length(ofPiece index: Int) -> Int {
        precondition(index >= 0 && index < pieceCount)
        if index == pieceCount - 1 {
            return Int(totalLength - Int64(index) * Int64(pieceLength))
        }
        return pieceLength
    }

    public static let maxPieceLength = 256 << 20

    public init(bytes: [UInt8]) throws(MetainfoError) {
        let top: BencodeDictionary
        let spans: [[UInt8]: Range<Int>]
        do {
            (top, spans) = try BencodeDecoder.decodeDictionaryWithSpans(bytes)
        } catch {
            throw MetainfoError(field: "", error.description)
        }
        guard let infoValue = top["info"] else { throw MetainfoError(field: "info", "missing") }
        guard let info = infoValue.dictionaryValue else {
            throw MetainfoError(field: "info", "expected a dictionary, found a \(infoValue.typeName)")
        }
        let infoSpan = spans[Array("info".utf8)]!
        let infoBytes = Array(bytes[infoSpan])
        infoHash = InfoHash(bytes: SHA1.hash(infoBytes))!
        self.infoBytes = infoBytes
        var warnings: [String] = []

        // name
        let name = try Self.text(info, preferring: "name.utf-8", over: "name", field: "info.name")
        try TorrentPath.validateComponent(name, field: "info.name")
        self.name = name

        // piece length
        guard let pieceLengthValue = info["piece length"] else { throw MetainfoError(field: "info.piece length", "missing") }
        guard let pieceLength = pieceLengthValue.integerValue else {
            throw MetainfoError(field: "info.piece length", "expected an integer, found a \(pieceLengthValue.typeName)")
        }
        guard pieceLength > 0 && pieceLength <= Int64(Self.maxPieceLength) else {
            throw MetainfoError(field: "info.piece length", "\(pieceLength) is outside 1...\(Self.maxPieceLength)")
        }
        self.pieceLength = Int(pieceLength)

        // files
        var files: [TorrentFile] = []
        var total: Int64 = 0
        if let filesValue = info["files"] {
            guard info["length"] == nil else {
                throw MetainfoError(field: "info", "has both `length` and `files`")
            }
            guard let list = filesValue.listValue else {
                throw MetainfoError(field: "info.files", "expected a list, found a \(filesValue.typeName)")
            }
            guard !list.isEmpty else { throw MetainfoError(field: "info.files", "the list is empty") }
            var seenFiles = Set<[String]>()
            var seenDirectories = Set<[String]>()
            for (index, entry) in list.enumerated() {
                let field = "info.files[\(index)]"
                guard let file = entry.dictionaryValue else {
                    throw MetainfoError(field: field, "expected a dictionary, found a \(entry.typeName)")
                }
                let length = try Self.fileLength(file, field: field)
                let attributes = file["attr"]?.stringValue ?? ""
                let isPadding = attributes.contains("p")
                let pathKey = file["path.utf-8"] != nil ? "path.utf-8" : "path"
                guard let pathValue = file[pathKey] else { throw MetainfoError(field: "\(field).path", "missing") }
                guard let pathList = pathValue.listValue else {
                    throw MetainfoError(field: "\(field).\(pathKey)", "expected a list, found a \(pathValue.typeName)")
                }
                guard !pathList.isEmpty else { throw MetainfoError(field: "\(field).\(pathKey)", "empty path") }
                var components: [String] = []
                for element in pathList {
                    guard let bytes = element.bytesValue else {
                        throw MetainfoError(field: "\(field).\(pathKey)", "expected a list of strings, found a \(element.typeName)")
                    }
                    guard let component = String(validating: bytes, as: UTF8.self) else {
                        throw MetainfoError(field: "\(field).\(pathKey)", "path component is not valid UTF-8")
                    }
                    try TorrentPath.validateComponent(component, field: "\(field).\(pathKey)")
                    components.append(component)
                }
                if !isPadding {
                    if seenFiles.contains(components) || seenDirectories.contains(components) {
                        throw MetainfoError(field: "\(field).\(pathKey)", "\"\(components.joined(separator: "/"))\" appears twice")
                    }
                    for depth in 1..<components.count {
                        let directory = Array(components[..<depth])
                        if seenFiles.contains(directory) {
                            throw MetainfoError(field: "\(field).\(pathKey)", "\"\(directory.joined(separator: "/"))\" is both a file and a directory")
                        }
                        seenDirectories.insert(directory)
                    }
                    seenFiles.insert(components)
                }
                files.append(TorrentFile(path: components, length: length, offset: total,
                                         isPadding: isPadding, isExecutable: attributes.contains("x")))
                let (sum, overflow) = total.addingReportingOverflow(length)
                guard !overflow else { throw MetainfoError(field: field, "total length overflows") }
                total = sum
            }
            isMultiFile = true
        } else if info["length"] != nil {
            let length = try Self.fileLength(info, field: "info")
            let attributes = info["attr"]?.stringValue ?? ""
            files = [TorrentFile(path: [name], length: length, offset: 0, isExecutable: attributes.contains("x"))]
            total = length
            isMultiFile = false
        } else if info["file tree"] != nil {
            throw MetainfoError(field: "info", "v2-only torrent (no `pieces`, no `length` or `files`); only v1 and hybrid torrents are supported")
        } else {
            throw MetainfoError(field: "info", "has neither `length` nor `files`")
        }
        guard total > 0 else { throw MetainfoError(field: "info", "the torrent holds no data (total length 0)") }
        self.totalLength = total
        self.files = files

        // pieces
        guard let piecesValue = info["pieces"] else { throw MetainfoError(field: "info.pieces", "missing") }
        guard case .bytes(let pieces) = piecesValue else {
            throw MetainfoError(field: "info.pieces", "expected a byte string, found a \(piecesValue.typeName)")
        }
        guard pieces.count % 20 == 0 else {
            throw MetainfoError(field: "info.pieces", "length \(pieces.count) is not a multiple of 20")
        }
        let expectedPieces = (total + pieceLength - 1) / pieceLength
        guard Int64(pieces.count / 20) == expectedPieces else {
            throw MetainfoError(field: "info.pieces", "holds \(pieces.count / 20) piece hashes, but \(total) bytes in pieces of \(pieceLength) need \(expectedPieces)")
        }
        pieceCount = Int(expectedPieces)
        // The pieces string is the last `pieces.count` bytes of its value's encoding.
        guard let range = Self.valueRange(ofKey: "pieces", in: infoBytes) else {
            throw MetainfoError(field: "info.pieces", "could not be located in the info dictionary")
        }
        piecesRange = (range.upperBound - pieces.count)..<range.upperBound

        // private (BEP 27)
        if let privateValue = info["private"] {
            guard let flag = privateValue.integerValue else {
                throw MetainfoError(field: "info.private", "expected an integer, found a \(privateValue.typeName)")
            }
            isPrivate = flag == 1
        } else {
            isPrivate = false
        }

        // trackers (BEP 12): announce-list, when present, replaces announce.
        var tiers: [[String]] = []
        if let listValue = top["announce-list"] {
            if let list = listValue.listValue {
                for (index, tierValue) in list.enumerated() {
                    guard let tierList = tierValue.listValue else {
                        warnings.append("announce-list[\(index)] is a \(tierValue.typeName), not a list; ignored")
                        continue
                    }
                    let tier = tierList.compactMap { $0.stringValue }.filter { !$0.isEmpty }
                    if tier.count != tierList.count { warnings.append("announce-list[\(index)] has entries that are not URLs; ignored") }
                    if !tier.isEmpty { tiers.append(tier) }
                }
            } else {
                warnings.append("announce-list is a \(listValue.typeName), not a list; ignored")
            }
        }
        if tiers.isEmpty, let announce = top["announce"]?.stringValue, !announce.isEmpty {
            tiers = [[announce]]
        }
        trackerTiers = tiers

        // web seeds (BEP 19): a string or a list of strings.
        switch top["url-list"] {
        case .bytes?:
            webSeeds = [top["url-list"]!.stringValue].compactMap { $0 }.filter { !$0.isEmpty }
        case .list(let list)?:
            webSeeds = list.compactMap { $0.stringValue }.filter { !$0.isEmpty }
        case nil:
            webSeeds = []
        case let other?:
            warnings.append("url-list is a \(other.typeName); ignored")
            webSeeds = []
        }

        comment = top["comment.utf-8"]?.stringValue ?? top["comment"]?.stringValue
        createdBy = top["created by"]?.stringValue
        creationDate = top["creation date"]?.integerValue
        self.warnings = warnings
    }

    private static func text(_ dictionary: BencodeDictionary, preferring preferred: String, over key: String, field: String) throws(MetainfoError) -> String {
        if let text = dictionary[preferred]?.stringValue { return text }
        guard let value = dictionary[key] else { throw MetainfoError(field: field, "missing") }
        guard let bytes = value.bytesValue else {
            throw MetainfoError(field: field, "expected a string, found a \(value.typeName)")
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw MetainfoError(field: field, "not valid UTF-8")
        }
        return text
    }

    private static func fileLength(_ dictionary: BencodeDictionary, field: String) throws(MetainfoError) -> Int64 {
        guard let value = dictionary["length"] else { throw MetainfoError(field: "\(field).length", "missing") }
        guard let length = value.integerValue else {
            throw MetainfoError(field: "\(field).length", "expected an integer, found a \(value.typeName)")
        }
        guard length >= 0 else { throw MetainfoError(field: "\(field).length", "negative length \(length)") }
        return length
    }

    /// Finds where a top-level key's value lies in an encoded dictionary.
    private static func valueRange(ofKey key: String, in dictionary: [UInt8]) -> Range<Int>? {
        guard let (_, spans) = try? BencodeDecoder.decodeDictionaryWithSpans(dictionary) else { return nil }
        return spans[Array(key.utf8)]
    }
}
