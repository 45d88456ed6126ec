import Testing
@testable import Throttle
import SeededRandom

/// Unlimited pass-through, returned grants, and download bytes charged after the fact.
@Suite struct TransferTests {
    @Test func unlimitedIsPassThrough() {
        var throttle = BandwidthHierarchy(now: 0)
        let torrent = throttle.addTorrent(now: 0)
        let peer = throttle.addPeer(to: torrent, now: 0)!
        for step in 0..<1_000 {
            let result = throttle.request(peer, bytes: 16 * KiB, now: UInt64(step))
            #expect(result == .init(granted: 16 * KiB, pollAt: nil))
        }
        let statistics = throttle.statistics
        #expect(statistics.queued == 0 && statistics.blocked == 0 && statistics.wakeEntries == 0)
        #expect(throttle.pendingDemand(of: peer) == 0)
        #expect(throttle.allowance(for: peer, now: 1_000) == .max)
    }

    /// Peers of an unlimited torrent are not held up by another torrent's queue.
    @Test func unlimitedTorrentBypassesALimitedOne() {
        var throttle = BandwidthHierarchy(now: 0)
        let limited = throttle.addTorrent(rate: 100 * KiB, now: 0)
        let open = throttle.addTorrent(now: 0)
        let waiting = throttle.addPeer(to: limited, now: 0)!
        let passing = throttle.addPeer(to: open, now: 0)!
        #expect(throttle.request(waiting, bytes: 1 * MiB, now: 0).granted == 0)
        #expect(throttle.request(passing, bytes: 1 * MiB, now: 0).granted == 1 * MiB)
    }

    /// Runs polls at `now` until nothing more is due, summing the grants per peer.
    private func drain(_ throttle: inout BandwidthHierarchy, now: UInt64) -> [BandwidthHierarchy.PeerID: Int64] {
        var granted: [BandwidthHierarchy.PeerID: Int64] = [:]
        while let due = throttle.nextPollTime(now: now), due <= now {
            for grant in throttle.poll(now: now).grants { granted[grant.peer, default: 0] += grant.bytes }
        }
        return granted
    }

    @Test func limitedRequestsQueueAndAreServedByTheNextPoll() {
        var throttle = BandwidthHierarchy(globalRate: 1 * MiB, now: 0)
        let torrent = throttle.addTorrent(now: 0)
        let peer = throttle.addPeer(to: torrent, now: 0)!
        let result = throttle.request(peer, bytes: 16 * KiB, now: second)
        #expect(result == .init(granted: 0, pollAt: second))
        let poll = throttle.poll(now: second)
        #expect(poll.grants == [.init(peer: peer, bytes: 16 * KiB)])
        #expect(poll.pollAt == nil)
    }

    @Test func returnedBytesCanBeGrantedAgain() {
        var throttle = BandwidthHierarchy(globalRate: 1 * MiB, now: 0)
        let torrent = throttle.addTorrent(now: 0)
        let peer = throttle.addPeer(to: torrent, now: 0)!
        // Let the bucket fill, take what it has, then hand 10 KiB back unused.
        _ = throttle.request(peer, bytes: 1 * MiB, now: second)
        let first = drain(&throttle, now: second)[peer] ?? 0
        let burst = TokenBucket.defaultBurst(rate: 1 * MiB)
        #expect(first <= burst && first > burst - 1 * KiB)
        _ = throttle.cancel(peer)
        let before = throttle.allowance(for: peer, now: second)
        _ = throttle.giveBack(peer, bytes: 10 * KiB, now: second)
        #expect(throttle.allowance(for: peer, now: second) == before + 10 * KiB)
        _ = throttle.request(peer, bytes: 10 * KiB, now: second)
        #expect(drain(&throttle, now: second) == [peer: 10 * KiB])
        #expect(throttle.globalRates(now: second).total == first)
    }

    /// A returned grant wakes a waiting peer early instead of at its old wake time.
    @Test func returnedBytesWakeWaitingPeers() {
        var throttle = BandwidthHierarchy(globalRate: 1 * MiB, now: 0)
        let torrent = throttle.addTorrent(now: 0)
        let early = throttle.addPeer(to: torrent, now: 0)!
        let waiting = throttle.addPeer(to: torrent, now: 0)!
        _ = throttle.request(early, bytes: 1 * MiB, now: second)
        let taken = drain(&throttle, now: second)[early] ?? 0
        _ = throttle.cancel(early)
        let queued = throttle.request(waiting, bytes: 16 * KiB, now: second)
        #expect(queued.granted == 0)
        #expect(queued.pollAt.map { $0 > second } == true)
        let pollAt = throttle.giveBack(early, bytes: taken, now: second)
        #expect(pollAt == second)
        #expect(drain(&throttle, now: second) == [waiting: 16 * KiB])
    }

    /// Bytes that arrived before they could be refused (uTP, or a TCP read larger than the
    /// grant) put the path in debt: nothing more is granted until it is paid off at rate.
    @Test func debtFromConsumedBytesDelaysGrants() {
        let rate = 1 * MiB
        var throttle = BandwidthHierarchy(globalRate: rate, now: 0)
        let torrent = throttle.addTorrent(now: 0)
        let peer = throttle.addPeer(to: torrent, now: 0)!
        _ = throttle.consume(peer, bytes: 3 * MiB, now: 0)
        #expect(throttle.allowance(for: peer, now: 0) == 0)
        let result = throttle.request(peer, bytes: 16 * KiB, now: 0)
        #expect(result.granted == 0)
        let pollAt = try! #require(result.pollAt)
        #expect(pollAt >= 3 * second && pollAt <= 3 * second + 3 * millisecond)
        #expect(throttle.poll(now: pollAt - 1).grants.isEmpty)
        #expect(throttle.poll(now: pollAt).grants.first?.bytes ?? 0 > 0)
        #expect(throttle.globalRates(now: pollAt).total > 3 * MiB)
    }

    /// A download over uTP: each step the peer's window is what it has been granted, the
    /// remote sends a little more than that (it cannot know exactly), and the excess is
    /// charged as debt. Over a minute the rate is still held within 1 %.
    @Test func downloadWithOvershootHoldsTheRate() {
        let rate = 2 * MiB
        var throttle = BandwidthHierarchy(globalRate: rate, now: 0)
        let torrent = throttle.addTorrent(now: 0)
        let peers = (0..<3).map { _ in throttle.addPeer(to: torrent, now: 0)! }
        var window = [Int64](repeating: 0, count: peers.count)
        var received: Int64 = 0
        var now: UInt64 = 0
        var random = SplitMix64(seed: 7)
        for (index, peer) in peers.enumerated() {
            window[index] += throttle.request(peer, bytes: 64 * KiB, now: now).granted
        }
        while now < 60 * second {
            now += 5 * millisecond
            for grant in throttle.poll(now: now).grants {
                window[peers.firstIndex(of: grant.peer)!] += grant.bytes
            }
            for (index, peer) in peers.enumerated() {
                let overshoot = Int64(random.next() % 1500)
                received += window[index] + overshoot
                window[index] = 0
                _ = throttle.consume(peer, bytes: overshoot, now: now)
                if throttle.pendingDemand(of: peer) == 0 {
                    window[index] += throttle.request(peer, bytes: 64 * KiB, now: now).granted
                }
            }
        }
        #expect(relativeError(received, rate * 60) < 0.01, "\(received)")
    }
}
