import BitTorrent
import Testing
@testable import Trackers

@Suite struct HTTPAnnounceURLTests {
    /// Bytes that must be escaped (0x00, space, 0xFF, '%', '&', '/', '+', 0x80, 0x7F,
    /// controls) next to ones that must not ('~', letters, digits, '-', '_', '.').
    static let awkwardHash = InfoHash(bytes: [0x00, 0x20, 0xFF, 0x7E, 0x41, 0x7A, 0x30, 0x2D, 0x5F, 0x2E,
                                              0x25, 0x26, 0x2F, 0x2B, 0x80, 0x7F, 0x01, 0x02, 0x03, 0x04])!
    static let encodedHash = "%00%20%FF~Az0-_.%25%26%2F%2B%80%7F%01%02%03%04"
    static let peerID = Array("-SD0100-012345 789~!".utf8)

    static func request(event: AnnounceEvent = .started, trackerID: String? = nil) -> AnnounceRequest {
        AnnounceRequest(infoHash: awkwardHash, peerID: peerID, port: 6881, uploaded: 1, downloaded: 2, left: 3,
                        event: event, numWant: 50, key: 0xBEEF, trackerID: trackerID)
    }

    @Test func buildsTheExactQuery() {
        let url = HTTPAnnounce.url(announceURL: "http://tracker.example/announce", request: Self.request())
        #expect(url == "http://tracker.example/announce?info_hash=\(Self.encodedHash)&peer_id=-SD0100-012345%20789~%21"
            + "&port=6881&uploaded=1&downloaded=2&left=3&key=0000BEEF&event=started&numwant=50&compact=1&no_peer_id=1")
    }

    @Test func leavesEventOutForRegularAnnounces() {
        let url = HTTPAnnounce.url(announceURL: "http://t/announce", request: Self.request(event: .none))
        #expect(!url.contains("event="))
        #expect(url.contains("&key=0000BEEF&numwant=50&"))
        for event in [AnnounceEvent.completed, .stopped] {
            #expect(HTTPAnnounce.url(announceURL: "http://t/announce", request: Self.request(event: event))
                .contains("&event=\(event.queryValue!)&numwant=50"))
        }
    }

    @Test func appendsToAnExistingQuery() {
        let url = HTTPAnnounce.url(announceURL: "https://private.example/announce?passkey=x", request: Self.request())
        #expect(url.hasPrefix("https://private.example/announce?passkey=x&info_hash=\(Self.encodedHash)&peer_id="))
        #expect(HTTPAnnounce.url(announceURL: "http://t/a?", request: Self.request()).hasPrefix("http://t/a?info_hash="))
        #expect(HTTPAnnounce.url(announceURL: "http://t/a?k=1&", request: Self.request()).hasPrefix("http://t/a?k=1&info_hash="))
        #expect(HTTPAnnounce.url(announceURL: "http://t/a#frag", request: Self.request()).hasPrefix("http://t/a?info_hash="))
    }

    @Test func echoesTheTrackerIDEncoded() {
        let url = HTTPAnnounce.url(announceURL: "http://t/announce", request: Self.request(trackerID: "ab c/1"))
        #expect(url.hasSuffix("&compact=1&no_peer_id=1&trackerid=ab%20c%2F1"))
    }

    @Test func sendsNegativeCountersAsZero() {
        var request = Self.request()
        request.uploaded = -1
        request.left = -5
        request.numWant = -1
        let url = HTTPAnnounce.url(announceURL: "http://t/announce", request: request)
        #expect(url.contains("&uploaded=0&downloaded=2&left=0&"))
        #expect(url.contains("&numwant=0&"))
    }

    @Test func keyIsEightHexDigits() {
        var request = Self.request()
        request.key = 0xDEAD_BEEF
        #expect(HTTPAnnounce.url(announceURL: "http://t/announce", request: request).contains("&key=DEADBEEF&"))
        request.key = 0
        #expect(HTTPAnnounce.url(announceURL: "http://t/announce", request: request).contains("&key=00000000&"))
    }

    @Test func eventValues() {
        #expect(AnnounceEvent.allCases.map(\.udpValue) == [0, 2, 1, 3])
        #expect(AnnounceEvent.allCases.map(\.queryValue) == [nil, "started", "completed", "stopped"])
        for event in AnnounceEvent.allCases { #expect(AnnounceEvent(udpValue: event.udpValue) == event) }
        #expect(AnnounceEvent(udpValue: 4) == nil)
    }

    @Test(arguments: [
        // BEP 48's examples, and a few more.
        ("http://example.com/announce", "http://example.com/scrape"),
        ("http://example.com/x/announce", "http://example.com/x/scrape"),
        ("http://example.com/announce.php", "http://example.com/scrape.php"),
        ("http://example.com/announce?x2%0644", "http://example.com/scrape?x2%0644"),
        ("http://example.com/announce?x=2/4", "http://example.com/scrape?x=2/4"),
        ("https://t.example:8443/pk/announce?passkey=x", "https://t.example:8443/pk/scrape?passkey=x"),
    ])
    func scrapeURLReplacesAnnounce(announce: String, scrape: String) {
        #expect(HTTPAnnounce.scrapeURL(announceURL: announce) == scrape)
    }

    @Test(arguments: [
        "http://example.com/a", "http://example.com/x%064announce", "http://example.com",
        "http://example.com/announce/", "http://announce.example.com/", "http://example.com/x?announce",
    ])
    func scrapeURLIsNilWithoutAnnounce(announce: String) {
        #expect(HTTPAnnounce.scrapeURL(announceURL: announce) == nil)
    }
}
