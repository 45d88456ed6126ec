import BitTorrent
import Foundation
import Testing
@testable import Seeder

/// Storage as a download uses it: preallocation, and resume data saved while files are
/// still being written.
@Suite struct DownloadStorageTests {
    func metainfo(_ files: [(path: [String], length: Int64)], pieceLength: Int = 16) throws -> Metainfo {
        var builder = MetainfoBuilder(name: "t", pieceLength: pieceLength, isDirectory: true,
                                      files: files.map { .init(path: $0.path, length: $0.length) })
        builder.trackerTiers = []
        return try Metainfo(bytes: builder.encode(pieceHashes: [UInt8](repeating: 0, count: builder.pieceCount * 20)))
    }

    @Test func preallocationGivesEveryFileItsLengthAndKeepsData() throws {
        let scratch = ScratchDirectory()
        let info = try metainfo([(["deep", "a"], 40), (["b"], 24)])
        let storage = TorrentStorage(metainfo: info, dataDirectory: scratch.path, cache: FileHandleCache(capacity: 8))
        try [UInt8](repeating: 9, count: 8).withUnsafeBytes { try storage.write(offset: 40, from: $0) }
        try storage.preallocate()
        #expect(storage.fileStatus(0)?.size == 40)
        #expect(storage.fileStatus(1)?.size == 24)
        #expect(scratch.read("t/b").map { Array($0.prefix(8)) } == [UInt8](repeating: 9, count: 8))
    }

    @Test func resumeSavedMidDownloadTrustsItsPiecesAfterMoreWrites() throws {
        let scratch = ScratchDirectory()
        let state = scratch.path + "/state"
        let info = try metainfo([(["a"], 64), (["b"], 64)])
        let storage = TorrentStorage(metainfo: info, dataDirectory: scratch.path + "/data", cache: FileHandleCache(capacity: 8))
        let block = [UInt8](repeating: 1, count: 16)
        try block.withUnsafeBytes { try storage.write(offset: 16, from: $0) }
        try block.withUnsafeBytes { try storage.write(offset: 80, from: $0) }
        var have = Bitfield(count: info.pieceCount)
        have[1] = true
        have[5] = true
        let resume = ResumeData(infoHash: info.infoHash, have: have, files: ResumeStore.writingStamps(of: info, storage: storage))
        #expect(ResumeStore.save(resume, stateDirectory: state) == nil)

        // The download went on (files grew, mtimes moved) and was killed.
        usleep(20_000)
        try block.withUnsafeBytes { try storage.write(offset: 48, from: $0) }
        try block.withUnsafeBytes { try storage.write(offset: 112, from: $0) }
        let plan = ResumeStore.plan(metainfo: info, storage: storage, stateDirectory: state)
        #expect(plan.trusted == have)
        #expect(plan.pieces.isEmpty)

        // A file now shorter than when it was saved is hashed again.
        truncate(storage.paths[1], 8)
        let shrunk = ResumeStore.plan(metainfo: info, storage: storage, stateDirectory: state)
        #expect(shrunk.pieces == [4, 5, 6, 7])
        #expect(shrunk.trusted[1] && !shrunk.trusted[5])
    }
}
