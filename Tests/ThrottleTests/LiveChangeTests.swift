import Testing
@testable import Throttle

/// Config reloads (SIGHUP) change limits mid-run.
@Suite struct LiveChangeTests {
    @Test func globalRateChangesTakeEffectAtOnceWithoutBurst() {
        var sim = Simulation(globalRate: 5 * MiB, pattern: .jittered(2 * millisecond))
        let torrent = sim.addTorrent(rate: 0)
        for _ in 0..<4 { sim.addPeer(torrent: torrent) }
        sim.run(until: 10 * second)

        // Down: nothing saved up under the old rate leaks out above the new one.
        _ = sim.setGlobalRate(1 * MiB)
        sim.run(until: 20 * second)
        let lowBurst = TokenBucket.defaultBurst(rate: 1 * MiB)
        #expect(sim.worstBurstExcess(rate: 1 * MiB, burst: lowBurst, from: 10 * second) <= 0)
        #expect(relativeError(sim.granted(from: 10 * second, to: 20 * second), 10 * MiB) < 0.01)

        // Up: the next grant comes within one new quantum, and the new rate is held.
        let changedAt = sim.now
        let pollAt = sim.setGlobalRate(8 * MiB)
        let quantumTime = UInt64(TokenBucket.quantum(rate: 8 * MiB, burst: TokenBucket.defaultBurst(rate: 8 * MiB))) * second / UInt64(8 * MiB)
        #expect(pollAt != nil && pollAt! <= changedAt + quantumTime + 1)
        sim.run(until: 30 * second)
        #expect(sim.worstBurstExcess(rate: 8 * MiB, burst: TokenBucket.defaultBurst(rate: 8 * MiB), from: changedAt) <= 0)
        #expect(relativeError(sim.granted(from: 20 * second, to: 30 * second), 80 * MiB) < 0.01)
    }

    @Test func limitingAnUnlimitedTorrentStartsSmooth() {
        var sim = Simulation(globalRate: 0)
        let torrent = sim.addTorrent(rate: 0)
        for _ in 0..<2 { sim.addPeer(torrent: torrent) }
        // Unlimited: demands are granted in full at once, so cap the run to a few steps.
        sim.run(until: 10 * millisecond)
        let before = sim.events.count
        _ = sim.setTorrentRate(torrent, 2 * MiB)
        let changedAt = sim.now
        sim.run(until: changedAt + 10 * second)
        #expect(sim.events.count > before)
        #expect(sim.worstBurstExcess(rate: 2 * MiB, burst: TokenBucket.defaultBurst(rate: 2 * MiB), from: changedAt) <= 0)
        #expect(relativeError(sim.granted(from: changedAt), 20 * MiB) < 0.01)
    }

    @Test func liftingALimitReleasesQueuedDemand() {
        var throttle = BandwidthHierarchy(globalRate: 1 * MiB, now: 0)
        let torrent = throttle.addTorrent(now: 0)
        let peer = throttle.addPeer(to: torrent, now: 0)!
        let first = throttle.request(peer, bytes: 100 * KiB, now: 0)
        #expect(first.granted == 0)
        #expect(first.pollAt != nil)
        let pollAt = throttle.setGlobalRate(0, now: 1_000)
        #expect(pollAt == 1_000)
        let result = throttle.poll(now: 1_000)
        #expect(result.grants == [.init(peer: peer, bytes: 100 * KiB)])
        #expect(result.pollAt == nil)
    }

    @Test func torrentChangeDoesNotDisturbTheOther() {
        var sim = Simulation(globalRate: 0, pattern: .jittered(1 * millisecond))
        let changing = sim.addTorrent(rate: 4 * MiB)
        let steady = sim.addTorrent(rate: 1 * MiB)
        sim.addPeer(torrent: changing)
        sim.addPeer(torrent: steady)
        sim.run(until: 10 * second)
        _ = sim.setTorrentRate(changing, 512 * KiB)
        sim.run(until: 20 * second)
        #expect(relativeError(sim.granted(from: 10 * second, to: 20 * second, torrent: changing), 5 * MiB) < 0.01)
        #expect(relativeError(sim.granted(torrent: steady), 20 * MiB) < 0.01)
    }
}
