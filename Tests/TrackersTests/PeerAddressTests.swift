import Testing
@testable import Trackers

@Suite struct PeerAddressTests {
    @Test func parsesCompactIPv4() throws {
        let peer = try #require(PeerAddress(compact: [1, 2, 3, 4, 0x1A, 0xE1]))
        #expect(peer.ip == .v4(0x0102_0304))
        #expect(peer.port == 6881)
        #expect(peer.description == "1.2.3.4:6881")
        #expect(peer.compact == [1, 2, 3, 4, 0x1A, 0xE1])
    }

    @Test func parsesCompactIPv6() throws {
        let bytes: [UInt8] = [0x20, 0x01, 0x0D, 0xB8] + Array(repeating: 0, count: 11) + [1, 0x1A, 0xE1]
        let peer = try #require(PeerAddress(compact: bytes))
        #expect(peer.description == "[2001:db8::1]:6881")
        #expect(peer.compact == bytes)
        let loopback = try #require(PeerAddress(compact: Array(repeating: 0, count: 15) + [1, 0x1A, 0xE1]))
        #expect(loopback.description == "[::1]:6881")
    }

    @Test func refusesOtherCompactLengths() {
        for length in [0, 5, 7, 16, 17, 19] {
            #expect(PeerAddress(compact: Array(repeating: 1, count: length)) == nil)
        }
    }

    @Test func compactListMustBeWholePeers() throws {
        let list = try #require(PeerAddress.parseCompactList([1, 2, 3, 4, 0, 80, 5, 6, 7, 8, 0, 81], stride: 6))
        #expect(list.map(\.description) == ["1.2.3.4:80", "5.6.7.8:81"])
        #expect(PeerAddress.parseCompactList([1, 2, 3, 4, 0, 80, 5], stride: 6) == nil)
        #expect(PeerAddress.parseCompactList([], stride: 18) == [])
    }

    @Test(arguments: [
        ("1.2.3.4", "1.2.3.4"),
        ("255.255.255.255", "255.255.255.255"),
        ("0.0.0.0", "0.0.0.0"),
        ("::", "::"),
        ("::1", "::1"),
        ("1::", "1::"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("2001:db8:0:1:0:0:1:1", "2001:db8:0:1::1:1"),
        ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),
        ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"),
        ("1:0:3:4:5:6:7:8", "1:0:3:4:5:6:7:8"),
        ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"),
        ("::ffff:10.0.0.1", "::ffff:10.0.0.1"),
        ("64:ff9b::192.0.2.33", "64:ff9b::c000:221"),
    ])
    func parsesAndPrintsAddressText(text: String, canonical: String) throws {
        let ip = try #require(PeerAddress.IP(text))
        #expect(ip.description == canonical)
        #expect(PeerAddress.IP(canonical) == ip)
        #expect(PeerAddress.IP(bytes: ip.bytes) == ip)
    }

    @Test(arguments: [
        "", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1..2.3", "1.2.3.4 ", "a.b.c.d",
        ":", ":::", "1:::2", "1::2::3", ":1::", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7:8::",
        "12345::", "g::", "::1%eth0", "[::1]", "1.2.3.4::", "tracker.example.com",
    ])
    func refusesBadAddressText(text: String) {
        #expect(PeerAddress.IP(text) == nil)
    }
}
