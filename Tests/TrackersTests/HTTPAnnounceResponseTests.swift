import BitTorrent
import Testing
@testable import Trackers

private func body(_ pairs: [(String, Bencode)]) -> [UInt8] {
    Bencode.dictionary(BencodeDictionary(pairs)).encoded()
}

private func parse(_ bytes: [UInt8]) throws -> AnnounceResponse {
    try HTTPAnnounce.parseResponse(bytes).get()
}

private func problem(_ bytes: [UInt8]) -> TrackerError.ResponseProblem? {
    if case .failure(.invalidResponse(let problem)) = HTTPAnnounce.parseResponse(bytes) { return problem }
    return nil
}

@Suite struct HTTPAnnounceResponseTests {
    @Test func readsCompactPeers() throws {
        let response = try parse(body([
            ("interval", .integer(1800)), ("min interval", .integer(900)),
            ("complete", .integer(12)), ("incomplete", .integer(3)),
            ("peers", .bytes([10, 0, 0, 1, 0x1A, 0xE1, 10, 0, 0, 2, 0x1A, 0xE2])),
        ]))
        #expect(response.interval == 1800)
        #expect(response.minInterval == 900)
        #expect(response.seeders == 12)
        #expect(response.leechers == 3)
        #expect(response.peers.map(\.description) == ["10.0.0.1:6881", "10.0.0.2:6882"])
        #expect(response.warning == nil)
        #expect(response.trackerID == nil)
    }

    @Test func readsDictionaryPeers() throws {
        func peer(_ ip: Bencode, _ port: Int64) -> Bencode {
            .dictionary(BencodeDictionary([("ip", ip), ("port", .integer(port)), ("peer id", .bytes(Array(repeating: 7, count: 20)))]))
        }
        let response = try parse(body([
            ("interval", .integer(600)),
            ("peers", .list([
                peer(.string("192.168.1.5"), 51413),
                peer(.string("2001:db8::7"), 6881),
                peer(.string("peer.example.com"), 6881),  // a host name: skipped
                peer(.string("10.0.0.9"), 0),              // port 0: skipped
                peer(.string("10.0.0.9"), 70000),          // not a port: skipped
                peer(.integer(5), 6881),                   // not text: skipped
                .string("not a dictionary"),               // skipped
                peer(.string("192.168.1.5"), 51413),       // duplicate: skipped
            ])),
        ]))
        #expect(response.interval == 600)
        #expect(response.peers.map(\.description) == ["192.168.1.5:51413", "[2001:db8::7]:6881"])
    }

    @Test func readsPeers6AfterPeers() throws {
        let v6: [UInt8] = [0x20, 0x01, 0x0D, 0xB8] + Array(repeating: 0, count: 11) + [2, 0x1A, 0xE1]
        let response = try parse(body([
            ("interval", .integer(1800)),
            ("peers", .bytes([1, 2, 3, 4, 0, 80])),
            ("peers6", .bytes(v6 + Array(repeating: 0, count: 15) + [1, 0, 0])),  // port 0: dropped
        ]))
        #expect(response.peers.map(\.description) == ["1.2.3.4:80", "[2001:db8::2]:6881"])
        let only6 = try parse(body([("peers6", .bytes(v6))]))
        #expect(only6.peers.count == 1)
        #expect(only6.interval == AnnounceResponse.defaultInterval)
    }

    @Test func dropsUnreachablePeers() throws {
        let response = try parse(body([
            ("interval", .integer(1800)),
            ("peers", .bytes([0, 0, 0, 0, 0x1A, 0xE1, 1, 2, 3, 4, 0, 0, 1, 2, 3, 4, 0x1A, 0xE1, 1, 2, 3, 4, 0x1A, 0xE1])),
        ]))
        #expect(response.peers.map(\.description) == ["1.2.3.4:6881"])
    }

    @Test func failureReasonWins() {
        let result = HTTPAnnounce.parseResponse(body([
            ("failure reason", .bytes(Array("torrent not registered\n\u{0}".utf8))),
            ("interval", .integer(1800)),
        ]))
        #expect(result == .failure(.failure(reason: "torrent not registered")))
        #expect(HTTPAnnounce.parseResponse(body([("failure reason", .integer(1))]))
            == .failure(.failure(reason: "(`failure reason` is a integer)")))
        if case .failure(let error) = result {
            #expect(error.description == "tracker refused the announce: torrent not registered")
        }
    }

    @Test func readsWarningAndTrackerID() throws {
        let response = try parse(body([
            ("interval", .integer(1800)),
            ("warning message", .string("slow down\r\nfake log line")),
            ("tracker id", .string("abc123")),
            ("peers", .bytes([])),
        ]))
        #expect(response.warning == "slow down  fake log line")
        #expect(response.trackerID == "abc123")
        #expect(response.peers.isEmpty)
        let longID = try parse(body([("interval", .integer(1800)), ("tracker id", .string(String(repeating: "x", count: 257)))]))
        #expect(longID.trackerID == nil)
    }

    @Test func refusesGarbage() {
        #expect(problem([]) == .empty)
        guard case .notBencode(_, let preview)? = problem(Array("<html>502 Bad Gateway</html>".utf8)) else {
            Issue.record("HTML accepted")
            return
        }
        #expect(preview == "<html>502 Bad Gateway</html>")
        #expect(HTTPAnnounce.parseResponse(Array("<html>".utf8)).failureText
            == ("invalid tracker response: it is not bencode (bencode: unexpected byte '<' at byte 0); it starts with \"<html>\""))
        #expect(problem(Array("d8:intervali1800e".utf8)).map { if case .notBencode = $0 { true } else { false } } == true)
        #expect(problem(Array("d8:intervali1800ee junk".utf8)).map { if case .notBencode = $0 { true } else { false } } == true)
        #expect(problem(Array("li1ee".utf8)) == .notADictionary(found: "list"))
        #expect(problem(Array("4:spam".utf8)) == .notADictionary(found: "byte string"))
        #expect(problem(body([("complete", .integer(3))])) == .noIntervalOrPeers)
        #expect(problem(Array("de".utf8)) == .noIntervalOrPeers)
        #expect(problem(body([("interval", .integer(1800)), ("peers", .integer(3))]))
            == .wrongType(key: "peers", found: "integer", expected: "a byte string or a list"))
        #expect(problem(body([("interval", .integer(1800)), ("peers6", .list([]))]))
            == .wrongType(key: "peers6", found: "list", expected: "a byte string"))
    }

    @Test func acceptsTrailingWhiteSpace() throws {
        #expect(try parse(Array("d8:intervali900ee\r\n".utf8)).interval == 900)
    }

    @Test func refusesTruncatedCompactPeers() {
        #expect(problem(body([("interval", .integer(1800)), ("peers", .bytes([1, 2, 3, 4, 0x1A, 0xE1, 5, 6, 7]))]))
            == .truncatedCompactPeers(key: "peers", length: 9, stride: 6))
        #expect(problem(body([("interval", .integer(1800)), ("peers6", .bytes(Array(repeating: 1, count: 24)))]))
            == .truncatedCompactPeers(key: "peers6", length: 24, stride: 18))
        let error = TrackerError.invalidResponse(.truncatedCompactPeers(key: "peers", length: 9, stride: 6))
        #expect(error.description == "invalid tracker response: `peers` is 9 bytes, not a multiple of 6")
    }

    @Test(arguments: [
        (Int64(1800), 1800),
        (Int64(1), 60),                      // clamped up
        (Int64(59), 60),
        (Int64(86_401), 86_400),             // clamped down
        (Int64.max, 86_400),
        (Int64(0), 1800),                    // meaningless: the default
        (Int64(-30), 1800),
        (Int64.min, 1800),
    ])
    func boundsTheInterval(sent: Int64, used: Int) throws {
        let response = try parse(body([("interval", .integer(sent)), ("min interval", .integer(sent)), ("peers", .bytes([]))]))
        #expect(response.interval == used)
        #expect(response.minInterval == (sent < 0 ? nil : Int(min(sent, 86_400))))
    }

    @Test func wrongTypedNumbersAreAbsent() throws {
        let response = try parse(body([
            ("interval", .string("900")), ("complete", .integer(-4)), ("incomplete", .string("x")), ("peers", .bytes([])),
        ]))
        #expect(response.interval == 1800)
        #expect(response.seeders == nil)
        #expect(response.leechers == nil)
    }

    @Test func capsThePeerCount() throws {
        var compact: [UInt8] = []
        for index in 0..<3000 { compact += [10, UInt8(index >> 8), UInt8(index & 0xFF), 1, 0x1A, 0xE1] }
        let response = try parse(body([("interval", .integer(1800)), ("peers", .bytes(compact))]))
        #expect(response.peers.count == AnnounceResponse.maxPeers)
    }

    @Test func refusesOversizedBodies() {
        let huge = body([("interval", .integer(1800)), ("peers", .bytes(Array(repeating: 1, count: 6 << 18)))])
        #expect(problem(huge).map { if case .notBencode = $0 { true } else { false } } == true)
    }
}

extension Result where Failure == TrackerError {
    var failureText: String? {
        if case .failure(let error) = self { return error.description }
        return nil
    }
}
