import Testing
@testable import Throttle
import SeededRandom

/// Random interleavings of every event, checking the structure after each step and that
/// nobody is ever granted more than it asked for.
@Suite struct RandomizedTests {
    @Test(arguments: [1 as UInt64, 2, 3, 4])
    func randomEventsKeepInvariants(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        var throttle = BandwidthHierarchy(globalRate: 2 * MiB, now: 0)
        var torrents: [BandwidthHierarchy.TorrentID] = []
        var peers: [BandwidthHierarchy.PeerID] = []
        var owed: [BandwidthHierarchy.PeerID: Int64] = [:]
        var now: UInt64 = 0
        var grantedTotal: Int64 = 0
        let rates: [Int64] = [0, 0, 64 * KiB, 512 * KiB, 3 * MiB]

        for step in 0..<6_000 {
            now += random.next() % 3_000
            switch random.next() % 12 {
            case 0 where torrents.count < 6:
                torrents.append(throttle.addTorrent(rate: rates[Int(random.next() % 5)], now: now))
            case 1 where !torrents.isEmpty && random.next() % 4 == 0:
                let index = Int(random.next() % UInt64(torrents.count))
                throttle.removeTorrent(torrents.remove(at: index))
                peers.removeAll { throttle.pendingDemand(of: $0) == 0 && throttle.rates(of: $0, now: now) == nil }
            case 2 where !torrents.isEmpty, 3 where !torrents.isEmpty:
                let torrent = torrents[Int(random.next() % UInt64(torrents.count))]
                let rate: Int64 = random.next() % 5 == 0 ? 128 * KiB : 0
                if let peer = throttle.addPeer(to: torrent, rate: rate, now: now) { peers.append(peer) }
            case 4 where !peers.isEmpty:
                throttle.removePeer(peers.remove(at: Int(random.next() % UInt64(peers.count))))
            case 5 where !peers.isEmpty, 6 where !peers.isEmpty, 7 where !peers.isEmpty:
                let peer = peers[Int(random.next() % UInt64(peers.count))]
                let bytes = Int64(random.next() % (40 * UInt64(KiB))) + 1
                let result = throttle.request(peer, bytes: bytes, now: now)
                owed[peer, default: 0] += bytes - result.granted
                grantedTotal += result.granted
            case 8 where !peers.isEmpty:
                let peer = peers[Int(random.next() % UInt64(peers.count))]
                let dropped = throttle.cancel(peer)
                owed[peer, default: 0] -= dropped
            case 9 where !peers.isEmpty:
                let peer = peers[Int(random.next() % UInt64(peers.count))]
                if random.next() % 2 == 0 {
                    _ = throttle.giveBack(peer, bytes: Int64(random.next() % 4_000), now: now)
                } else {
                    _ = throttle.consume(peer, bytes: Int64(random.next() % 4_000), now: now)
                }
            case 10:
                let rate = rates[Int(random.next() % 5)]
                if random.next() % 2 == 0 || torrents.isEmpty {
                    _ = throttle.setGlobalRate(rate, now: now)
                } else {
                    _ = throttle.setRate(of: torrents[Int(random.next() % UInt64(torrents.count))], to: rate, now: now)
                }
            default:
                for grant in throttle.poll(now: now).grants {
                    owed[grant.peer, default: 0] -= grant.bytes
                    grantedTotal += grant.bytes
                    #expect(owed[grant.peer]! >= 0, "step \(step): granted more than asked")
                }
            }
            for peer in peers where throttle.rates(of: peer, now: now) != nil {
                #expect(throttle.pendingDemand(of: peer) == owed[peer, default: 0], "step \(step)")
            }
            let problems = throttle.violations()
            #expect(problems.isEmpty, "step \(step): \(problems.prefix(3))")
            if !problems.isEmpty { return }
        }
        #expect(grantedTotal > 0)

        // Everything leaves: nothing may stay behind.
        for peer in peers { throttle.removePeer(peer) }
        for torrent in torrents { throttle.removeTorrent(torrent) }
        now += 10 * second
        _ = throttle.poll(now: now)
        let statistics = throttle.statistics
        #expect(statistics.liveNodes == 1 && statistics.queued == 0 && statistics.blocked == 0)
        #expect(statistics.wakeEntries == 0)
        #expect(throttle.violations().isEmpty)
    }
}
