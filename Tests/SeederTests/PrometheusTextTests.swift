import Testing
@testable import Seeder

@Suite struct PrometheusTextTests {
    @Test func escapesLabelsAndParsesAsExposition() {
        let torrent = StatusSnapshot.Torrent(
            name: "a \"quoted\\name\"\nline", infoHash: String(repeating: "ab", count: 20), state: "seeding", error: nil,
            progress: 0.5, size: 10, piecesHave: 1, pieces: 2,
            transfer: .init(uploadRate: 1, downloadRate: 0, uploaded: 1 << 40, downloaded: 0), peers: .init(tcp: 2, utp: 1), trackers: [])
        let status = StatusSnapshot(
            version: "0", uptime: 3, listenPort: 6881, transfer: .init(uploadRate: 1, downloadRate: 0, uploaded: 1 << 40, downloaded: 0),
            uploadedByTransport: ["tcp": 1 << 40, "utp": 0], downloadedByTransport: ["tcp": 0, "utp": 0], peers: .init(tcp: 2, utp: 1),
            counters: .init(blocksServed: 9, hashFailures: 0, peerFaults: 1, announcesSucceeded: 2, announcesFailed: 3, utpRetransmits: 4,
                            utpSocket: .init(datagramsReceived: 20_100, malformed: 7, stray: 2, synsReceived: 20_000, halfOpenEvicted: 19_000)),
            uploadLimit: 0, downloadLimit: 0, torrents: [torrent])
        let text = PrometheusText.render(status)
        #expect(text.contains(#"seeder_torrent_peers{info_hash="\#(torrent.infoHash)",name="a \"quoted\\name\"\nline"} 3"#))
        #expect(text.contains("seeder_uploaded_bytes_total{transport=\"tcp\"} 1099511627776\n"))
        #expect(text.contains("seeder_torrent_progress_ratio{info_hash=\"\(torrent.infoHash)\",name=\"a \\\"quoted\\\\name\\\"\\nline\"} 0.5\n"))
        #expect(text.contains("seeder_utp_datagrams_rejected_total{reason=\"malformed\"} 7\n"))
        #expect(text.contains("seeder_utp_syns_total{result=\"received\"} 20000\n"))
        #expect(text.contains("seeder_utp_half_open_dropped_total{reason=\"evicted\"} 19000\n"))
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            #expect(line.split(separator: " ").count >= 2, "sample line without a value: \(line)")
        }
    }
}
