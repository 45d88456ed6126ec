import BitTorrent
import Trackers
import UDPTracker
import SeededRandom

/// libFuzzer entry: arbitrary bytes into every UDP tracker reply parser, then into a
/// client state machine as a script of datagrams and timer events. Nothing may crash.
///
/// Script after the first byte (endpoint family, maxRetries, scrape size): records of
/// `[op] [length] [length bytes]`. Op bits: 0x01 patch bytes 4..<8 with a transaction id
/// the client sent (so replies get past the id check and reach the deep paths; op >> 6
/// picks it, counting back from the last one sent), 0x02 fire
/// the timer after advancing the clock by `length` seconds, 0x04 queue another announce,
/// 0x08 cancel a request, 0x10 come from another address, 0x20 transport failure.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzUDPTracker(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    FuzzUDPTracker.parsers(bytes)
    FuzzUDPTracker.client(Array(bytes))
    return 0
}

enum FuzzUDPTracker {
    static func parsers(_ bytes: UnsafeRawBufferPointer) {
        _ = UDPTrackerMessage.replyHeader(bytes)
        _ = UDPTrackerMessage.parseConnectReply(bytes)
        _ = UDPTrackerMessage.parseAnnounceReply(bytes, ipv6: false)
        _ = UDPTrackerMessage.parseAnnounceReply(bytes, ipv6: true)
        let hashes = (0..<Int(bytes.first ?? 0) % 80).map { hash(UInt8(truncatingIfNeeded: $0)) }
        _ = UDPTrackerMessage.parseScrapeReply(bytes, infoHashes: hashes)
        _ = UDPTrackerMessage.parseErrorReply(bytes)
        _ = URLData.decode(bytes)
        if let data = URLData.decode(bytes) { precondition(URLData.decode(URLData.encode(data)) == data) }
        _ = UDPTrackerURL(String(decoding: bytes, as: UTF8.self))
    }

    static func client(_ script: [UInt8]) {
        guard let first = script.first else { return }
        let endpoint = first & 1 == 0
            ? PeerAddress(ip: .v4(0x7F00_0001), port: 6969)
            : PeerAddress(ip: .v6(1), port: 6969)
        let stranger = PeerAddress(ip: .v4(0x7F00_0002), port: 6969)
        var rng = SplitMix64(seed: UInt64(first))
        var client = UDPTrackerClient(endpoint: endpoint, configuration: .init(maxRetries: Int(first >> 1) % 10))
        var now: UInt64 = 0
        var transactions: [UInt32] = []
        var nextID: UInt64 = 0

        func perform(_ actions: [UDPTrackerClient.Action]) {
            for case .send(let packet) in actions where packet.count >= 16 {
                transactions.append(packet[12..<16].reduce(0) { $0 << 8 | UInt32($1) })
            }
        }
        func announce() {
            nextID += 1
            let request = AnnounceRequest(
                infoHash: hash(UInt8(truncatingIfNeeded: nextID)), peerID: [UInt8](repeating: 0x2D, count: 20), port: 6881,
                uploaded: 0, downloaded: 0, left: 0, event: .started, numWant: 200, key: 1
            )
            perform(client.announce(id: nextID, request: request, urlData: Array("/announce".utf8), now: now, using: &rng))
        }

        announce()
        nextID += 1
        perform(client.scrape(id: nextID, infoHashes: (0..<Int(first) % 160).map { hash(UInt8(truncatingIfNeeded: $0)) }, now: now, using: &rng))

        var index = 1
        while index + 2 <= script.count {
            let op = script[index]
            let length = Int(script[index + 1])
            index += 2
            var datagram = Array(script[index..<min(index + length, script.count)])
            index += datagram.count
            if op & 0x01 != 0, datagram.count >= 8, !transactions.isEmpty {
                let transaction = transactions[transactions.count - 1 - Int(op >> 6) % transactions.count]
                for offset in 0..<4 { datagram[4 + offset] = UInt8(truncatingIfNeeded: transaction >> (24 - 8 * offset)) }
            }
            if op & 0x02 != 0 {
                now += UInt64(length) * 1_000_000
                perform(client.timerFired(now: now, using: &rng))
            }
            if op & 0x04 != 0 { announce() }
            if op & 0x08 != 0 { perform(client.cancel(id: UInt64(length) % (nextID + 1), now: now)) }
            if op & 0x20 != 0 { perform(client.transportFailed(.transport("unreachable"), now: now)) }
            perform(client.receive(datagram, from: op & 0x10 != 0 ? stranger : endpoint, now: now))
            now += 1000
            if transactions.count > 4096 { transactions.removeFirst(2048) }
        }
        // Every request ends: a dead tracker fails everything by the last deadline.
        while let deadline = client.nextDeadline, client.pendingRequestCount > 0 {
            now = max(now, deadline)
            perform(client.timerFired(now: now, using: &rng))
        }
        precondition(client.pendingRequestCount == 0, "a request outlived its retransmissions")
    }

    static func hash(_ seed: UInt8) -> InfoHash {
        InfoHash(bytes: [UInt8](repeating: seed, count: 20))!
    }
}

