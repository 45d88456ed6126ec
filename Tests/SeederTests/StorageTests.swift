import BitTorrent
import Foundation
import Testing
@testable import Seeder

/// A scratch directory removed when the test ends.
final class ScratchDirectory {
    let path: String
    init() {
        path = NSTemporaryDirectory() + "seeder-test-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }

    func write(_ relative: String, _ bytes: [UInt8]) {
        let full = path + "/" + relative
        try! FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: full, contents: Data(bytes))
    }

    func read(_ relative: String) -> [UInt8]? {
        FileManager.default.contents(atPath: path + "/" + relative).map { Array($0) }
    }
}

func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed &+ 0x9E37_79B9_7F4A_7C15
    return (0..<count).map { _ in
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return UInt8(truncatingIfNeeded: state >> 33)
    }
}

@Suite struct FileLayoutTests {
    let layout = FileLayout(files: [
        TorrentFile(path: ["a"], length: 10, offset: 0),
        TorrentFile(path: ["empty"], length: 0, offset: 10),
        TorrentFile(path: ["b"], length: 5, offset: 10),
        TorrentFile(path: ["c"], length: 20, offset: 15),
    ])

    @Test func splitsRangesAcrossFiles() {
        #expect(layout.segments(offset: 8, length: 10) == [
            .init(fileIndex: 0, fileOffset: 8, length: 2, bufferOffset: 0),
            .init(fileIndex: 2, fileOffset: 0, length: 5, bufferOffset: 2),
            .init(fileIndex: 3, fileOffset: 0, length: 3, bufferOffset: 7),
        ])
        #expect(layout.segments(offset: 34, length: 1) == [.init(fileIndex: 3, fileOffset: 19, length: 1, bufferOffset: 0)])
        #expect(layout.segments(offset: 0, length: 0).isEmpty)
    }

    @Test func mapsFilesToPieces() {
        #expect(layout.pieces(ofFile: 0, pieceLength: 8) == 0..<2)
        #expect(layout.pieces(ofFile: 1, pieceLength: 8) == 0..<0)
        #expect(layout.pieces(ofFile: 3, pieceLength: 8) == 1..<5)
    }
}

@Suite struct StorageTests {
    func makeTorrent(_ files: [(path: [String], length: Int64, attr: String?)], pieceLength: Int64 = 16) throws -> Metainfo {
        var builder = MetainfoBuilder(name: "t", pieceLength: Int(pieceLength), isDirectory: true,
                                      files: files.map { .init(path: $0.path, length: $0.length) })
        builder.trackerTiers = []
        // Rebuild with attributes by hand when padding is wanted.
        var info = try BencodeDecoder.decode(builder.encode(pieceHashes: [UInt8](repeating: 0, count: builder.pieceCount * 20))).dictionaryValue!["info"]!.dictionaryValue!
        info["files"] = .list(files.map { file in
            var entry = BencodeDictionary()
            entry["length"] = .integer(file.length)
            entry["path"] = .list(file.path.map { .string($0) })
            if let attr = file.attr { entry["attr"] = .string(attr) }
            return .dictionary(entry)
        })
        var top = BencodeDictionary()
        top["info"] = .dictionary(info)
        return try Metainfo(bytes: Bencode.dictionary(top).encoded())
    }

    @Test func writesAndReadsAcrossFileBoundaries() throws {
        let scratch = ScratchDirectory()
        let metainfo = try makeTorrent([(["x", "a"], 10, nil), (["empty"], 0, nil), (["b"], 30, nil)])
        let storage = TorrentStorage(metainfo: metainfo, dataDirectory: scratch.path, cache: FileHandleCache(capacity: 8))
        let data = randomBytes(40, seed: 1)
        try data.withUnsafeBytes { try storage.write(offset: 0, from: UnsafeRawBufferPointer(rebasing: $0[0..<25])) }
        try data.withUnsafeBytes { try storage.write(offset: 25, from: UnsafeRawBufferPointer(rebasing: $0[25..<40])) }
        #expect(scratch.read("t/x/a") == Array(data[0..<10]))
        #expect(scratch.read("t/b") == Array(data[10..<40]))
        var back = [UInt8](repeating: 0, count: 20)
        try back.withUnsafeMutableBytes { try storage.read(offset: 5, into: $0) }
        #expect(back == Array(data[5..<25]))
    }

    @Test func gatheredWritesSplitAcrossFilesAndSkipPadding() throws {
        let scratch = ScratchDirectory()
        let metainfo = try makeTorrent([(["a"], 10, nil), ([".pad", "6"], 6, "p"), (["sub", "b"], 16, nil), (["c"], 20, nil)])
        let storage = TorrentStorage(metainfo: metainfo, dataDirectory: scratch.path, cache: FileHandleCache(capacity: 8))
        let data = randomBytes(52, seed: 5)
        // Buffers whose edges fall inside files, on a file boundary and inside padding.
        let cuts = [0, 3, 13, 16, 17, 40, 52]
        try data.withUnsafeBytes { bytes in
            let buffers = zip(cuts, cuts.dropFirst()).map { UnsafeRawBufferPointer(rebasing: bytes[$0..<$1]) }
            try storage.write(offset: 0, from: buffers)
        }
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/t/.pad"))
        var back = [UInt8](repeating: 0xFF, count: 52)
        try back.withUnsafeMutableBytes { try storage.read(offset: 0, into: $0) }
        #expect(Array(back[0..<10]) == Array(data[0..<10]))
        #expect(Array(back[10..<16]) == [0, 0, 0, 0, 0, 0])
        #expect(Array(back[16..<52]) == Array(data[16..<52]))
        // At an offset, within one file.
        let patch: [UInt8] = [1, 2, 3, 4, 5, 6]
        try patch.withUnsafeBytes { bytes in
            try storage.write(offset: 20, from: [UnsafeRawBufferPointer(rebasing: bytes[0..<2]), UnsafeRawBufferPointer(rebasing: bytes[2..<6])])
        }
        try back.withUnsafeMutableBytes { try storage.read(offset: 0, into: $0) }
        #expect(Array(back[20..<26]) == patch)
        #expect(Array(back[26..<52]) == Array(data[26..<52]))
    }

    @Test func paddingReadsAsZerosAndIsNeverWritten() throws {
        let scratch = ScratchDirectory()
        let metainfo = try makeTorrent([(["a"], 10, nil), ([".pad", "6"], 6, "p"), (["b"], 16, nil)])
        let storage = TorrentStorage(metainfo: metainfo, dataDirectory: scratch.path, cache: FileHandleCache(capacity: 8))
        let data = randomBytes(32, seed: 2)
        try data.withUnsafeBytes { try storage.write(offset: 0, from: $0) }
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/t/.pad"))
        var back = [UInt8](repeating: 0xFF, count: 32)
        try back.withUnsafeMutableBytes { try storage.read(offset: 0, into: $0) }
        #expect(Array(back[0..<10]) == Array(data[0..<10]))
        #expect(Array(back[10..<16]) == [0, 0, 0, 0, 0, 0])
        #expect(Array(back[16..<32]) == Array(data[16..<32]))
    }

    @Test func missingAndShortFilesAreMissingData() throws {
        let scratch = ScratchDirectory()
        let metainfo = try makeTorrent([(["a"], 16, nil), (["b"], 16, nil)])
        let storage = TorrentStorage(metainfo: metainfo, dataDirectory: scratch.path, cache: FileHandleCache(capacity: 8))
        var buffer = [UInt8](repeating: 0, count: 16)
        #expect(throws: StorageError.missing(path: scratch.path + "/t/a")) {
            try buffer.withUnsafeMutableBytes { try storage.read(offset: 0, into: $0) }
        }
        scratch.write("t/b", [1, 2, 3])
        #expect(throws: StorageError.short(path: scratch.path + "/t/b")) {
            try buffer.withUnsafeMutableBytes { try storage.read(offset: 16, into: $0) }
        }
    }

    /// Opening a FIFO for reading waits for a writer: a data file replaced by one must
    /// fail at once, not hold a disk thread (and the descriptor cache's lock) for ever.
    @Test func aFifoOrDirectoryInPlaceOfADataFileIsAnErrorNotAWait() throws {
        let scratch = ScratchDirectory()
        let metainfo = try makeTorrent([(["a"], 16, nil), (["b"], 16, nil)])
        let storage = TorrentStorage(metainfo: metainfo, dataDirectory: scratch.path, cache: FileHandleCache(capacity: 8))
        try FileManager.default.createDirectory(atPath: scratch.path + "/t", withIntermediateDirectories: true)
        #expect(mkfifo(scratch.path + "/t/a", 0o644) == 0)
        try FileManager.default.createDirectory(atPath: scratch.path + "/t/b", withIntermediateDirectories: true)
        var buffer = [UInt8](repeating: 0, count: 16)
        #expect(throws: StorageError.notRegularFile(path: scratch.path + "/t/a")) {
            try buffer.withUnsafeMutableBytes { try storage.read(offset: 0, into: $0) }
        }
        #expect(throws: StorageError.notRegularFile(path: scratch.path + "/t/a")) {
            try buffer.withUnsafeBytes { try storage.write(offset: 0, from: $0) }
        }
        #expect(throws: StorageError.notRegularFile(path: scratch.path + "/t/b")) {
            try buffer.withUnsafeMutableBytes { try storage.read(offset: 16, into: $0) }
        }
        #expect(StorageError.notRegularFile(path: "x").description == "x: not a regular file")
    }

    @Test func descriptorCacheStaysBounded() throws {
        let scratch = ScratchDirectory()
        let cache = FileHandleCache(capacity: 3)
        for index in 0..<10 {
            scratch.write("f\(index)", [UInt8(index)])
            let byte = try cache.withDescriptor(path: scratch.path + "/f\(index)", writable: false) { fd throws(StorageError) in
                var value: UInt8 = 0
                _ = read(fd, &value, 1)
                return value
            }
            #expect(byte == UInt8(index))
            #expect(cache.openCount <= 3)
        }
        // Upgrading a read-only descriptor to a writable one.
        try cache.withDescriptor(path: scratch.path + "/f9", writable: true) { fd throws(StorageError) in
            var value: UInt8 = 42
            #expect(pwrite(fd, &value, 1, 0) == 1)
        }
        #expect(scratch.read("f9") == [42])
    }
}

@Suite struct SerialDiskJobsTests {
    @Test func runsJobsOneAtATimeInOrder() {
        let pool = DiskPool(threads: 4)
        defer { pool.shutdown() }
        let jobs = SerialDiskJobs(pool: pool)
        final class Log: @unchecked Sendable {
            let lock = NSLock()
            var order: [Int] = []
            var running = 0
            var overlapped = false
        }
        let log = Log()
        let done = DispatchSemaphore(value: 0)
        // More than a turn's worth, so the chain goes back to the pool's queue and on.
        let count = SerialDiskJobs.jobsPerTurn * 3 + 5
        for index in 0..<count {
            jobs.submit {
                log.lock.withLock {
                    log.running += 1
                    if log.running > 1 { log.overlapped = true }
                }
                usleep(200)
                log.lock.withLock {
                    log.running -= 1
                    log.order.append(index)
                }
                if index == count - 1 { done.signal() }
            }
        }
        done.wait()
        #expect(log.lock.withLock { log.order } == Array(0..<count))
        #expect(!log.lock.withLock { log.overlapped })
    }
}

@Suite struct HashingTests {
    /// Writes real data, makes a torrent of it, and checks what verification reports.
    func makeSet(_ scratch: ScratchDirectory) -> [UInt8] {
        scratch.write("src/set/one.bin", randomBytes(50_000, seed: 3))
        scratch.write("src/set/sub/two.bin", randomBytes(30_000, seed: 4))
        scratch.write("src/set/sub/empty", [])
        let pool = DiskPool(threads: 2)
        defer { pool.shutdown() }
        var options = TorrentCreator.Options(path: scratch.path + "/src/set")
        options.pieceLength = 16384
        return try! TorrentCreator.create(options, pool: pool)
    }

    @Test func createLaysFilesOutInByteOrder() throws {
        let scratch = ScratchDirectory()
        scratch.write("d/b", [1])
        scratch.write("d/Z", [2])
        scratch.write("d/a/x", [3])
        let scanned = try TorrentCreator.scan(scratch.path + "/d")
        #expect(scanned.files.map(\.path) == [["Z"], ["a", "x"], ["b"]])
        #expect(scanned.isDirectory)
    }

    @Test func verifiesCompleteCorruptAndMissingData() throws {
        let scratch = ScratchDirectory()
        let metainfo = try Metainfo(bytes: makeSet(scratch))
        #expect(metainfo.pieceCount == 5)
        let pool = DiskPool(threads: 2)
        defer { pool.shutdown() }

        let complete = DataVerifier.verify(metainfo: metainfo, dataDirectory: scratch.path + "/src", pool: pool)
        #expect(complete.isComplete)
        #expect(complete.files.map(\.state) == [.complete, .complete, .complete])

        var corrupted = scratch.read("src/set/one.bin")!
        corrupted[40_000] ^= 0xFF
        scratch.write("src/set/one.bin", corrupted)
        let corrupt = DataVerifier.verify(metainfo: metainfo, dataDirectory: scratch.path + "/src", pool: pool)
        #expect(corrupt.corruptPieces == [40_000 / 16384])
        #expect(corrupt.have.setCount == 4)

        try FileManager.default.removeItem(atPath: scratch.path + "/src/set/sub/two.bin")
        let missing = DataVerifier.verify(metainfo: metainfo, dataDirectory: scratch.path + "/src", pool: pool)
        // two.bin spans bytes 50000..<80000: pieces 3 and 4 (piece 3 also holds one.bin's tail).
        #expect(missing.missingPieces == [3, 4])
        #expect(missing.files[2].state == .missing)
    }
}
