import BitTorrent
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
}
