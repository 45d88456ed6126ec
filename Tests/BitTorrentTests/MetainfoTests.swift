import Testing
@testable import BitTorrent

/// Builds torrent files by hand, so each test can break exactly one thing.
enum TorrentFixture {
    static func info(name: String = "data", pieceLength: Int64 = 16384, length: Int64? = 20000,
                     files: [(path: [String], length: Int64, attr: String?)]? = nil, pieces: Int? = nil) -> BencodeDictionary {
        var info = BencodeDictionary()
        info["name"] = .string(name)
        info["piece length"] = .integer(pieceLength)
        var total: Int64 = 0
        if let files {
            info["files"] = .list(files.map { file in
                var entry = BencodeDictionary()
                entry["length"] = .integer(file.length)
                entry["path"] = .list(file.path.map { .string($0) })
                if let attr = file.attr { entry["attr"] = .string(attr) }
                return .dictionary(entry)
            })
            total = files.reduce(0) { $0 + $1.length }
        } else if let length {
            info["length"] = .integer(length)
            total = length
        }
        let count = pieces ?? Int((total + pieceLength - 1) / pieceLength)
        info["pieces"] = .bytes([UInt8](repeating: 0xAB, count: count * 20))
        return info
    }

    static func torrent(_ info: BencodeDictionary, extra: [(String, Bencode)] = []) -> [UInt8] {
        var top = BencodeDictionary(extra)
        top["info"] = .dictionary(info)
        return Bencode.dictionary(top).encoded()
    }
}

@Suite struct MetainfoTests {
    @Test func parsesASingleFileTorrent() throws {
        let info = TorrentFixture.info(name: "debian.iso", pieceLength: 16384, length: 40000)
        let bytes = TorrentFixture.torrent(info, extra: [("announce", .string("http://tracker/announce")), ("comment", .string("hi"))])
        let metainfo = try Metainfo(bytes: bytes)
        #expect(metainfo.name == "debian.iso")
        #expect(!metainfo.isMultiFile)
        #expect(metainfo.totalLength == 40000)
        #expect(metainfo.pieceCount == 3)
        #expect(metainfo.length(ofPiece: 2) == 40000 - 2 * 16384)
        #expect(metainfo.files == [TorrentFile(path: ["debian.iso"], length: 40000, offset: 0)])
        #expect(metainfo.trackerTiers == [["http://tracker/announce"]])
        #expect(metainfo.comment == "hi")
        #expect(metainfo.infoHash.bytes == SHA1.hash(Bencode.dictionary(info).encoded()))
        #expect(Array(metainfo.pieceHash(1)) == [UInt8](repeating: 0xAB, count: 20))
    }

    @Test func takesTheInfoHashFromTheBytesAsWritten() throws {
        // Keys out of order: re-encoding would sort them and change the hash.
        let info = "d6:lengthi5e4:name1:x12:piece lengthi16384e6:pieces20:" + String(repeating: "a", count: 20) + "e"
        let file = Array(("d4:info" + info + "e").utf8)
        let metainfo = try Metainfo(bytes: file)
        #expect(metainfo.infoHash.bytes == SHA1.hash(Array(info.utf8)))
        #expect(metainfo.infoBytes == Array(info.utf8))
    }

    @Test func parsesAMultiFileTorrentWithPadding() throws {
        let info = TorrentFixture.info(name: "set", pieceLength: 16384, files: [
            (["a", "one.bin"], 1000, nil),
            ([".pad", "15384"], 15384, "p"),
            (["b.bin"], 0, nil),
            (["c.bin"], 20000, "x"),
        ])
        let metainfo = try Metainfo(bytes: TorrentFixture.torrent(info))
        #expect(metainfo.isMultiFile)
        #expect(metainfo.totalLength == 36384)
        #expect(metainfo.files.map(\.offset) == [0, 1000, 16384, 16384])
        #expect(metainfo.files[1].isPadding)
        #expect(metainfo.files[3].isExecutable)
        #expect(metainfo.pieceCount == 3)
    }

    @Test func readsTiersWebSeedsAndPrivate() throws {
        var info = TorrentFixture.info()
        info["private"] = .integer(1)
        let bytes = TorrentFixture.torrent(info, extra: [
            ("announce", .string("http://ignored/announce")),
            ("announce-list", .list([.list([.string("http://a/1"), .string("udp://a/2")]), .list([.string("http://b/1")]), .list([])])),
            ("url-list", .list([.string("http://mirror/iso/"), .string("")])),
        ])
        let metainfo = try Metainfo(bytes: bytes)
        #expect(metainfo.trackerTiers == [["http://a/1", "udp://a/2"], ["http://b/1"]])
        #expect(metainfo.webSeeds == ["http://mirror/iso/"])
        #expect(metainfo.isPrivate)
        #expect(metainfo.magnetLink.hasPrefix("magnet:?xt=urn:btih:\(metainfo.infoHash.hex)&dn=data&tr=http%3A%2F%2Fa%2F1"))
    }

    @Test(arguments: [
        (["..", "etc", "passwd"], "would leave the data directory"),
        (["a", "..", "b"], "would leave the data directory"),
        (["/etc/passwd"], "contains '/'"),
        (["a/b"], "contains '/'"),
        (["", "etc"], "empty path component"),
        (["."], "would leave the data directory"),
        (["a\u{0}b"], "NUL"),
        ([String(repeating: "x", count: 256)], "longer than 255"),
    ])
    func refusesPathsThatEscape(path: [String], problem: String) {
        let info = TorrentFixture.info(files: [(["fine"], 10, nil), (path, 10, nil)])
        #expect {
            try Metainfo(bytes: TorrentFixture.torrent(info))
        } throws: { error in
            let error = error as! MetainfoError
            return error.field == "info.files[1].path" && error.problem.contains(problem)
        }
    }

    @Test(arguments: ["..", "/abs", "", "."])
    func refusesABadName(name: String) {
        #expect(throws: MetainfoError.self) { try Metainfo(bytes: TorrentFixture.torrent(TorrentFixture.info(name: name))) }
    }

    @Test func refusesAPieceCountThatDoesNotMatch() {
        let info = TorrentFixture.info(pieceLength: 16384, length: 40000, pieces: 2)
        #expect(throws: MetainfoError(field: "info.pieces", "holds 2 piece hashes, but 40000 bytes in pieces of 16384 need 3")) {
            try Metainfo(bytes: TorrentFixture.torrent(info))
        }
    }

    @Test func refusesDuplicatesAndFileDirectoryClashes() {
        let duplicate = TorrentFixture.info(files: [(["a"], 1, nil), (["a"], 1, nil)])
        #expect(throws: MetainfoError(field: "info.files[1].path", "\"a\" appears twice")) {
            try Metainfo(bytes: TorrentFixture.torrent(duplicate))
        }
        let clash = TorrentFixture.info(files: [(["a"], 1, nil), (["a", "b"], 1, nil)])
        #expect(throws: MetainfoError(field: "info.files[1].path", "\"a\" is both a file and a directory")) {
            try Metainfo(bytes: TorrentFixture.torrent(clash))
        }
    }

    @Test func refusesWrongTypesAndMissingFields() {
        var info = TorrentFixture.info()
        info["piece length"] = .string("big")
        #expect(throws: MetainfoError(field: "info.piece length", "expected an integer, found a byte string")) {
            try Metainfo(bytes: TorrentFixture.torrent(info))
        }
        var noPieces = TorrentFixture.info()
        noPieces["pieces"] = nil
        #expect(throws: MetainfoError(field: "info.pieces", "missing")) { try Metainfo(bytes: TorrentFixture.torrent(noPieces)) }
        var negative = TorrentFixture.info()
        negative["length"] = .integer(-1)
        #expect(throws: MetainfoError.self) { try Metainfo(bytes: TorrentFixture.torrent(negative)) }
        let empty = TorrentFixture.info(length: 0)
        #expect(throws: MetainfoError(field: "info", "the torrent holds no data (total length 0)")) {
            try Metainfo(bytes: TorrentFixture.torrent(empty))
        }
        #expect(throws: MetainfoError(field: "info", "missing")) { try Metainfo(bytes: Array("d1:ai1ee".utf8)) }
        #expect(throws: MetainfoError.self) { try Metainfo(bytes: Array("garbage".utf8)) }
    }

    @Test func refusesV2OnlyTorrents() {
        var info = BencodeDictionary()
        info["name"] = .string("v2")
        info["piece length"] = .integer(16384)
        info["meta version"] = .integer(2)
        info["file tree"] = .dictionary(BencodeDictionary())
        #expect(throws: MetainfoError.self) { try Metainfo(bytes: TorrentFixture.torrent(info)) }
    }

    @Test func builderMatchesParser() throws {
        var builder = MetainfoBuilder(name: "dir", pieceLength: 16384, isDirectory: true, files: [
            .init(path: ["a"], length: 10000), .init(path: ["sub", "b"], length: 30000), .init(path: ["sub", "empty"], length: 0),
        ])
        builder.trackerTiers = [["http://t1/announce"], ["udp://t2:6969"]]
        builder.webSeeds = ["http://w/"]
        builder.isPrivate = true
        let hashes = [UInt8](repeating: 7, count: builder.pieceCount * 20)
        let metainfo = try Metainfo(bytes: builder.encode(pieceHashes: hashes))
        #expect(metainfo.pieceCount == 3)
        #expect(metainfo.files.map(\.path) == [["a"], ["sub", "b"], ["sub", "empty"]])
        #expect(metainfo.trackerTiers == [["http://t1/announce"], ["udp://t2:6969"]])
        #expect(metainfo.webSeeds == ["http://w/"])
        #expect(metainfo.isPrivate)
    }

    @Test func picksPieceSizesThatKeepTheCountModest() {
        #expect(MetainfoBuilder.automaticPieceLength(totalLength: 1000) == 16384)
        #expect(MetainfoBuilder.automaticPieceLength(totalLength: 4 << 30) == 4 << 20)
        #expect(MetainfoBuilder.automaticPieceLength(totalLength: 1 << 50) == 16 << 20)
    }
}

@Suite struct BitfieldTests {
    @Test func setsAndCountsBits() {
        var bitfield = Bitfield(count: 10)
        bitfield[0] = true
        bitfield[9] = true
        bitfield[9] = true
        #expect(bitfield.bytes == [0x80, 0x40])
        #expect(bitfield.setCount == 2)
        bitfield.setAll()
        #expect(bitfield.bytes == [0xFF, 0xC0])
        #expect(bitfield.isComplete)
    }

    @Test func acceptsOnlyExactWireBitfields() {
        #expect(Bitfield(count: 10, bytes: [0xFF, 0xC0])?.setCount == 10)
        #expect(Bitfield(count: 10, bytes: [0xFF, 0xE0]) == nil)  // spare bit set
        #expect(Bitfield(count: 10, bytes: [0xFF]) == nil)  // too short
        #expect(Bitfield(count: 10, bytes: [0xFF, 0xC0, 0]) == nil)  // too long
    }
}

@Suite struct HashTests {
    @Test func sha1MatchesKnownVectors() {
        #expect(InfoHash(bytes: SHA1.hash(Array("abc".utf8)))?.hex == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(InfoHash(bytes: SHA1.hash([]))?.hex == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
    }

    @Test func parsesHex() {
        let hash = InfoHash(hex: "A9993E364706816ABA3E25717850C26C9CD0D89D")
        #expect(hash?.hex == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(InfoHash(hex: "xyz") == nil)
    }

    @Test func percentEncodesAllButUnreserved() {
        #expect(PercentEncoding.encode([0x00, 0x41, 0x2D, 0x7E, 0x20, 0xFF]) == "%00A-~%20%FF")
    }
}
