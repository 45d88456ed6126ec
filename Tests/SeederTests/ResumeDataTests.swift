import BitTorrent
import Dispatch
import Foundation
import Synchronization
import Testing
@testable import Seeder

@Suite struct ResumeDataTests {
    let infoHash = InfoHash(bytes: Array(repeating: 7, count: 20))!

    func sample() -> ResumeData {
        var have = Bitfield(count: 21)
        for piece in [0, 3, 20] { have[piece] = true }
        return ResumeData(infoHash: infoHash, have: have,
                          files: [.init(size: 5, modified: 1_700_000_000_123_456_789), .missing, .init(size: 0, modified: 0)])
    }

    @Test func roundTrips() throws {
        let resume = sample()
        let decoded = try ResumeData.decode(resume.encoded(), infoHash: infoHash, pieceCount: 21, fileCount: 3)
        #expect(decoded == resume)
    }

    @Test func refusesResumeDataOfAnotherShape() {
        let bytes = sample().encoded()
        let other = InfoHash(bytes: Array(repeating: 8, count: 20))!
        #expect(throws: ResumeError.self) { try ResumeData.decode(bytes, infoHash: other, pieceCount: 21, fileCount: 3) }
        #expect(throws: ResumeError.self) { try ResumeData.decode(bytes, infoHash: infoHash, pieceCount: 22, fileCount: 3) }
        #expect(throws: ResumeError.self) { try ResumeData.decode(bytes, infoHash: infoHash, pieceCount: 21, fileCount: 4) }
    }

    @Test func refusesDamage() {
        var bytes = sample().encoded()
        #expect(throws: ResumeError.self) { try ResumeData.decode(Array(bytes.prefix(bytes.count / 2)), infoHash: infoHash, pieceCount: 21, fileCount: 3) }
        bytes[bytes.count / 2] ^= 0xFF
        #expect(throws: ResumeError.self) { try ResumeData.decode(bytes, infoHash: infoHash, pieceCount: 21, fileCount: 3) }
        #expect(throws: ResumeError.self) { try ResumeData.decode([], infoHash: infoHash, pieceCount: 21, fileCount: 3) }
        #expect(throws: ResumeError.self) { try ResumeData.decode(Zstd.compress(Array("i3e".utf8)), infoHash: infoHash, pieceCount: 21, fileCount: 3) }
    }

    /// A flipped bit in zstd's literals still decompresses: without the frame checksum
    /// bit rot in the resume file could turn a missing piece into a trusted one.
    @Test func noFlippedBitIsTrusted() {
        let resume = sample()
        let bytes = resume.encoded()
        for index in bytes.indices {
            for mask: UInt8 in [0x01, 0x10, 0x80] {
                var damaged = bytes
                damaged[index] ^= mask
                guard let decoded = try? ResumeData.decode(damaged, infoHash: infoHash, pieceCount: 21, fileCount: 3) else { continue }
                #expect(decoded == resume, "byte \(index) ^ \(mask) decoded to other resume data")
            }
        }
    }
}

@Suite struct FileWriterTests {
    /// Two disk threads save one torrent's resume data at once (the check's save and
    /// the download's): each must land whole, neither may fail on the other's file.
    @Test func concurrentAtomicWritesOfOnePathDoNotMix() {
        let scratch = ScratchDirectory()
        let path = scratch.path + "/x.resume"
        let contents = (0..<8).map { index in [UInt8](repeating: UInt8(index), count: 4096 * (8 - index)) }
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            for _ in 0..<200 {
                if let problem = FileWriter.writeAtomically(contents[worker], to: path) {
                    failures.withLock { $0.append(problem) }
                }
            }
        }
        #expect(failures.withLock { $0.count } == 0)
        let final = scratch.read("x.resume")
        #expect(final.map { contents.contains($0) } == true)
        let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: scratch.path)) ?? []
        #expect(leftovers == ["x.resume"])
    }
}
