import Testing
@testable import Throttle

@Suite struct HierarchyTests {
    @Test func torrentsHoldTheirOwnLimitsUnderAnUnlimitedGlobal() {
        var sim = Simulation(globalRate: 0, pattern: .jittered(2 * millisecond))
        let slow = sim.addTorrent(rate: 2 * MiB)
        let fast = sim.addTorrent(rate: 4 * MiB)
        for _ in 0..<3 {
            sim.addPeer(torrent: slow)
            sim.addPeer(torrent: fast)
        }
        sim.run(until: 60 * second)
        #expect(relativeError(sim.granted(torrent: slow), 2 * MiB * 60) < 0.01)
        #expect(relativeError(sim.granted(torrent: fast), 4 * MiB * 60) < 0.01)
        #expect(sim.worstBurstExcess(rate: 2 * MiB, burst: TokenBucket.defaultBurst(rate: 2 * MiB), torrent: slow) <= 0)
        #expect(sim.worstBurstExcess(rate: 4 * MiB, burst: TokenBucket.defaultBurst(rate: 4 * MiB), torrent: fast) <= 0)
    }

    /// Global 3 MiB/s below the torrents' 2 + 4: the global limit holds and the two busy
    /// torrents split it evenly (each is allowed more than half).
    @Test func globalBelowSumOfTorrentLimits() {
        var sim = Simulation(globalRate: 3 * MiB)
        let small = sim.addTorrent(rate: 2 * MiB)
        let large = sim.addTorrent(rate: 4 * MiB)
        sim.addPeer(torrent: small)
        for _ in 0..<4 { sim.addPeer(torrent: large) }
        sim.run(until: 60 * second)
        #expect(relativeError(sim.granted(), 3 * MiB * 60) < 0.01)
        #expect(sim.worstBurstExcess(rate: 3 * MiB, burst: TokenBucket.defaultBurst(rate: 3 * MiB)) <= 0)
        let a = sim.granted(torrent: small), b = sim.granted(torrent: large)
        #expect(relativeError(a, b) < 0.02, "\(a) vs \(b)")
    }

    /// A torrent capped below its fair share leaves the difference to the other.
    @Test func cappedTorrentLeavesItsShareToTheOther() {
        var sim = Simulation(globalRate: 4 * MiB)
        let capped = sim.addTorrent(rate: 1 * MiB)
        let open = sim.addTorrent(rate: 0)
        for _ in 0..<2 {
            sim.addPeer(torrent: capped)
            sim.addPeer(torrent: open)
        }
        sim.run(until: 60 * second)
        #expect(relativeError(sim.granted(torrent: capped), 1 * MiB * 60) < 0.01)
        #expect(relativeError(sim.granted(torrent: open), 3 * MiB * 60) < 0.01)
    }

    /// Global 3 MiB/s > torrent 1 MiB/s > one peer's own 256 KiB/s: every level holds.
    @Test func peerUnderLimitedTorrentUnderLimitedGlobal() {
        var sim = Simulation(globalRate: 3 * MiB, pattern: .jittered(5 * millisecond))
        let limited = sim.addTorrent(rate: 1 * MiB)
        let other = sim.addTorrent(rate: 0)
        let cappedPeer = sim.addPeer(torrent: limited, peerRate: 256 * KiB)
        let freePeer = sim.addPeer(torrent: limited)
        for _ in 0..<3 { sim.addPeer(torrent: other) }
        sim.run(until: 60 * second)
        #expect(relativeError(sim.granted(peer: cappedPeer), 256 * KiB * 60) < 0.01)
        #expect(relativeError(sim.granted(peer: freePeer), 768 * KiB * 60) < 0.01)
        #expect(relativeError(sim.granted(torrent: limited), 1 * MiB * 60) < 0.01)
        #expect(relativeError(sim.granted(), 3 * MiB * 60) < 0.01)
        #expect(sim.maxWindow(length: second) <= 3 * MiB * 11 / 10)
    }

    @Test func ratesAreReportedPerNode() {
        var sim = Simulation(globalRate: 2 * MiB)
        let torrent = sim.addTorrent(rate: 1 * MiB)
        let peer = sim.addPeer(torrent: torrent)
        sim.run(until: 12 * second)
        let global = sim.throttle.globalRates(now: sim.now)
        let perTorrent = sim.throttle.rates(of: sim.torrents[torrent], now: sim.now)!
        let perPeer = sim.throttle.rates(of: sim.peers[peer].id, now: sim.now)!
        for rates in [global, perTorrent, perPeer] {
            #expect(relativeError(rates.lastSecond, 1 * MiB) < 0.02, "\(rates)")
            #expect(relativeError(rates.lastTenSeconds, 1 * MiB) < 0.01, "\(rates)")
            #expect(rates.total == sim.granted())
        }
    }
}
