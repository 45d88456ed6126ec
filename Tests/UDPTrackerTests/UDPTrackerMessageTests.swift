import BitTorrent
import Testing
import Trackers
@testable import UDPTracker

@Suite struct UDPTrackerMessageTests {
    @Test func connectRequestIsMagicActionAndTransaction() {
        let packet = UDPTrackerMessage.connectRequest(transactionID: 0x0102_0304)
        #expect(packet == [0x00, 0x00, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0, 1, 2, 3, 4])
    }

    @Test func announceRequestLayout() {
        let request = announceRequest(9, event: .stopped)
        let bytes = UDPTrackerMessage.announceRequest(connectionID: 0x1122_3344_5566_7788, transactionID: 77, request: request)
        let packet = SentPacket(bytes: bytes)
        #expect(packet.count == 98)  // no URL data: no options at all
        #expect(packet.connectionID == 0x1122_3344_5566_7788)
        #expect(packet.action == 1)
        #expect(packet.transactionID == 77)
        #expect(Array(bytes[16..<36]) == request.infoHash.bytes)
        #expect(Array(bytes[36..<56]) == request.peerID)
        #expect(packet.u64(56) == 2000)  // downloaded
        #expect(packet.u64(64) == 0)  // left
        #expect(packet.u64(72) == 1000)  // uploaded
        #expect(packet.u32(80) == 3)  // stopped
        #expect(packet.u32(84) == 0)  // ip: use the source address
        #expect(packet.u32(88) == 0xDEAD_BEEF)
        #expect(packet.u32(92) == 50)
        #expect(Array(bytes[96..<98]) == [0xC8, 0xD5])  // 51413
    }

    @Test func announceRequestClampsNegativesAndDefaultsNumWant() {
        var request = announceRequest()
        request.uploaded = -5
        request.numWant = -1
        let packet = SentPacket(bytes: UDPTrackerMessage.announceRequest(connectionID: 1, transactionID: 2, request: request))
        #expect(packet.u64(72) == 0)
        #expect(packet.u32(92) == 0xFFFF_FFFF)  // -1: the tracker's default
        request.peerID = [1, 2, 3]  // a broken caller still gets a 98-byte announce
        #expect(UDPTrackerMessage.announceRequest(connectionID: 1, transactionID: 2, request: request).count == 98)
        request.numWant = 1 << 40
        #expect(SentPacket(bytes: UDPTrackerMessage.announceRequest(connectionID: 1, transactionID: 2, request: request)).u32(92) == 0x7FFF_FFFF)
    }

    @Test func bep41URLDataIsChunkedAt255Bytes() {
        let short = Array("/announce?passkey=abc".utf8)
        let packet = UDPTrackerMessage.announceRequest(connectionID: 1, transactionID: 2, request: announceRequest(), urlData: short)
        #expect(packet.count == 98 + 2 + short.count)
        #expect(Array(packet[98...]) == [2, UInt8(short.count)] + short)

        let long = (0..<600).map { UInt8(ascii: "a") + UInt8($0 % 26) }
        let options = URLData.encode(long)
        #expect(options.count == URLData.encodedLength(600))
        #expect(options.count == 600 + 6)
        #expect(options[0] == 2 && options[1] == 255)
        #expect(options[257] == 2 && options[258] == 255)
        #expect(options[514] == 2 && options[515] == 90)
        #expect(URLData.decode(options) == long)
        #expect(URLData.encode([UInt8]()) == [])

        let exactly255 = [UInt8](repeating: 0x2F, count: 255)
        #expect(URLData.encode(exactly255).count == 257)
    }

    @Test func bep41DecodingFollowsTheTrackersRules() {
        // NOP skipped, chunks concatenated, EndOfOptions stops, unknown types skipped by length.
        #expect(URLData.decode([1, 2, 2, 0x2F, 0x61, 1, 2, 1, 0x62, 0, 2, 1, 0x63]) == Array("/ab".utf8))
        #expect(URLData.decode([9, 2, 0xAA, 0xBB, 2, 1, 0x2F]) == Array("/".utf8))
        #expect(URLData.decode([2, 5, 0x2F]) == nil)  // runs past the end
        #expect(URLData.decode([2]) == nil)
        #expect(URLData.decode([UInt8]()) == [])
    }

    @Test func scrapeRequestLayout() {
        let hashes = (0..<74).map { infoHash(UInt8($0)) }
        let bytes = UDPTrackerMessage.scrapeRequest(connectionID: 5, transactionID: 6, infoHashes: hashes)
        #expect(bytes.count == 16 + 74 * 20)
        #expect(SentPacket(bytes: bytes).action == 2)
        #expect(Array(bytes[(16 + 20 * 73)...]) == hashes[73].bytes)
    }

    @Test func announceReplyWithIPv4Peers() throws {
        let peers = [peer("10.0.0.1", 6881), peer("10.0.0.2", 51413)]
        let reply = announceReply(1, interval: 900, leechers: 4, seeders: 9, peers: peers)
        let response = try reply.withUnsafeBytes { try UDPTrackerMessage.parseAnnounceReply($0, ipv6: false).get() }
        #expect(response.interval == 900)
        #expect(response.leechers == 4 && response.seeders == 9)
        #expect(response.peers == peers)
    }

    @Test func announceReplyWithIPv6Peers() throws {
        let peers = [peer("2001:db8::5", 6881), peer("::ffff:10.0.0.3", 7000)]
        let reply = announceReply(1, peers: peers)
        #expect(reply.count == 20 + 36)
        let response = try reply.withUnsafeBytes { try UDPTrackerMessage.parseAnnounceReply($0, ipv6: true).get() }
        #expect(response.peers == peers)
        // The same bytes over IPv4 are six 6-byte peers: the family decides the format.
        let asV4 = try reply.withUnsafeBytes { try UDPTrackerMessage.parseAnnounceReply($0, ipv6: false).get() }
        #expect(asV4.peers.count <= 6 && asV4.peers != peers)
    }

    @Test func longerRepliesAreAccepted() throws {
        // A partial trailing peer is dropped; a connect reply with extra bytes still has its id.
        let reply = announceReply(1, peers: [peer("10.0.0.1", 6881)]) + [1, 2, 3]
        let response = try reply.withUnsafeBytes { try UDPTrackerMessage.parseAnnounceReply($0, ipv6: false).get() }
        #expect(response.peers == [peer("10.0.0.1", 6881)])
        let connect = connectReply(1, connectionID: 42) + [0xFF, 0xFF]
        #expect(try connect.withUnsafeBytes { try UDPTrackerMessage.parseConnectReply($0).get() } == 42)
        let scrape = scrapeReply(1, counts: [(1, 2, 3), (4, 5, 6)])
        let results = try scrape.withUnsafeBytes { try UDPTrackerMessage.parseScrapeReply($0, infoHashes: [infoHash(1)]).get() }
        #expect(results == [UDPScrapeResult(infoHash: infoHash(1), seeders: 1, completed: 2, leechers: 3)])
    }

    @Test func truncatedRepliesAreInvalid() {
        let connect = Array(connectReply(1, connectionID: 42).prefix(15))
        #expect((try? connect.withUnsafeBytes { try UDPTrackerMessage.parseConnectReply($0).get() }) == nil)
        for length in [9, 12, 19] {
            let announce = Array(announceReply(1).prefix(length))
            let result = announce.withUnsafeBytes { UDPTrackerMessage.parseAnnounceReply($0, ipv6: false) }
            guard case .failure(.transport(let text)) = result else {
                Issue.record("\(length) bytes: \(result)")
                continue
            }
            #expect(text.contains("\(length) bytes"))
        }
        let scrape = Array(scrapeReply(1, counts: [(1, 2, 3), (4, 5, 6)]).prefix(31))
        let result = scrape.withUnsafeBytes { UDPTrackerMessage.parseScrapeReply($0, infoHashes: [infoHash(1), infoHash(2)]) }
        #expect((try? result.get()) == nil)
        #expect([UInt8](repeating: 0, count: 7).withUnsafeBytes { UDPTrackerMessage.replyHeader($0) } == nil)
    }

    @Test func eightByteAnnounceReplyIsARefusal() {
        let reply = be32(1) + be32(5)
        let result = reply.withUnsafeBytes { UDPTrackerMessage.parseAnnounceReply($0, ipv6: false) }
        guard case .failure(.failure(let reason)) = result else {
            Issue.record("expected a failure, got \(result)")
            return
        }
        #expect(reason.contains("whitelist"))
    }

    @Test func negativeAndGarbageCountsAreDropped() throws {
        let reply = announceReply(1, interval: 0xFFFF_FFFF, leechers: 0x8000_0000, seeders: 2)
        let response = try reply.withUnsafeBytes { try UDPTrackerMessage.parseAnnounceReply($0, ipv6: false).get() }
        #expect(response.interval == AnnounceResponse.defaultInterval)
        #expect(response.leechers == nil && response.seeders == 2)
    }

    @Test func errorTextIsSanitized() {
        // opentracker ends its message with a NUL; a newline must not forge a log line.
        let reply = errorReply(1, Array("Requested download is not authorized\n for use with this tracker.".utf8) + [0])
        #expect(reply.withUnsafeBytes { UDPTrackerMessage.parseErrorReply($0) }
                == "Requested download is not authorized  for use with this tracker.")
        #expect(errorReply(1, []).withUnsafeBytes { UDPTrackerMessage.parseErrorReply($0) } == "")
        let long = errorReply(1, [UInt8](repeating: 0x41, count: 60_000))
        let text = long.withUnsafeBytes { UDPTrackerMessage.parseErrorReply($0) }
        #expect(text.count == 513 && text.hasSuffix("…"))
        let invalidUTF8 = errorReply(1, [0xFF, 0xFE, 0x41])
        #expect(invalidUTF8.withUnsafeBytes { UDPTrackerMessage.parseErrorReply($0) } == "\u{FFFD}\u{FFFD}A")
    }

    @Test func trackerURLs() {
        let url = UDPTrackerURL("udp://tracker.example.org:6969/announce?passkey=abc#frag")
        #expect(url == UDPTrackerURL(host: "tracker.example.org", port: 6969, urlData: "/announce?passkey=abc"))
        #expect(UDPTrackerURL("UDP://[2001:db8::1]:80/a") == UDPTrackerURL(host: "2001:db8::1", port: 80, urlData: "/a"))
        #expect(UDPTrackerURL("udp://1.2.3.4:1337") == UDPTrackerURL(host: "1.2.3.4", port: 1337, urlData: ""))
        #expect(UDPTrackerURL("udp://t.example:7?x=1") == UDPTrackerURL(host: "t.example", port: 7, urlData: "?x=1"))
        #expect(UDPTrackerURL("udp://user@t.example:7/") == UDPTrackerURL(host: "t.example", port: 7, urlData: "/"))
        for bad in ["http://t.example:80/announce", "udp://t.example/announce", "udp://t.example:0/", "udp://:80/",
                    "udp://t.example:65536/", "udp://t.example:+80/", "udp://2001:db8::1:80/", "udp://[::1/", "udp://"] {
            #expect(UDPTrackerURL(bad) == nil, "\(bad)")
        }
    }
}
