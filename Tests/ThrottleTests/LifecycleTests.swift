import Testing
@testable import Throttle

/// Peers and torrents come and go; nothing they leave behind may grow.
@Suite struct LifecycleTests {
    @Test func removingAWaitingPeerCancelsItsDemand() {
        var throttle = BandwidthHierarchy(globalRate: 1 * MiB, now: 0)
        let torrent = throttle.addTorrent(now: 0)
        let leaving = throttle.addPeer(to: torrent, now: 0)!
        let staying = throttle.addPeer(to: torrent, now: 0)!
        #expect(throttle.request(leaving, bytes: 64 * KiB, now: 0).granted == 0)
        #expect(throttle.request(staying, bytes: 64 * KiB, now: 0).granted == 0)
        throttle.removePeer(leaving)
        var granted: [BandwidthHierarchy.PeerID: Int64] = [:]
        var now: UInt64 = 0
        while let next = throttle.nextPollTime(now: now), now < second {
            now = max(now, next)
            for grant in throttle.poll(now: now).grants { granted[grant.peer, default: 0] += grant.bytes }
        }
        #expect(granted == [staying: 64 * KiB])
        #expect(throttle.statistics.queued == 0)
        // A stale handle is harmless, also once its slot is reused.
        #expect(throttle.request(leaving, bytes: 1, now: now).granted == 0)
        let newcomer = throttle.addPeer(to: torrent, now: now)!
        #expect(newcomer != leaving)
        #expect(throttle.pendingDemand(of: leaving) == 0)
    }

    @Test func cancelReturnsWhatWasStillWaiting() {
        var throttle = BandwidthHierarchy(globalRate: 1 * MiB, now: 0)
        let torrent = throttle.addTorrent(now: 0)
        let peer = throttle.addPeer(to: torrent, now: 0)!
        _ = throttle.request(peer, bytes: 16 * KiB, now: 0)
        #expect(throttle.cancel(peer) == 16 * KiB)
        #expect(throttle.poll(now: second).grants.isEmpty)
        #expect(throttle.statistics.queued == 0)
    }

    /// Thousands of peers, some individually limited, join, ask, get partly served and
    /// leave, round after round: slots are reused and every queue and heap drains.
    @Test func churnDoesNotLeak() {
        var throttle = BandwidthHierarchy(globalRate: 8 * MiB, now: 0)
        let torrents = [
            throttle.addTorrent(rate: 2 * MiB, now: 0), throttle.addTorrent(rate: 0, now: 0),
            throttle.addTorrent(rate: 1 * MiB, now: 0),
        ]
        var now: UInt64 = 0
        var peakSlots = 0
        for round in 0..<20 {
            var peers: [BandwidthHierarchy.PeerID] = []
            for index in 0..<2_000 {
                let rate: Int64 = index % 7 == 0 ? 64 * KiB : 0
                let peer = throttle.addPeer(to: torrents[index % 3], rate: rate, now: now)!
                peers.append(peer)
                _ = throttle.request(peer, bytes: 16 * KiB, now: now)
            }
            for _ in 0..<50 {
                now += 1_000
                _ = throttle.poll(now: now)
            }
            // Leave in an order unrelated to arrival.
            for (index, peer) in peers.enumerated() where index % 2 == round % 2 { throttle.removePeer(peer) }
            for (index, peer) in peers.enumerated() where index % 2 != round % 2 { throttle.removePeer(peer) }
            peakSlots = max(peakSlots, throttle.statistics.allocatedSlots)
        }
        #expect(peakSlots == 1 + 3 + 2_000)
        now += 2 * second
        _ = throttle.poll(now: now)
        let statistics = throttle.statistics
        #expect(statistics.liveNodes == 4)
        #expect(statistics.freeSlots == 2_000)
        #expect(statistics.queued == 0)
        #expect(statistics.blocked == 0)
        #expect(statistics.wakeEntries == 0)
        #expect(throttle.nextPollTime(now: now) == nil)
    }

    @Test func removingATorrentRemovesItsPeers() {
        var throttle = BandwidthHierarchy(globalRate: 1 * MiB, now: 0)
        let kept = throttle.addTorrent(now: 0)
        let removed = throttle.addTorrent(rate: 512 * KiB, now: 0)
        let survivor = throttle.addPeer(to: kept, now: 0)!
        var gone: [BandwidthHierarchy.PeerID] = []
        for _ in 0..<100 {
            let peer = throttle.addPeer(to: removed, now: 0)!
            gone.append(peer)
            _ = throttle.request(peer, bytes: 16 * KiB, now: 0)
        }
        _ = throttle.request(survivor, bytes: 32 * KiB, now: 0)
        throttle.removeTorrent(removed)
        #expect(throttle.torrentCount == 1)
        #expect(throttle.statistics.liveNodes == 3)
        #expect(throttle.addPeer(to: removed, now: 0) == nil)
        var total: Int64 = 0
        var now: UInt64 = 0
        while let next = throttle.nextPollTime(now: now) {
            now = max(now, next)
            for grant in throttle.poll(now: now).grants {
                #expect(grant.peer == survivor)
                total += grant.bytes
            }
        }
        #expect(total == 32 * KiB)
        #expect(throttle.statistics.queued == 0)
    }
}
