import Testing
@testable import Throttle

/// The limit is met over time, never exceeded in any window, from a cold start, whatever
/// the caller's timer does.
@Suite struct AccuracyTests {
    static let rates = [1 * MiB, 5 * MiB, 20 * MiB]
    static let patterns: [PollPattern] = [
        .onDeadline, .jittered(5 * millisecond), .jittered(40 * millisecond), .tick(10 * millisecond),
    ]

    private func check(rate: Int64, pattern: PollPattern, chunk: Int64, peers: Int) {
        var sim = Simulation(globalRate: rate, pattern: pattern)
        let torrent = sim.addTorrent(rate: 0)
        for _ in 0..<peers { sim.addPeer(torrent: torrent, chunk: chunk) }
        sim.run(until: 60 * second)

        let label = "\(rate / KiB) KiB/s, \(pattern), \(chunk) B demands"
        let total = sim.granted()
        #expect(relativeError(total, rate * 60) < 0.01, "\(label): \(total) of \(rate * 60)")
        let burst = TokenBucket.defaultBurst(rate: rate)
        #expect(sim.worstBurstExcess(rate: rate, burst: burst) <= 0, "\(label): burst bound")
        let window = sim.maxWindow(length: second)
        #expect(window <= rate * 11 / 10, "\(label): one-second window \(window)")
        // No tick-sized bursts: a grant is at most a quantum's worth per peer per step.
        let biggest = sim.events.map(\.bytes).max() ?? 0
        #expect(biggest <= burst, "\(label): grant of \(biggest)")
    }

    @Test(arguments: rates, patterns)
    func blockDemands(rate: Int64, pattern: PollPattern) {
        check(rate: rate, pattern: pattern, chunk: 16 * KiB, peers: 4)
    }

    @Test(arguments: rates, [PollPattern.onDeadline, .jittered(5 * millisecond)])
    func smallDemands(rate: Int64, pattern: PollPattern) {
        check(rate: rate, pattern: pattern, chunk: 1000, peers: 3)
    }

    @Test func singlePeerAtALowRate() {
        check(rate: 20 * KiB, pattern: .jittered(20 * millisecond), chunk: 16 * KiB, peers: 1)
    }

    @Test func coldStartFirstSecond() {
        var sim = Simulation(globalRate: 4 * MiB)
        let torrent = sim.addTorrent(rate: 0)
        for _ in 0..<8 { sim.addPeer(torrent: torrent) }
        sim.run(until: 2 * second)
        #expect(sim.granted(to: second) <= 4 * MiB)
        #expect(relativeError(sim.granted(to: second), 4 * MiB) < 0.01)
        #expect(sim.maxWindow(length: second) <= 4 * MiB * 11 / 10)
    }

    /// The scheduler asks for a callback per quantum, not on a coarse tick: at 1 MiB/s
    /// the quantum is 2 KiB (2 ms), so about 500 polls a second.
    @Test func wakesAtQuantumNotTick() {
        var sim = Simulation(globalRate: 1 * MiB)
        let torrent = sim.addTorrent(rate: 0)
        for _ in 0..<4 { sim.addPeer(torrent: torrent) }
        sim.run(until: 10 * second)
        #expect(sim.polls > 4_000 && sim.polls < 6_000, "\(sim.polls) timer polls")
        // Plus one at once after each batch of requests: four peers asking 64 times a second.
        #expect(sim.immediatePolls < 1_000, "\(sim.immediatePolls) immediate polls")
        let gaps = zip(sim.events.dropFirst(), sim.events).map { $0.time - $1.time }
        #expect((gaps.max() ?? 0) <= 3 * millisecond)
    }
}
