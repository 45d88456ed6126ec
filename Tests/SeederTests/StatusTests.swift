import BitTorrent
import Testing
@testable import EventLoop
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

@Suite struct ListenAddressTests {
    @Test(arguments: ["127.0.0.1:9180", "[::1]:9180", "0.0.0.0:1", "[2001:db8::5]:65535"])
    func accepts(_ text: String) {
        #expect(ListenAddress(text)?.description == text)
    }

    @Test(arguments: ["127.0.0.1", "::1:9180", "[::1]9180", "localhost:80", "127.0.0.1:0", "127.0.0.1:65536", "[127.0.0.1]:80", ""])
    func refuses(_ text: String) {
        #expect(ListenAddress(text) == nil)
    }
}

@Suite struct PrometheusTextTests {
    @Test func escapesLabelsAndParsesAsExposition() {
        let torrent = StatusSnapshot.Torrent(
            name: "a \"quoted\\name\"\nline", infoHash: String(repeating: "ab", count: 20), state: "seeding", error: nil,
            progress: 0.5, size: 10, piecesHave: 1, pieces: 2,
            transfer: .init(uploadRate: 1, downloadRate: 0, uploaded: 1 << 40, downloaded: 0), peers: .init(tcp: 2, utp: 1), trackers: [])
        let status = StatusSnapshot(
            version: "0", uptime: 3, listenPort: 6881, transfer: .init(uploadRate: 1, downloadRate: 0, uploaded: 1 << 40, downloaded: 0),
            uploadedByTransport: ["tcp": 1 << 40, "utp": 0], downloadedByTransport: ["tcp": 0, "utp": 0], peers: .init(tcp: 2, utp: 1),
            counters: .init(blocksServed: 9, hashFailures: 0, peerFaults: 1, announcesSucceeded: 2, announcesFailed: 3, utpRetransmits: 4),
            uploadLimit: 0, downloadLimit: 0, torrents: [torrent])
        let text = PrometheusText.render(status)
        #expect(text.contains(#"seeder_torrent_peers{info_hash="\#(torrent.infoHash)",name="a \"quoted\\name\"\nline"} 3"#))
        #expect(text.contains("seeder_uploaded_bytes_total{transport=\"tcp\"} 1099511627776\n"))
        #expect(text.contains("seeder_torrent_progress_ratio{info_hash=\"\(torrent.infoHash)\",name=\"a \\\"quoted\\\\name\\\"\\nline\"} 0.5\n"))
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            #expect(line.split(separator: " ").count >= 2, "sample line without a value: \(line)")
        }
    }
}

@Suite struct DirectoryWatcherTests {
    /// Records as the kernel lays them out: header, then the name padded with NULs.
    func record(mask: Int32, name: String) -> [UInt8] {
        var name = Array(name.utf8)
        if !name.isEmpty { name += [UInt8](repeating: 0, count: 16 - name.count % 16) }
        var header = inotify_event()
        header.wd = 1
        header.mask = UInt32(mask)
        header.len = UInt32(name.count)
        return withUnsafeBytes(of: header) { Array($0) } + name
    }

    @Test func decodesAppearAndDisappear() {
        let bytes = record(mask: IN_CLOSE_WRITE, name: "a.torrent") + record(mask: IN_MOVED_FROM, name: "b.torrent")
            + record(mask: IN_MOVED_TO, name: "exactly-16-bytes") + record(mask: IN_Q_OVERFLOW, name: "")
            + record(mask: IN_DELETE_SELF, name: "")
        #expect(DirectoryWatcher.parse(bytes[...]) == [
            .appeared("a.torrent"), .disappeared("b.torrent"), .appeared("exactly-16-bytes"), .overflow, .directoryGone,
        ])
    }

    @Test func survivesATruncatedRecord() {
        let bytes = record(mask: IN_CLOSE_WRITE, name: "a.torrent")
        #expect(DirectoryWatcher.parse(bytes.dropLast(5)) == [.appeared("a.torrent")])
        #expect(DirectoryWatcher.parse(bytes.prefix(7)) == [])
    }
}

import Glibc
