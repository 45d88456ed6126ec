import Testing
@testable import UTP
import SeededRandom

/// Hostile datagrams aimed at a live connection, some spoofed from the real peer's
/// endpoint with the real connection id, while a transfer runs in the same simulation.
@Suite struct HostileTests {
    @Test func hostileDatagramsDuringTransfer() {
        var config = UTPConfiguration()
        config.maxHalfOpen = 256
        // Node 2 is the attacker; node 3 has no multiplexer (a sink for replies).
        var net = SimNetwork(nodes: 3, seed: 11, configuration: config)
        net.setBothLinks(0, 1, LinkModel(delay: 20_000, loss: 0.02))
        // The ids and numbers the real client uses toward the server, as seen on the wire.
        let lastClientHeader = Collector<UTPHeader>()
        net.wireTap = { from, to, bytes in
            if from == 0, to == 1, let p = try? UTPPacket(parsing: bytes), p.header.type != .syn {
                lastClientHeader.items = [p.header]
            }
        }
        var h = TransferHarness(net: net, size: 10 * 1024 * 1024)
        h.start()
        var g = SplitMix64(seed: 99)
        var round = 0
        var synID: UInt16 = 0
        var maxHalfOpen = 0
        while !h.done && h.net.now < 900_000_000 {
            h.applications()
            guard h.net.step() else { break }
            round += 1
            guard round % 10 == 0, let real = lastClientHeader.items.first else { continue }
            let spoof = 0 // the real client's endpoint
            // Random bytes.
            let random = (0 ..< Int(g.next() % 1500)).map { _ in UInt8(truncatingIfNeeded: g.next()) }
            h.net.inject(random, from: spoof, to: 1)
            // Random bytes with a valid-looking first byte.
            var typed = (0 ..< 20 + Int(g.next() % 100)).map { _ in UInt8(truncatingIfNeeded: g.next()) }
            typed[0] = UInt8(g.next() % 5) << 4 | 1
            typed[1] = UInt8(g.next() % 4)
            h.net.inject(typed, from: 2, to: 1)
            // Truncated headers of a real-looking packet.
            let good = UTPPacket(header: real).encoded()
            h.net.inject(Array(good.prefix(Int(g.next() % 20))), from: spoof, to: 1)
            // An extension whose length overruns the datagram.
            var overrun = good
            overrun[1] = 1
            overrun += [0, 200, 1, 2, 3]
            h.net.inject(overrun, from: spoof, to: 1)
            // An ack far outside the window.
            var far = real
            far.type = .state
            far.ackNr = real.ackNr &+ 30_000
            h.net.inject(UTPPacket(header: far).encoded(), from: spoof, to: 1)
            // A selective ack claiming 1,000 packets, with an ack_nr in range.
            if round % 200 == 0 {
                var sackHeader = real
                sackHeader.type = .state
                h.net.inject(UTPPacket(header: sackHeader, selectiveAck: [UInt8](repeating: 0xFF, count: 125)).encoded(), from: spoof, to: 1)
            }
            // RESETs for ids that are not ours, from the attacker and spoofed.
            h.net.inject(UTPPacket(header: UTPHeader(type: .reset, connectionID: real.connectionID &+ 1000)).encoded(), from: spoof, to: 1)
            h.net.inject(UTPPacket(header: UTPHeader(type: .reset, connectionID: real.connectionID)).encoded(), from: 2, to: 1)
            // A SYN flood from ever-new ids (their SYN-ACKs go to the sink).
            for _ in 0 ..< 40 where synID < 20_000 {
                synID += 1
                let syn = UTPPacket(header: UTPHeader(type: .syn, connectionID: synID &* 3, timestamp: 1, seqNr: synID))
                h.net.nodes[1].receive(syn.encoded(), from: 3, now: h.net.now, rng: &h.net.rngs[1])
            }
            maxHalfOpen = max(maxHalfOpen, h.net.nodes[1].halfOpenCount)
        }
        // Finish the flood if the transfer was quicker.
        while synID < 20_000 {
            synID += 1
            let syn = UTPPacket(header: UTPHeader(type: .syn, connectionID: synID &* 3, timestamp: 1, seqNr: synID))
            h.net.nodes[1].receive(syn.encoded(), from: 3, now: h.net.now, rng: &h.net.rngs[1])
            maxHalfOpen = max(maxHalfOpen, h.net.nodes[1].halfOpenCount)
        }
        #expect(h.mismatch == nil)
        #expect(h.clientReceived == h.size)
        let done = h.done
        #expect(done)
        let stats = h.net.nodes[1].stats
        #expect(maxHalfOpen <= 256)
        #expect(h.net.nodes[1].halfOpenCount <= 256)
        #expect(stats.synsReceived >= 20_000)
        #expect(stats.halfOpenEvicted >= 20_000 - 256 - stats.halfOpenExpired)
        #expect(stats.malformed > 100)
        // No spurious connections came out of it: only the client was ever accepted.
        #expect(h.serverEvents.filter { if case .accepted = $0 { true } else { false } }.count == 1)
        #expect(h.net.nodes[1].connectionCount <= 1)
        // The half-open table expires by itself once the flood stops.
        h.net.now += 20_000_000
        h.net.nodes[1].tick(now: h.net.now)
        #expect(h.net.nodes[1].halfOpenCount == 0)
    }

    /// Every prefix and every single-byte corruption of real traffic, against a fresh
    /// connection: nothing traps, and the connection either survives or closes cleanly.
    @Test func corruptedRealTraffic() {
        var net = SimNetwork(nodes: 2, seed: 12)
        net.setBothLinks(0, 1, LinkModel(delay: 5_000))
        let captured = Collector<[UInt8]>()
        net.wireTap = { from, _, bytes in if from == 0 && captured.items.count < 200 { captured.items.append(bytes) } }
        var h = TransferHarness(net: net, size: 300_000)
        h.run()
        #expect(h.done)
        var g = SplitMix64(seed: 5)
        for bytes in captured.items {
            for n in 0 ... bytes.count where n % 7 == 0 || n < 24 {
                h.net.inject(Array(bytes.prefix(n)), from: 0, to: 1)
            }
            var flipped = bytes
            let i = Int(g.next() % UInt64(bytes.count))
            flipped[i] ^= UInt8(truncatingIfNeeded: g.next() | 1)
            h.net.inject(flipped, from: 0, to: 1)
        }
        h.net.nodes[1].tick(now: h.net.now + 100_000_000)
        #expect(h.net.nodes[1].connectionCount <= 1)
    }
}
