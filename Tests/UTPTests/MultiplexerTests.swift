import Testing
@testable import UTP
import SeededRandom

@Suite struct MultiplexerTests {
    /// Twenty connections from one endpoint to another share a 20 Mbit/s bottleneck;
    /// each carries its own stream (tagged by a salt) and every byte is checked.
    @Test func manyConnectionsBetweenTheSameEndpoints() {
        var net = SimNetwork(nodes: 2, seed: 21)
        var link = LinkModel(delay: 15_000, jitter: 3_000, loss: 0.01)
        link.bitsPerSecond = 20_000_000
        link.queueLimitBytes = 400_000
        net.setBothLinks(0, 1, link)
        let count = 20
        let size = 200_000
        var clients: [UTPConnectionID] = []
        for _ in 0 ..< count {
            clients.append(net.nodes[0].connect(to: 1, now: net.now, rng: &net.rngs[0])!)
        }
        // Server side: connection -> (stream index, bytes sent); client side: bytes received.
        var serverStreams: [UTPConnectionID: (index: Int, sent: Int)] = [:]
        var received = Array(repeating: 0, count: count)
        var corrupt = false
        var scratch: [UInt8] = []
        var chunk: [UInt8] = []
        var finished = 0
        while finished < count && net.now < 300_000_000 {
            for event in net.nodes[0].takeEvents() {
                if case .connected(let id) = event, let index = clients.firstIndex(of: id) {
                    // The first byte tells the server which stream to send.
                    _ = net.nodes[0].write(id, [UInt8(index)], now: net.now)
                }
            }
            for (index, id) in clients.enumerated() where received[index] < size {
                scratch.removeAll(keepingCapacity: true)
                let n = net.nodes[0].read(id, maxBytes: 1 << 20, into: &scratch, now: net.now)
                if n > 0 {
                    if !matchesPattern(scratch, at: received[index] + index * 7_777) { corrupt = true }
                    received[index] += n
                    if received[index] == size { finished += 1 }
                }
            }
            for event in net.nodes[1].takeEvents() {
                if case .accepted(let id, _) = event { serverStreams[id] = (-1, 0) }
            }
            for (id, stream) in serverStreams {
                var stream = stream
                if stream.index < 0 {
                    scratch.removeAll(keepingCapacity: true)
                    guard net.nodes[1].read(id, maxBytes: 1, into: &scratch, now: net.now) == 1 else { continue }
                    stream.index = Int(scratch[0])
                }
                while stream.sent < size {
                    chunk.removeAll(keepingCapacity: true)
                    let n = min(32_768, size - stream.sent)
                    appendPattern(from: stream.sent + stream.index * 7_777, count: n, to: &chunk)
                    let taken = net.nodes[1].write(id, chunk, now: net.now)
                    stream.sent += taken
                    if taken < n { break }
                }
                serverStreams[id] = stream
            }
            guard net.step() else { break }
        }
        #expect(!corrupt)
        #expect(received == Array(repeating: size, count: count))
        #expect(net.nodes[1].connectionCount == count)
        #expect(Set(serverStreams.values.map(\.index)) == Set(0 ..< count))
    }

    /// A released connection's handle goes stale: calls on it do nothing, even after
    /// its slot is reused by a new connection.
    @Test func staleHandlesAreHarmless() throws {
        var mux = UTPMultiplexer<Int>()
        var rng = SplitMix64(seed: 1)
        let first = try #require(mux.connect(to: 5, now: 1_000, rng: &rng))
        mux.release(first, now: 1_000)
        #expect(mux.connectionCount == 0)
        let second = try #require(mux.connect(to: 6, now: 2_000, rng: &rng))
        #expect(first != second)
        #expect(mux.write(first, [1, 2, 3], now: 2_000) == 0)
        #expect(mux.read(first, maxBytes: 10, now: 2_000).isEmpty)
        mux.abort(first, now: 2_000)
        #expect(mux.stats(of: first) == nil)
        #expect(mux.endpoint(of: second) == 6)
        #expect(mux.takeEvents().isEmpty)
    }

    /// Beyond the connection limit a SYN is refused with a RESET.
    @Test func connectionLimitRefusesSyns() {
        var config = UTPConfiguration()
        config.maxConnections = 3
        var mux = UTPMultiplexer<Int>(configuration: config)
        var rng = SplitMix64(seed: 2)
        for i in 0 ..< 5 {
            mux.receive(UTPPacket(header: UTPHeader(type: .syn, connectionID: UInt16(10 * i), timestamp: 5, seqNr: 1)).encoded(),
                        from: 7, now: 1_000, rng: &rng)
        }
        var batch = UTPDatagramBatch<Int>()
        mux.takeDatagrams(into: &batch)
        let types = (0 ..< batch.count).compactMap { try? UTPPacket(parsing: batch[$0].bytes).header.type }
        #expect(types == [.state, .state, .state, .reset, .reset])
        #expect(mux.halfOpenCount == 3)
        #expect(mux.stats.refused == 2)
    }

    /// The batch is one buffer: datagram ranges are back to back, endpoints parallel.
    @Test func datagramBatchLayout() throws {
        var mux = UTPMultiplexer<Int>(packetSize: { $0 == 6 ? 1232 : 1402 })
        var rng = SplitMix64(seed: 3)
        _ = try #require(mux.connect(to: 4, now: 1, rng: &rng))
        _ = try #require(mux.connect(to: 6, now: 1, rng: &rng))
        var batch = UTPDatagramBatch<Int>()
        mux.takeDatagrams(into: &batch)
        #expect(batch.count == 2)
        #expect(batch.range(at: 0) == 0 ..< 20)
        #expect(batch.range(at: 1) == 20 ..< 40)
        var seen: [Int] = []
        batch.forEach { endpoint, bytes in
            seen.append(endpoint)
            #expect(bytes.count == 20 && bytes[0] == 0x41)
        }
        #expect(seen == [4, 6])
        mux.takeDatagrams(into: &batch)
        #expect(batch.isEmpty)
    }

    /// Destinations are kept per run of consecutive datagrams: calls for one endpoint
    /// extend its run, another endpoint starts a new one, and `forEachRun` hands each
    /// run over whole with its datagrams' end offsets.
    @Test func datagramBatchRuns() throws {
        var mux = UTPMultiplexer<Int>()
        var rng = SplitMix64(seed: 5)
        let a1 = try #require(mux.connect(to: 4, now: 1, rng: &rng))
        let a2 = try #require(mux.connect(to: 4, now: 1, rng: &rng))
        let b = try #require(mux.connect(to: 6, now: 1, rng: &rng))
        _ = (a1, a2, b)
        _ = try #require(mux.connect(to: 4, now: 1, rng: &rng))
        var batch = UTPDatagramBatch<Int>()
        mux.takeDatagrams(into: &batch)
        #expect(batch.count == 4)
        #expect(batch.endpoints == [4, 4, 6, 4])
        #expect((0 ..< 4).map { batch[$0].endpoint } == [4, 4, 6, 4])
        var runs: [(Int, Int, [Int])] = []
        batch.forEachRun { endpoint, raw, start, ends in
            runs.append((endpoint, start, Array(ends)))
            #expect(raw.count == 80)
            var offset = start
            for end in ends {
                #expect(end - offset == 20 && raw[offset] == 0x41)
                offset = end
            }
        }
        #expect(runs.map(\.0) == [4, 6, 4])
        #expect(runs.map(\.1) == [0, 40, 60])
        #expect(runs.map(\.2) == [[20, 40], [60], [80]])
        var flat: [Int] = []
        batch.forEach { endpoint, _ in flat.append(endpoint) }
        #expect(flat == [4, 4, 6, 4])
        mux.takeDatagrams(into: &batch)
        #expect(batch.isEmpty && batch.endpoints.isEmpty)
        var none = 0
        batch.forEachRun { _, _, _, _ in none += 1 }
        #expect(none == 0)
    }
}
