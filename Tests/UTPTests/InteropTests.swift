import Testing
@testable import UTP
import SeededRandom

/// One multiplexer driven by hand-made packets from a scripted peer (endpoint 9), the
/// way postgres-nio tests its state machines: no sockets, no clock.
private struct Scripted {
    var mux: UTPMultiplexer<Int>
    var rng = SplitMix64(seed: 42)
    var now: UInt64 = 10_000_000
    let peer = 9
    private var batch = UTPDatagramBatch<Int>()

    init(configuration: UTPConfiguration = UTPConfiguration()) {
        mux = UTPMultiplexer(configuration: configuration)
    }

    /// Delivers `packets` as one receive batch and returns everything sent in reply.
    mutating func deliver(_ packets: [UTPPacket]) -> [UTPPacket] {
        for p in packets { mux.receive(p.encoded(), from: peer, now: now, rng: &rng) }
        mux.endOfBatch(now: now)
        return sent()
    }

    mutating func sent() -> [UTPPacket] {
        mux.takeDatagrams(into: &batch)
        var out: [UTPPacket] = []
        for i in 0 ..< batch.count {
            let (endpoint, bytes) = batch[i]
            #expect(endpoint == peer)
            #expect(bytes[1] < 3, "first extension \(bytes[1])")
            if let p = try? UTPPacket(parsing: bytes) { out.append(p) }
        }
        return out
    }

    mutating func tick(advancing: UInt64) -> [UTPPacket] {
        now += advancing
        mux.tick(now: now)
        return sent()
    }
}

private func h(_ type: UTPPacketType, id: UInt16, seq: UInt16, ack: UInt16, wnd: UInt32 = 1 << 20, ts: UInt32 = 1234) -> UTPHeader {
    UTPHeader(type: type, connectionID: id, timestamp: ts, timestampDifference: 0, windowSize: wnd, seqNr: seq, ackNr: ack)
}

/// An accepted connection: SYN(id 500, seq 1000) answered, then the peer's first DATA.
private func accepted(_ s: inout Scripted, payload: [UInt8] = Array("hello".utf8)) -> (UTPConnectionID, isn: UInt16) {
    let synAck = s.deliver([UTPPacket(header: h(.syn, id: 500, seq: 1000, ack: 0, wnd: 0))])
    let isn = synAck[0].header.seqNr
    // The initiator acks SYN-ACK.seq_nr - 1: nothing of ours received yet.
    _ = s.deliver([UTPPacket(header: h(.data, id: 501, seq: 1001, ack: isn &- 1), payload: payload)])
    guard case .accepted(let id, 9)? = s.mux.takeEvents().first else {
        Issue.record("no accepted event")
        return (UTPConnectionID(slot: -1, generation: 0), isn)
    }
    return (id, isn)
}

@Suite struct InteropTests {
    /// SYN-ACK: STATE, id = the SYN's id, seq_nr = our ISN (not incremented), ack_nr =
    /// the SYN's seq_nr. A duplicate SYN gets the same SYN-ACK, not a second connection.
    @Test func synAckAndDuplicateSyn() {
        var s = Scripted()
        // libtorrent's SYN: wnd_size 0, ack_nr 0.
        let syn = UTPPacket(header: h(.syn, id: 500, seq: 1000, ack: 0, wnd: 0))
        let first = s.deliver([syn])
        #expect(first.count == 1)
        let synAck = first[0].header
        #expect(synAck.type == .state)
        #expect(synAck.connectionID == 500)
        #expect(synAck.ackNr == 1000)
        #expect(synAck.windowSize > 0)
        #expect(synAck.timestamp != 0)
        #expect(s.mux.halfOpenCount == 1)
        s.now += 300_000
        let again = s.deliver([syn])
        #expect(again.count == 1)
        #expect(again[0].header.seqNr == synAck.seqNr && again[0].header.ackNr == 1000 && again[0].header.connectionID == 500)
        #expect(s.mux.halfOpenCount == 1)
        #expect(s.mux.connectionCount == 0)
        #expect(s.mux.takeEvents().isEmpty)
    }

    /// The acceptor's first DATA uses its ISN (= the SYN-ACK's seq_nr) and acks the
    /// initiator's data; the SYN's zero window is not taken as a zero window.
    @Test func acceptorFirstDataUsesISN() {
        var s = Scripted()
        let (id, isn) = accepted(&s)
        #expect(s.mux.connectionCount == 1)
        #expect(s.mux.read(id, maxBytes: 100, now: s.now) == Array("hello".utf8))
        _ = s.sent()
        #expect(s.mux.write(id, Array(repeating: 7, count: 2000), now: s.now) == 2000)
        let out = s.sent().filter { $0.header.type == .data }
        #expect(out.count == 2)
        #expect(out[0].header.seqNr == isn)
        #expect(out[1].header.seqNr == isn &+ 1)
        #expect(out[0].header.ackNr == 1001)
        #expect(out[0].header.connectionID == 500)
        // 1402 bytes of UDP payload: 20 of header, 1382 of data.
        #expect(out[0].payload.count == 1382)
        #expect(out[0].payload.count + out[1].payload.count == 2000)
    }

    /// The initiator: SYN carries recv_id and seq = ISN; ack_nr = SYN-ACK.seq_nr - 1;
    /// the first DATA is ISN + 1 with send_id = recv_id + 1; only the first SYN-ACK counts.
    @Test func initiatorHandshake() throws {
        var s = Scripted()
        let id = try #require(s.mux.connect(to: 9, now: s.now, rng: &s.rng))
        let syns = s.sent()
        #expect(syns.count == 1)
        let syn = syns[0].header
        #expect(syn.type == .syn)
        #expect(syn.ackNr == 0)
        #expect(syn.timestampDifference == 0)
        let recvID = syn.connectionID
        let isn = syn.seqNr
        // SYN-ACK from an acceptor whose ISN is 7000.
        _ = s.deliver([UTPPacket(header: h(.state, id: recvID, seq: 7000, ack: isn))])
        #expect(s.mux.takeEvents() == [.connected(id)])
        // A second, different SYN-ACK changes nothing.
        _ = s.deliver([UTPPacket(header: h(.state, id: recvID, seq: 9000, ack: isn))])
        #expect(s.mux.write(id, Array("handshake".utf8), now: s.now) == 9)
        let data = s.sent()
        #expect(data.count == 1)
        #expect(data[0].header.type == .data)
        #expect(data[0].header.connectionID == recvID &+ 1)
        #expect(data[0].header.seqNr == isn &+ 1)
        #expect(data[0].header.ackNr == 6999)
        // The acceptor's first DATA (seq 7000) is in order.
        _ = s.deliver([UTPPacket(header: h(.data, id: recvID, seq: 7000, ack: isn &+ 1), payload: [1, 2, 3])])
        #expect(s.mux.read(id, maxBytes: 10, now: s.now) == [1, 2, 3])
    }

    @Test func connectTimesOutWithoutSynAck() throws {
        var s = Scripted()
        let id = try #require(s.mux.connect(to: 9, now: s.now, rng: &s.rng))
        _ = s.sent()
        var syns = 0
        for _ in 0 ..< 10 {
            syns += s.tick(advancing: 1_000_000).filter { $0.header.type == .syn }.count
        }
        #expect(syns == 1)
        #expect(s.mux.takeEvents() == [.closed(id, .timedOut)])
        #expect(s.mux.connectionCount == 0)
    }

    /// libutp's keepalive: a STATE with ack_nr - 1 after 29 s without sending.
    @Test func keepaliveUsesAckMinusOne() {
        var s = Scripted()
        let (id, isn) = accepted(&s)
        _ = s.mux.read(id, maxBytes: 100, now: s.now)
        let acks = s.sent()
        #expect(acks.allSatisfy { $0.header.ackNr == 1001 })
        #expect(s.tick(advancing: 20_000_000).isEmpty)
        let keepalive = s.tick(advancing: 9_500_000)
        #expect(keepalive.count == 1)
        #expect(keepalive[0].header.type == .state)
        #expect(keepalive[0].header.ackNr == 1000)
        #expect(keepalive[0].header.seqNr == isn)
        #expect(s.mux.stats(of: id)?.duplicateAcks == 0)
    }

    /// Deferred acks: a batch of ten DATA packets gets one STATE.
    @Test func oneAckPerBatch() {
        var s = Scripted()
        let (id, isn) = accepted(&s)
        let packets = (0 ..< 10).map { i in
            UTPPacket(header: h(.data, id: 501, seq: 1002 + UInt16(i), ack: isn &- 1), payload: [UInt8](repeating: UInt8(i), count: 100))
        }
        let replies = s.deliver(packets)
        #expect(replies.count == 1)
        #expect(replies[0].header.type == .state)
        #expect(replies[0].header.ackNr == 1011)
        #expect(s.mux.readableBytes(id) == 5 + 1000)
    }

    /// Out-of-order data is selectively acked (bit k = ack_nr + 2 + k), and filled in later.
    @Test func selectiveAckOnTheWire() {
        var s = Scripted()
        let (id, isn) = accepted(&s)
        let replies = s.deliver([1003, 1005].map { UTPPacket(header: h(.data, id: 501, seq: $0, ack: isn &- 1), payload: [UInt8($0 & 0xFF)]) })
        #expect(replies.count == 1)
        #expect(replies[0].header.ackNr == 1001)
        #expect(replies[0].selectiveAck == [0b0000_0101, 0, 0, 0])
        let filled = s.deliver([1002, 1004].map { UTPPacket(header: h(.data, id: 501, seq: $0, ack: isn &- 1), payload: [UInt8($0 & 0xFF)]) })
        #expect(filled.last?.header.ackNr == 1005)
        #expect(filled.last?.selectiveAck == nil)
        #expect(s.mux.read(id, maxBytes: 100, now: s.now) == Array("hello".utf8) + [0xEA, 0xEB, 0xEC, 0xED])
    }

    /// The peer's FIN: acked as FIN-seq (libutp) and FIN-seq + 1 (libtorrent), then our FIN.
    @Test func peerFinIsAckedBothWaysAndAnswered() {
        var s = Scripted()
        let (id, isn) = accepted(&s)
        let replies = s.deliver([UTPPacket(header: h(.fin, id: 501, seq: 1002, ack: isn &- 1))])
        let states = replies.filter { $0.header.type == .state }.map(\.header.ackNr)
        #expect(states == [1002, 1003])
        let fins = replies.filter { $0.header.type == .fin }
        #expect(fins.count == 1)
        #expect(fins.first?.header.seqNr == isn)
        #expect(fins.first?.header.ackNr == 1002)
        let events = s.mux.takeEvents()
        #expect(events.contains(.readable(id)))
        #expect(events.contains(.closed(id, .finished)))
        // Buffered data stays readable after the close.
        #expect(s.mux.read(id, maxBytes: 100, now: s.now) == Array("hello".utf8))
        #expect(s.mux.isAtEndOfStream(id))
    }

    /// A FIN that reuses the last received seq_nr still ends the stream (libtorrent accepts it too).
    @Test func finWithLastSeqIsAccepted() {
        var s = Scripted()
        let (id, isn) = accepted(&s)
        let replies = s.deliver([UTPPacket(header: h(.fin, id: 501, seq: 1001, ack: isn &- 1))])
        #expect(replies.filter { $0.header.type == .state }.map(\.header.ackNr) == [1001, 1002])
        #expect(replies.filter { $0.header.type == .fin }.count == 1)
        #expect(s.mux.takeEvents().contains(.closed(id, .finished)))
    }

    /// Our FIN after the data; the peer's ack of it, then its FIN, ends the connection.
    @Test func ourFinAfterData() {
        var s = Scripted()
        let (id, isn) = accepted(&s)
        _ = s.mux.write(id, [1, 2, 3], now: s.now)
        s.mux.close(id, now: s.now)
        let out = s.sent()
        #expect(out.map(\.header.type) == [.data, .fin])
        #expect(out[1].header.seqNr == isn &+ 1)
        #expect(out[1].payload.isEmpty)
        #expect(s.mux.write(id, [4], now: s.now) == 0)
        _ = s.deliver([UTPPacket(header: h(.state, id: 501, seq: 1002, ack: isn &+ 1))])
        #expect(!s.mux.takeEvents().contains(.closed(id, .finished)))
        _ = s.deliver([UTPPacket(header: h(.fin, id: 501, seq: 1002, ack: isn &+ 1))])
        #expect(s.mux.takeEvents().contains(.closed(id, .finished)))
    }

    /// If the peer never sends its FIN, we stop waiting shortly after ours is acked.
    @Test func finLingerEnds() {
        var s = Scripted()
        let (id, isn) = accepted(&s)
        s.mux.close(id, now: s.now)
        _ = s.deliver([UTPPacket(header: h(.state, id: 501, seq: 1002, ack: isn))])
        _ = s.tick(advancing: 3_000_000)
        #expect(s.mux.takeEvents().contains(.closed(id, .finished)))
    }

    /// RESET carries our send_id, our ack_nr and our next seq_nr.
    @Test func abortSendsReset() {
        var s = Scripted()
        let (id, isn) = accepted(&s)
        _ = s.sent()
        s.mux.abort(id, now: s.now)
        let out = s.sent()
        #expect(out.count == 1)
        #expect(out[0].header.type == .reset)
        #expect(out[0].header.connectionID == 500)
        #expect(out[0].header.ackNr == 1001)
        #expect(out[0].header.seqNr == isn)
        #expect(s.mux.takeEvents() == [.closed(id, .aborted)])
    }

    /// A RESET is accepted with either of our ids, from that endpoint only; others are ignored.
    @Test func incomingReset() {
        var s = Scripted()
        let (id, _) = accepted(&s)
        _ = s.deliver([UTPPacket(header: h(.reset, id: 777, seq: 0, ack: 0))])
        s.mux.receive(UTPPacket(header: h(.reset, id: 500, seq: 0, ack: 0)).encoded(), from: 10, now: s.now, rng: &s.rng)
        #expect(s.mux.takeEvents().isEmpty)
        #expect(s.mux.stats.resetsIgnored == 2)
        _ = s.deliver([UTPPacket(header: h(.reset, id: 500, seq: 0, ack: 0))])
        #expect(s.mux.takeEvents() == [.closed(id, .reset)])
    }

    /// A packet for no connection is answered with a RESET (rate-limited), never a RESET for a RESET.
    @Test func strayPacketGetsReset() {
        var s = Scripted()
        let replies = s.deliver([UTPPacket(header: h(.data, id: 4242, seq: 10, ack: 20), payload: [1])])
        #expect(replies.count == 1)
        #expect(replies[0].header.type == .reset)
        #expect(replies[0].header.connectionID == 4242)
        #expect(s.deliver([UTPPacket(header: h(.reset, id: 4242, seq: 10, ack: 20))]).isEmpty)
        let flood = s.deliver((0 ..< 1000).map { UTPPacket(header: h(.state, id: UInt16($0), seq: 1, ack: 1)) })
        #expect(flood.count < 200)
    }

    /// The receive window: unread data shrinks it; when a read reopens it after it fell
    /// below a packet, a window-update STATE goes out at once.
    @Test func windowUpdateWhenReopened() {
        var config = UTPConfiguration()
        config.receiveBufferSize = 16 * 1024
        var s = Scripted(configuration: config)
        let (id, isn) = accepted(&s, payload: [])
        var seq: UInt16 = 1002
        var lastWindow = UInt32.max
        for _ in 0 ..< 20 {
            let replies = s.deliver([UTPPacket(header: h(.data, id: 501, seq: seq, ack: isn &- 1), payload: [UInt8](repeating: 1, count: 1000))])
            seq &+= 1
            if let w = replies.last?.header.windowSize { lastWindow = w }
        }
        #expect(lastWindow < 1000)
        #expect(s.mux.readableBytes(id) <= 16 * 1024)
        // Reading a little (not enough for a packet) sends nothing; reading more does.
        _ = s.mux.read(id, maxBytes: 10, now: s.now)
        #expect(s.sent().isEmpty)
        _ = s.mux.read(id, maxBytes: 8_000, now: s.now)
        let update = s.sent()
        #expect(update.count == 1)
        #expect(update.first?.header.type == .state)
        #expect((update.first?.header.windowSize ?? 0) >= 8_000)
    }

    /// A peer's zero window stops us; after the probe delay one packet goes anyway.
    @Test func zeroWindowProbe() {
        var s = Scripted()
        let (id, isn) = accepted(&s)
        _ = s.deliver([UTPPacket(header: h(.state, id: 501, seq: 1002, ack: isn &- 1, wnd: 0))])
        _ = s.mux.write(id, [UInt8](repeating: 3, count: 5000), now: s.now)
        #expect(s.sent().filter { $0.header.type == .data }.isEmpty)
        let probe = s.tick(advancing: 6_000_000).filter { $0.header.type == .data }
        #expect(probe.count == 1)
    }

    /// Loss of the oldest packet, reported by selective acks: resent once.
    @Test func threeDuplicateAcksResend() {
        var s = Scripted()
        let (id, isn) = accepted(&s)
        _ = s.mux.write(id, [UInt8](repeating: 5, count: 1382 * 2), now: s.now)
        let data = s.sent().filter { $0.header.type == .data }
        #expect(data.count == 2)
        // The peer holds isn + 1 (selective ack bit 0) and keeps asking for isn.
        s.now += 30_000
        let resent = s.deliver((0 ..< 3).map { i in
            UTPPacket(header: h(.state, id: 501, seq: 1002, ack: isn &- 1, ts: 2000 + UInt32(i)), selectiveAck: [1, 0, 0, 0])
        })
        // With nothing more to send, the first selective ack already shows the hole
        // (early retransmit); the third duplicate ack does not send it a second time.
        #expect(resent.filter { $0.header.type == .data }.map(\.header.seqNr) == [isn])
        #expect(s.mux.stats(of: id)?.retransmits == 1)
        #expect(s.mux.stats(of: id)?.duplicateAcks == 3)
    }

    /// A bare repeated ack (no selective ack: the peer has no hole, it saw a duplicated
    /// DATA or sent a window update) is not a duplicate ack: no resend, no window cut.
    @Test func repeatedAcksWithoutHoleAreNotLoss() {
        var s = Scripted()
        let (id, isn) = accepted(&s)
        _ = s.mux.write(id, [UInt8](repeating: 5, count: 1382 * 2), now: s.now)
        _ = s.sent()
        var resent: [UTPPacket] = []
        for i in 0 ..< 5 {
            s.now += 1000
            resent += s.deliver([UTPPacket(header: h(.state, id: 501, seq: 1002, ack: isn &- 1, ts: 3000 + UInt32(i)))])
        }
        #expect(resent.filter { $0.header.type == .data }.isEmpty)
        #expect(s.mux.stats(of: id)?.fastRetransmits == 0)
    }
}

extension InteropTests {
    /// Under a SYN flood the ISN is a cookie: a peer whose half-open entry the flood
    /// pushed out is still accepted by its first DATA, and a DATA with a wrong ack is not.
    @Test func synCookieSurvivesEviction() {
        var config = UTPConfiguration()
        config.maxHalfOpen = 4
        var s = Scripted(configuration: config)
        _ = s.deliver([UTPPacket(header: h(.syn, id: 100, seq: 1, ack: 0)), UTPPacket(header: h(.syn, id: 200, seq: 1, ack: 0))])
        let synAck = s.deliver([UTPPacket(header: h(.syn, id: 500, seq: 1000, ack: 0, wnd: 0))])
        let isn = synAck[0].header.seqNr
        _ = s.deliver((0 ..< 8).map { UTPPacket(header: h(.syn, id: 1000 + UInt16($0) * 3, seq: 1, ack: 0)) })
        #expect(s.mux.stats.halfOpenEvicted >= 3)
        _ = s.deliver([UTPPacket(header: h(.data, id: 501, seq: 1001, ack: isn &+ 7), payload: [1])])
        #expect(s.mux.takeEvents().isEmpty)
        _ = s.deliver([UTPPacket(header: h(.data, id: 501, seq: 1001, ack: isn &- 1), payload: Array("hello".utf8))])
        let events = s.mux.takeEvents()
        guard case .accepted(_, 9)? = events.first else {
            Issue.record("not accepted: \(events)")
            return
        }
        #expect(s.mux.stats.cookiesAccepted == 1)
    }
}
