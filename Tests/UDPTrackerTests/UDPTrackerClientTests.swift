import BitTorrent
import Testing
import Trackers
@testable import UDPTracker
import SeededRandom

/// The client driven by a simulated clock: every time is an argument, nothing waits.
@Suite struct UDPTrackerClientTests {
    let urlData = Array("/announce?passkey=abc".utf8)

    /// Queues an announce and answers the connect, returning the announce datagram.
    func connected(
        _ client: inout UDPTrackerClient, id: UInt64 = 1, connectionID: UInt64 = 0xC0FFEE, now: UInt64 = 0,
        rng: inout SplitMix64
    ) -> SentPacket {
        let queued = client.announce(id: id, request: announceRequest(), urlData: urlData, now: now, using: &rng)
        let connect = queued.sent[0]
        #expect(connect.isConnect)
        let actions = client.receive(connectReply(connect.transactionID, connectionID: connectionID), from: tracker, now: now)
        #expect(actions.sent.count == 1)
        return actions.sent[0]
    }

    @Test func connectThenAnnounceThenSuccess() throws {
        var rng = SplitMix64(seed: 1)
        var client = UDPTrackerClient(endpoint: tracker)
        let queued = client.announce(id: 7, request: announceRequest(), urlData: urlData, now: 0, using: &rng)
        #expect(queued.sent.count == 1 && queued.sent[0].isConnect)
        #expect(queued.timer == .some(seconds(15)))

        let afterConnect = client.receive(connectReply(queued.sent[0].transactionID, connectionID: 0xABCD), from: tracker, now: seconds(1))
        let announce = try #require(afterConnect.sent.first)
        #expect(announce.connectionID == 0xABCD && announce.action == 1)
        #expect(announce.count == 98 + 2 + urlData.count)
        #expect(URLData.decode(announce.bytes[98...]) == urlData)
        #expect(client.connectionID(now: seconds(1)) == 0xABCD)
        #expect(afterConnect.timer == .some(seconds(15)))  // the attempt's deadline did not move

        let peers = [peer("10.1.1.1", 6881)]
        let done = client.receive(announceReply(announce.transactionID, interval: 1200, peers: peers), from: tracker, now: seconds(2))
        #expect(done.outcomes == [.announceSucceeded(id: 7, response: AnnounceResponse(interval: 1200, seeders: 7, leechers: 3, peers: peers))])
        #expect(done.timer == .some(nil))
        #expect(client.pendingRequestCount == 0)
    }

    @Test func deadTrackerRetransmitsAt15And45AndFailsAt105() {
        var rng = SplitMix64(seed: 2)
        var client = UDPTrackerClient(endpoint: tracker)
        #expect(client.configuration.failureTimeout == seconds(105))
        let first = client.announce(id: 1, request: announceRequest(), now: 0, using: &rng)
        #expect(first.sent.map(\.isConnect) == [true])
        #expect(first.timer == .some(seconds(15)))
        #expect(client.timerFired(now: seconds(14), using: &rng).sent.isEmpty)  // early: nothing due

        let second = client.timerFired(now: seconds(15), using: &rng)
        #expect(second.sent.map(\.isConnect) == [true])
        #expect(second.sent[0].transactionID == first.sent[0].transactionID)  // same exchange
        #expect(second.timer == .some(seconds(45)))

        let third = client.timerFired(now: seconds(45), using: &rng)
        #expect(third.sent.map(\.isConnect) == [true])
        #expect(third.timer == .some(seconds(105)))

        let last = client.timerFired(now: seconds(105), using: &rng)
        #expect(last.sent.isEmpty)
        guard case .announceFailed(1, .transport(let text))? = last.outcomes.first else {
            Issue.record("expected a failure, got \(last)")
            return
        }
        #expect(text.contains("105 s") && text.contains("3 attempts"))
        #expect(last.timer == .some(nil))
        #expect(client.state == .idle)
        // A late connect reply to the abandoned exchange is ignored.
        #expect(client.receive(connectReply(first.sent[0].transactionID, connectionID: 9), from: tracker, now: seconds(106)).isEmpty)
    }

    @Test func announceRetransmitsWithTheSameTransactionAndReconnectsWhenStale() {
        var rng = SplitMix64(seed: 3)
        var client = UDPTrackerClient(endpoint: tracker, configuration: .init(maxRetries: 3))
        #expect(client.configuration.failureTimeout == seconds(225))
        let announce = connected(&client, connectionID: 11, rng: &rng)

        let at15 = client.timerFired(now: seconds(15), using: &rng)
        #expect(at15.sent.map(\.transactionID) == [announce.transactionID])
        #expect(at15.sent[0].connectionID == 11)  // still fresh (got it at 0 s, used until 60 s)
        let at45 = client.timerFired(now: seconds(45), using: &rng)
        #expect(at45.sent.map(\.transactionID) == [announce.transactionID])
        #expect(at45.timer == .some(seconds(105)))

        // At 105 s the id is 105 s old: reconnect before the fourth attempt.
        let at105 = client.timerFired(now: seconds(105), using: &rng)
        #expect(at105.sent.count == 1 && at105.sent[0].isConnect)
        let resent = client.receive(connectReply(at105.sent[0].transactionID, connectionID: 22), from: tracker, now: seconds(106))
        #expect(resent.sent.map(\.connectionID) == [22])
        #expect(resent.sent.map(\.transactionID) == [announce.transactionID])
        #expect(resent.timer == .some(seconds(225)))

        // A slow reply to the very first copy still counts.
        let done = client.receive(announceReply(announce.transactionID), from: tracker, now: seconds(107))
        #expect(done.outcomes.count == 1)
        if case .announceSucceeded(1, _)? = done.outcomes.first {} else { Issue.record("\(done)") }
    }

    @Test func connectionIDIsReusedFor60SecondsThenRenewed() {
        var rng = SplitMix64(seed: 4)
        var client = UDPTrackerClient(endpoint: tracker)
        let first = connected(&client, connectionID: 100, now: seconds(10), rng: &rng)
        _ = client.receive(announceReply(first.transactionID), from: tracker, now: seconds(11))

        // 59.9 s after the connect reply: no connect, the same id.
        let reuse = client.announce(id: 2, request: announceRequest(2), now: seconds(69) + 900_000, using: &rng)
        #expect(reuse.sent.count == 1 && !reuse.sent[0].isConnect && reuse.sent[0].connectionID == 100)
        _ = client.receive(announceReply(reuse.sent[0].transactionID), from: tracker, now: seconds(70))

        // 60 s after: stale, connect first.
        let stale = client.announce(id: 3, request: announceRequest(3), now: seconds(70), using: &rng)
        #expect(stale.sent.count == 1 && stale.sent[0].isConnect)
        #expect(client.connectionID(now: seconds(70)) == nil)
        let renewed = client.receive(connectReply(stale.sent[0].transactionID, connectionID: 200), from: tracker, now: seconds(71))
        #expect(renewed.sent.map(\.connectionID) == [200])
        #expect(client.connectionID(now: seconds(71)) == 200)
    }

    @Test func severalTorrentsShareOneConnect() {
        var rng = SplitMix64(seed: 5)
        var client = UDPTrackerClient(endpoint: tracker)
        var sent: [SentPacket] = []
        for id in 1...3 {
            sent += client.announce(id: UInt64(id), request: announceRequest(UInt8(id)), now: seconds(UInt64(id)), using: &rng).sent
        }
        sent += client.scrape(id: 4, infoHashes: [infoHash(1)], now: seconds(4), using: &rng).sent
        #expect(sent.count == 1 && sent[0].isConnect)  // one connect for all four

        let burst = client.receive(connectReply(sent[0].transactionID, connectionID: 77), from: tracker, now: seconds(5))
        #expect(burst.sent.map(\.connectionID) == [77, 77, 77, 77])
        #expect(burst.sent.map(\.action) == [1, 1, 1, 2])  // in queue order
        #expect(Set(burst.sent.map(\.transactionID)).count == 4)
        #expect(burst.sent.prefix(3).map { Array($0.bytes[16..<36]) } == [infoHash(1).bytes, infoHash(2).bytes, infoHash(3).bytes])

        // Each reply goes to its own request.
        let second = client.receive(announceReply(burst.sent[1].transactionID, seeders: 2), from: tracker, now: seconds(6))
        #expect(second.outcomes == [.announceSucceeded(id: 2, response: AnnounceResponse(interval: 1800, seeders: 2, leechers: 3))])
        #expect(client.pendingRequestCount == 3)

        // A torrent queued later, while the id is fresh, needs no connect.
        let later = client.announce(id: 5, request: announceRequest(5), now: seconds(30), using: &rng)
        #expect(later.sent.map(\.connectionID) == [77])
    }

    @Test func connectResentAtMostEvery15SecondsForManyWaiters() {
        var rng = SplitMix64(seed: 6)
        var client = UDPTrackerClient(endpoint: tracker)
        var connects = 0
        // Torrents queued every 5 s against a dead tracker.
        for step in 0..<12 {
            let now = seconds(UInt64(step * 5))
            connects += client.timerFired(now: now, using: &rng).sent.filter(\.isConnect).count
            connects += client.announce(id: UInt64(step), request: announceRequest(UInt8(step)), now: now, using: &rng)
                .sent.filter(\.isConnect).count
        }
        #expect(connects == 4)  // at 0, 15, 30, 45 s
    }

    @Test func failOverBoundIsTunable() {
        var rng = SplitMix64(seed: 7)
        var client = UDPTrackerClient(endpoint: tracker, configuration: .init(maxRetries: 0))
        _ = client.announce(id: 1, request: announceRequest(), now: 0, using: &rng)
        let failed = client.timerFired(now: seconds(15), using: &rng)
        #expect(failed.sent.isEmpty && failed.outcomes.count == 1)

        #expect(UDPTrackerClient.Configuration(maxRetries: 8).failureTimeout == seconds(15 * 511))
        #expect(UDPTrackerClient.Configuration(maxRetries: 99).maxRetries == 8)
        #expect(UDPTrackerClient.Configuration(maxRetries: -1).maxRetries == 0)
        var tuned = UDPTrackerClient.Configuration()
        tuned.maxRetries = -5
        #expect(tuned.maxRetries == 0 && tuned.failureTimeout == seconds(15))
        #expect(UDPTrackerClient.Configuration().timeout(attempt: 20) == seconds(3840))
    }

    /// A config reload that lowers `udp_retries` reaches requests already in flight: the
    /// attempt out keeps its deadline, and no retransmission follows it.
    @Test func lowerMaxRetriesAppliesToARequestInFlight() {
        var rng = SplitMix64(seed: 17)
        var client = UDPTrackerClient(endpoint: tracker, configuration: .init(maxRetries: 8))
        _ = client.announce(id: 1, request: announceRequest(), now: 0, using: &rng)
        client.configuration.maxRetries = 0
        let failed = client.timerFired(now: seconds(15), using: &rng)
        #expect(failed.sent.isEmpty)
        #expect(failed.outcomes.count == 1)
        #expect(client.pendingRequestCount == 0)
    }

    @Test func errorReplyFailsAtOnce() {
        var rng = SplitMix64(seed: 8)
        var client = UDPTrackerClient(endpoint: tracker)
        let announce = connected(&client, rng: &rng)
        let reply = errorReply(announce.transactionID, Array("Requested download is not authorized for use with this tracker.".utf8) + [0])
        let actions = client.receive(reply, from: tracker, now: seconds(1))
        #expect(actions.outcomes == [.announceFailed(id: 1, error: .failure(reason: "Requested download is not authorized for use with this tracker."))])
        #expect(actions.timer == .some(nil))  // no retransmission
        #expect(client.connectionID(now: seconds(1)) != nil)  // the connection id stays good
    }

    @Test func errorReplyToConnectFailsEveryWaiter() {
        var rng = SplitMix64(seed: 9)
        var client = UDPTrackerClient(endpoint: tracker)
        let connect = client.announce(id: 1, request: announceRequest(1), now: 0, using: &rng).sent[0]
        _ = client.scrape(id: 2, infoHashes: [infoHash(2)], now: 0, using: &rng)
        let actions = client.receive(errorReply(connect.transactionID, Array("go away".utf8)), from: tracker, now: seconds(1))
        #expect(actions.outcomes == [
            .announceFailed(id: 1, error: .failure(reason: "go away")),
            .scrapeFailed(id: 2, error: .failure(reason: "go away")),
        ])
        #expect(client.state == .idle && client.pendingRequestCount == 0)
    }

    @Test func wrongTransactionIDIsIgnored() {
        var rng = SplitMix64(seed: 10)
        var client = UDPTrackerClient(endpoint: tracker)
        let connect = client.announce(id: 1, request: announceRequest(), now: 0, using: &rng).sent[0]
        #expect(client.receive(connectReply(connect.transactionID &+ 1, connectionID: 5), from: tracker, now: 1).isEmpty)
        let announce = client.receive(connectReply(connect.transactionID, connectionID: 5), from: tracker, now: 2).sent[0]
        #expect(client.receive(announceReply(announce.transactionID ^ 0x8000_0000), from: tracker, now: 3).isEmpty)
        #expect(client.receive(errorReply(announce.transactionID &- 1, []), from: tracker, now: 3).isEmpty)
        #expect(client.isPending(1))
        #expect(client.receive(announceReply(announce.transactionID), from: tracker, now: 4).outcomes.count == 1)
        // A duplicate reply (the tracker answered a retransmission too) is ignored.
        #expect(client.receive(announceReply(announce.transactionID), from: tracker, now: 5).isEmpty)
    }

    @Test func repliesFromAnotherAddressAreIgnored() {
        var rng = SplitMix64(seed: 11)
        var client = UDPTrackerClient(endpoint: tracker)
        let connect = client.announce(id: 1, request: announceRequest(), now: 0, using: &rng).sent[0]
        let reply = connectReply(connect.transactionID, connectionID: 5)
        #expect(client.receive(reply, from: peer("127.0.0.2", 6969), now: 1).isEmpty)
        #expect(client.receive(reply, from: peer("127.0.0.1", 6970), now: 1).isEmpty)
        #expect(client.receive(reply, from: peer("::1", 6969), now: 1).isEmpty)
        #expect(client.connectionID(now: 1) == nil)
        // The same address as IPv4-mapped IPv6 (a dual-stack socket) is the tracker.
        #expect(client.receive(reply, from: peer("::ffff:127.0.0.1", 6969), now: 1).sent.count == 1)
    }

    @Test func truncatedRepliesFailTheRequest() {
        var rng = SplitMix64(seed: 12)
        var client = UDPTrackerClient(endpoint: tracker)
        let connect = client.announce(id: 1, request: announceRequest(), now: 0, using: &rng).sent[0]
        let short = Array(connectReply(connect.transactionID, connectionID: 5).prefix(12))
        let failed = client.receive(short, from: tracker, now: 1)
        guard case .announceFailed(1, .transport(let text))? = failed.outcomes.first else {
            Issue.record("\(failed)")
            return
        }
        #expect(text.contains("connect reply of 12 bytes"))

        let announce = connected(&client, id: 2, now: seconds(2), rng: &rng)
        let truncated = Array(announceReply(announce.transactionID).prefix(17))
        #expect(client.receive(truncated, from: tracker, now: seconds(3)).outcomes.count == 1)
        #expect(!client.isPending(2))

        // The right transaction id with the wrong action is a broken tracker too.
        let third = client.announce(id: 3, request: announceRequest(), now: seconds(4), using: &rng).sent[0]
        let wrong = client.receive(scrapeReply(third.transactionID, counts: [(1, 1, 1)]), from: tracker, now: seconds(5))
        guard case .announceFailed(3, .transport(let why))? = wrong.outcomes.first else {
            Issue.record("\(wrong)")
            return
        }
        #expect(why.contains("action 2"))
    }

    @Test func longerRepliesAreAccepted() {
        var rng = SplitMix64(seed: 13)
        var client = UDPTrackerClient(endpoint: tracker)
        let connect = client.announce(id: 1, request: announceRequest(), now: 0, using: &rng).sent[0]
        let announce = client.receive(connectReply(connect.transactionID, connectionID: 5) + [9, 9, 9, 9], from: tracker, now: 1).sent[0]
        #expect(announce.connectionID == 5)
        let reply = announceReply(announce.transactionID, peers: [peer("10.0.0.9", 80)]) + [1, 2, 3, 4, 5]
        #expect(client.receive(reply, from: tracker, now: 2).outcomes
                == [.announceSucceeded(id: 1, response: AnnounceResponse(interval: 1800, seeders: 7, leechers: 3, peers: [peer("10.0.0.9", 80)]))])
    }

    @Test func eightByteAnnounceReplyFailsWithoutRetry() {
        var rng = SplitMix64(seed: 14)
        var client = UDPTrackerClient(endpoint: tracker)
        let announce = connected(&client, rng: &rng)
        let actions = client.receive(be32(1) + be32(announce.transactionID), from: tracker, now: 1)
        guard case .announceFailed(1, .failure(let reason))? = actions.outcomes.first else {
            Issue.record("\(actions)")
            return
        }
        #expect(reason.contains("whitelist"))
        #expect(actions.sent.isEmpty && actions.timer == .some(nil))
        #expect(client.timerFired(now: seconds(15), using: &rng).sent.isEmpty)
    }

    @Test func ipv6TrackerRepliesCarry18BytePeers() {
        var rng = SplitMix64(seed: 15)
        var client = UDPTrackerClient(endpoint: tracker6)
        let connect = client.announce(id: 1, request: announceRequest(), now: 0, using: &rng).sent[0]
        let announce = client.receive(connectReply(connect.transactionID, connectionID: 5), from: tracker6, now: 1).sent[0]
        let peers = [peer("2001:db8::10", 6881), peer("2001:db8::11", 6882)]
        let actions = client.receive(announceReply(announce.transactionID, peers: peers), from: tracker6, now: 2)
        #expect(actions.outcomes == [.announceSucceeded(id: 1, response: AnnounceResponse(interval: 1800, seeders: 7, leechers: 3, peers: peers))])
    }

    @Test func scrapesAreBatchedBy74() {
        var rng = SplitMix64(seed: 16)
        var client = UDPTrackerClient(endpoint: tracker)
        let hashes = (0..<200).map { infoHash(UInt8($0)) }
        let connect = client.scrape(id: 9, infoHashes: hashes, now: 0, using: &rng).sent
        #expect(connect.count == 1 && connect[0].isConnect)
        let parts = client.receive(connectReply(connect[0].transactionID, connectionID: 3), from: tracker, now: 1).sent
        #expect(parts.map(\.count) == [16 + 74 * 20, 16 + 74 * 20, 16 + 52 * 20])
        #expect(parts.allSatisfy { $0.action == 2 && $0.connectionID == 3 })
        #expect(Array(parts[2].bytes[16..<36]) == hashes[148].bytes)

        func counts(_ range: Range<Int>) -> [(UInt32, UInt32, UInt32)] { range.map { (UInt32($0), 1, 2) } }
        // Out of order, and one part retransmitted in between.
        #expect(client.receive(scrapeReply(parts[2].transactionID, counts: counts(148..<200)), from: tracker, now: 2).outcomes.isEmpty)
        let retransmit = client.timerFired(now: seconds(15), using: &rng).sent
        #expect(Set(retransmit.map(\.transactionID)) == Set([parts[0].transactionID, parts[1].transactionID]))
        #expect(client.receive(scrapeReply(parts[0].transactionID, counts: counts(0..<74)), from: tracker, now: seconds(16)).outcomes.isEmpty)
        let done = client.receive(scrapeReply(parts[1].transactionID, counts: counts(74..<148)), from: tracker, now: seconds(17))
        guard case .scrapeSucceeded(9, let results)? = done.outcomes.first else {
            Issue.record("\(done)")
            return
        }
        #expect(results.count == 200)
        #expect(results.map(\.infoHash) == hashes)
        #expect(results.map(\.seeders) == Array(0..<200))
        #expect(done.timer == .some(nil))
    }

    @Test func aFailedScrapePartFailsTheScrape() {
        var rng = SplitMix64(seed: 17)
        var client = UDPTrackerClient(endpoint: tracker)
        let hashes = (0..<100).map { infoHash(UInt8($0)) }
        let connect = client.scrape(id: 9, infoHashes: hashes, now: 0, using: &rng).sent[0]
        let parts = client.receive(connectReply(connect.transactionID, connectionID: 3), from: tracker, now: 1).sent
        let short = scrapeReply(parts[1].transactionID, counts: [(1, 1, 1)])  // 26 hashes asked
        let failed = client.receive(short, from: tracker, now: 2)
        #expect(failed.outcomes.count == 1)
        if case .scrapeFailed(9, _)? = failed.outcomes.first {} else { Issue.record("\(failed)") }
        #expect(client.receive(scrapeReply(parts[0].transactionID, counts: Array(repeating: (1, 1, 1), count: 74)), from: tracker, now: 3).isEmpty)
        #expect(client.scrape(id: 10, infoHashes: [], now: 4, using: &rng).outcomes == [.scrapeSucceeded(id: 10, results: [])])
    }

    @Test func cancelledRequestsAreNeverReported() {
        var rng = SplitMix64(seed: 18)
        var client = UDPTrackerClient(endpoint: tracker)
        let announce = connected(&client, rng: &rng)
        #expect(client.cancel(id: 1, now: 1) == [.setTimer(at: nil)])
        #expect(client.receive(announceReply(announce.transactionID), from: tracker, now: 2).isEmpty)

        // Re-queuing an id replaces the request (a `stopped` after an abandoned announce).
        let first = client.announce(id: 2, request: announceRequest(), now: 3, using: &rng).sent[0]
        let second = client.announce(id: 2, request: announceRequest(event: .stopped), now: 4, using: &rng).sent[0]
        #expect(client.pendingRequestCount == 1)
        #expect(client.receive(announceReply(first.transactionID), from: tracker, now: 5).isEmpty)
        #expect(second.u32(80) == 3)
        #expect(client.receive(announceReply(second.transactionID), from: tracker, now: 5).outcomes.count == 1)
    }

    @Test func transportFailureFailsEverything() {
        var rng = SplitMix64(seed: 19)
        var client = UDPTrackerClient(endpoint: tracker6)
        _ = client.announce(id: 1, request: announceRequest(), now: 0, using: &rng)
        _ = client.scrape(id: 2, infoHashes: [infoHash(1)], now: 0, using: &rng)
        let error = TrackerError.transport("Network is unreachable")
        let actions = client.transportFailed(error, now: 1)
        #expect(actions == [.announceFailed(id: 1, error: error), .scrapeFailed(id: 2, error: error), .setTimer(at: nil)])
        #expect(client.state == .idle)
    }

    @Test func hostileRepliesWithOurTransactionNeverCrash() {
        var rng = SplitMix64(seed: 20)
        var noise = SplitMix64(seed: 21)
        for round in 0..<300 {
            var client = UDPTrackerClient(endpoint: round % 2 == 0 ? tracker : tracker6)
            let source = client.endpoint
            let connect = client.announce(id: 1, request: announceRequest(), now: 0, using: &rng).sent[0]
            _ = client.scrape(id: 2, infoHashes: (0..<80).map { infoHash(UInt8($0)) }, now: 0, using: &rng)
            var transactions = [connect.transactionID]
            for step in 0..<6 {
                let length = Int(noise.next() % 64) + (step == 0 ? 0 : Int(noise.next() % 2000))
                var datagram = (0..<length).map { _ in UInt8(truncatingIfNeeded: noise.next()) }
                if datagram.count >= 8 {
                    datagram[0..<4] = ArraySlice(be32(UInt32(noise.next() % 5)))
                    datagram[4..<8] = ArraySlice(be32(transactions[Int(noise.next() % UInt64(transactions.count))]))
                }
                let actions = client.receive(datagram, from: source, now: UInt64(step))
                transactions += actions.sent.map(\.transactionID)
                transactions += client.timerFired(now: seconds(UInt64(step * 20)), using: &rng).sent.map(\.transactionID)
            }
        }
    }
}
