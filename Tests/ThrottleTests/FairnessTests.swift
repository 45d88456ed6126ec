import Testing
@testable import Throttle

@Suite struct FairnessTests {
    func spread(_ shares: [Int64]) -> Double {
        let mean = Double(shares.reduce(0, +)) / Double(shares.count)
        return shares.map { abs(Double($0) - mean) / mean }.max() ?? 0
    }

    @Test(arguments: [16 * KiB, 1000], [PollPattern.onDeadline, .jittered(10 * millisecond)])
    func tenEqualPeersGetEqualShares(chunk: Int64, pattern: PollPattern) {
        var sim = Simulation(globalRate: 5 * MiB, pattern: pattern)
        let torrent = sim.addTorrent(rate: 0)
        for _ in 0..<10 { sim.addPeer(torrent: torrent, chunk: chunk) }
        sim.run(until: 60 * second)
        let shares = sim.peers.indices.map { sim.granted(peer: $0) }
        #expect(spread(shares) < 0.02, "\(shares)")
        #expect(relativeError(shares.reduce(0, +), 5 * MiB * 60) < 0.01)
    }

    /// A peer that takes only 200 KiB/s leaves the rest to the others; the total stays at
    /// the limit and the busy peers split it evenly.
    @Test func slowPeersShareGoesToTheOthers() {
        let rate = 5 * MiB
        var sim = Simulation(globalRate: rate)
        let torrent = sim.addTorrent(rate: 0)
        let slow = sim.addPeer(torrent: torrent, ownRate: 200 * KiB)
        for _ in 0..<5 { sim.addPeer(torrent: torrent) }
        sim.run(until: 60 * second)
        #expect(relativeError(sim.granted(peer: slow), 200 * KiB * 60) < 0.02)
        let busy = (1...5).map { sim.granted(peer: $0) }
        #expect(spread(busy) < 0.02, "\(busy)")
        #expect(relativeError(sim.granted(), rate * 60) < 0.01)
        // Each busy peer gets an equal part of what the slow one leaves.
        #expect(relativeError(busy[0], (rate - 200 * KiB) * 60 / 5) < 0.02)
    }

    /// Not first come, first served: a peer that arrives late gets its equal share from
    /// the next round on.
    @Test func lateComerGetsAnEqualShare() {
        var sim = Simulation(globalRate: 2 * MiB)
        let torrent = sim.addTorrent(rate: 0)
        for _ in 0..<3 { sim.addPeer(torrent: torrent) }
        sim.run(until: 10 * second)
        let late = sim.addPeer(torrent: torrent)
        sim.run(until: 30 * second)
        let shares = sim.peers.indices.map { sim.granted(from: 10 * second + 100 * millisecond, to: 30 * second, peer: $0) }
        #expect(spread(shares) < 0.02, "\(shares)")
        #expect(sim.granted(from: 10 * second, to: 10 * second + 20 * millisecond, peer: late) > 0)
    }

    /// Peers that ask in uTP-packet, block and multi-block sizes, each keeping about
    /// 64 KiB in flight as pipelining peers do, get equal bytes: a grant is cut to the
    /// quantum, so the size of a request buys nothing. (A peer that keeps less in flight
    /// than one scheduler step hands out is limited by its own demand, not by the share.)
    @Test func requestSizeDoesNotBuyBandwidth() {
        var sim = Simulation(globalRate: 3 * MiB, pattern: .jittered(3 * millisecond))
        let torrent = sim.addTorrent(rate: 0)
        for (chunk, depth) in [(1400, 48), (16 * KiB, 4), (64 * KiB, 2)] as [(Int64, Int64)] {
            sim.addPeer(torrent: torrent, chunk: chunk, depth: depth)
        }
        sim.run(until: 30 * second)
        let shares = sim.peers.indices.map { sim.granted(peer: $0) }
        #expect(spread(shares) < 0.02, "\(shares)")
        #expect(relativeError(shares.reduce(0, +), 3 * MiB * 30) < 0.01)
    }
}

extension FairnessTests {
    /// Two hundred busy peers over three torrents under one global limit: every torrent
    /// gets a third, every peer an equal part of its torrent's third.
    @Test func manyPeersAcrossTorrents() {
        var sim = Simulation(globalRate: 12 * MiB, pattern: .jittered(2 * millisecond))
        let torrents = (0..<3).map { _ in sim.addTorrent(rate: 0) }
        for index in 0..<200 { sim.addPeer(torrent: torrents[index % 3]) }
        sim.run(until: 30 * second)
        #expect(relativeError(sim.granted(), 12 * MiB * 30) < 0.01)
        let perTorrent = torrents.map { sim.granted(torrent: $0) }
        #expect(spread(perTorrent) < 0.01, "\(perTorrent)")
        for torrent in torrents {
            let shares = sim.peers.indices.filter { sim.peers[$0].torrent == torrent }.map { sim.granted(peer: $0) }
            #expect(spread(shares) < 0.02, "torrent \(torrent): \(shares.min()!)...\(shares.max()!)")
        }
    }
}
