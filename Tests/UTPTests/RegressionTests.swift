import Testing
@testable import UTP
import SeededRandom

/// One multiplexer and a scripted peer (endpoint 9) for the regression tests below.
private struct Peer {
    var mux: UTPMultiplexer<Int>
    var rng = SplitMix64(seed: 7)
    var now: UInt64 = 10_000_000
    private var batch = UTPDatagramBatch<Int>()

    init(configuration: UTPConfiguration = UTPConfiguration()) {
        mux = UTPMultiplexer(configuration: configuration)
    }

    mutating func deliver(_ packets: [UTPPacket], from endpoint: Int = 9) -> [UTPPacket] {
        for p in packets { mux.receive(p.encoded(), from: endpoint, now: now, rng: &rng) }
        mux.endOfBatch(now: now)
        return sent()
    }

    mutating func sent() -> [UTPPacket] {
        mux.takeDatagrams(into: &batch)
        return (0 ..< batch.count).compactMap { try? UTPPacket(parsing: batch[$0].bytes) }
    }

    /// SYN(id 500, seq 1000) answered, then the peer's first DATA: the accepted id and our ISN.
    mutating func accept(from endpoint: Int = 9) -> (UTPConnectionID?, isn: UInt16) {
        let synAck = deliver([UTPPacket(header: hdr(.syn, id: 500, seq: 1000, ack: 0, wnd: 0))], from: endpoint)
        let isn = synAck.first?.header.seqNr ?? 0
        _ = deliver([UTPPacket(header: hdr(.data, id: 501, seq: 1001, ack: isn &- 1), payload: [1])], from: endpoint)
        for event in mux.takeEvents() {
            if case .accepted(let id, _) = event { return (id, isn) }
        }
        return (nil, isn)
    }
}

private func hdr(_ type: UTPPacketType, id: UInt16, seq: UInt16, ack: UInt16, wnd: UInt32 = 1 << 20,
                 ts: UInt32 = 1234) -> UTPHeader {
    UTPHeader(type: type, connectionID: id, timestamp: ts, timestampDifference: 0, windowSize: wnd, seqNr: seq, ackNr: ack)
}

@Suite struct RegressionTests {
    /// Releasing a connection that is still open aborts it, and the abort's close
    /// already frees an empty slot: the slot must go back to the free list once, or two
    /// later connections share it (one overwrites the other, and a packet for the
    /// overwritten one then finds an empty slot through its stale key).
    @Test func releaseOfOpenConnectionFreesSlotOnce() throws {
        var mux = UTPMultiplexer<Int>()
        var rng = SplitMix64(seed: 1)
        let first = try #require(mux.connect(to: 5, now: 1_000, rng: &rng))
        mux.release(first, now: 1_000)
        let second = try #require(mux.connect(to: 6, now: 2_000, rng: &rng))
        let third = try #require(mux.connect(to: 7, now: 2_000, rng: &rng))
        #expect(second != third)
        #expect(second.slot != third.slot)
        #expect(mux.endpoint(of: second) == 6)
        #expect(mux.endpoint(of: third) == 7)
        #expect(mux.connectionCount == 2)
    }

    /// The service's path to the same double free: the peer's FIN arrives while our
    /// window of packets is full, so our FIN cannot go yet and the connection stays open
    /// at end of stream; the service then releases it.
    @Test func releaseAtEndOfStreamWithFullWindow() throws {
        var config = UTPConfiguration()
        config.maxPacketsInFlight = 2
        var p = Peer(configuration: config)
        let (accepted, isn) = p.accept()
        let id = try #require(accepted)
        _ = p.mux.write(id, [UInt8](repeating: 3, count: 1382 * 3), now: p.now)
        #expect(p.sent().filter { $0.header.type == .data }.count == 2)
        _ = p.deliver([UTPPacket(header: hdr(.fin, id: 501, seq: 1002, ack: isn &- 1))])
        #expect(p.mux.isConnected(id))
        _ = p.mux.read(id, maxBytes: 100, now: p.now)
        #expect(p.mux.isAtEndOfStream(id))
        p.mux.release(id, now: p.now)
        let a = try #require(p.mux.connect(to: 20, now: p.now, rng: &p.rng))
        let b = try #require(p.mux.connect(to: 21, now: p.now, rng: &p.rng))
        #expect(a.slot != b.slot)
        #expect(p.mux.endpoint(of: a) == 20)
    }

    /// libtorrent sends nothing while its next packet does not fit the advertised
    /// window, even with nothing in flight, and never probes; after MTU discovery its
    /// payload is 1452 bytes, more than our 1382-byte MSS. A window that closed to
    /// between the two must still get a window update when a read reopens it, or the
    /// transfer waits for our next keepalive (29 s).
    @Test func windowUpdateCoversPeerPacketSize() throws {
        var config = UTPConfiguration()
        config.receiveBufferSize = 16 * 1024
        var p = Peer(configuration: config)
        let (accepted, isn) = p.accept()
        let id = try #require(accepted)
        var seq: UInt16 = 1002
        var lastWindow: UInt32 = 0
        // 1 + 10 * 1452 + 440 bytes received: 1423 bytes of window left.
        for size in [Int](repeating: 1452, count: 10) + [440] {
            let replies = p.deliver([UTPPacket(header: hdr(.data, id: 501, seq: seq, ack: isn &- 1),
                                               payload: [UInt8](repeating: 9, count: size))])
            seq &+= 1
            if let w = replies.last?.header.windowSize { lastWindow = w }
        }
        #expect(lastWindow == 1423)
        _ = p.mux.read(id, maxBytes: 1 << 20, now: p.now)
        let update = p.sent()
        #expect(update.count == 1)
        #expect((update.first?.header.windowSize ?? 0) == 16 * 1024)
    }

    /// A peer may send 64 KiB datagrams out of order; admission counts payload bytes
    /// against the receive window. Recycling their arrays for later small packets kept
    /// their capacity alive: within a 1 MiB window, four rounds left about 3.8 MB held
    /// by a reorder buffer holding nothing.
    @Test func reorderPoolDoesNotKeepHugeArrays() {
        var r = ReorderBuffer(capacity: 1024)
        let big = [UInt8](repeating: 7, count: 60_000)
        let small = [UInt8](repeating: 1, count: 100)
        for round in 0 ..< 4 {
            var seq: UInt16 = 2
            // Small packets take arrays from the pool, so each round's big ones are new.
            for _ in 0 ..< 16 * round {
                small.withUnsafeBytes { r.insert(seq, payload: $0) }
                seq &+= 1
            }
            for _ in 0 ..< 16 {
                big.withUnsafeBytes { r.insert(seq, payload: $0) }
                seq &+= 1
            }
            // What a connection's admission check sees: well within a 1 MiB window.
            #expect(r.bytes <= 1 << 20)
            for s in 2 ..< seq { _ = r.remove(s) { _ in } }
        }
        #expect(r.bytes == 0)
        #expect(r.pooledCapacity <= 64 * ReorderBuffer.poolableCapacity)
    }
}
