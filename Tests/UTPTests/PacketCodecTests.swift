import Testing
@testable import UTP
import SeededRandom

private func header(_ type: UTPPacketType) -> UTPHeader {
    UTPHeader(type: type, connectionID: 0xBEEF, timestamp: 0x0102_0304, timestampDifference: 0x0506_0708,
              windowSize: 0x0009_0A0B, seqNr: 0xFFFE, ackNr: 0x1234)
}

@Suite struct PacketCodecTests {
    @Test(arguments: UTPPacketType.allCases)
    func roundTripsEveryType(_ type: UTPPacketType) throws {
        let payload: [UInt8] = type == .data ? Array(0 ..< 200) : []
        let packet = UTPPacket(header: header(type), payload: payload)
        let bytes = packet.encoded()
        #expect(bytes.count == 20 + payload.count)
        #expect(bytes[0] == type.rawValue << 4 | 1)
        #expect(bytes[1] == 0)
        #expect(Array(bytes[2 ..< 20]) == [0xBE, 0xEF, 1, 2, 3, 4, 5, 6, 7, 8, 0, 9, 10, 11, 0xFF, 0xFE, 0x12, 0x34])
        #expect(try UTPPacket(parsing: bytes) == packet)
    }

    @Test func selectiveAckExtension() throws {
        let packet = UTPPacket(header: header(.state), selectiveAck: [0b0000_0101, 0, 0, 0x80])
        let bytes = packet.encoded()
        #expect(bytes.count == 20 + 2 + 4)
        #expect(bytes[1] == 1)
        #expect(Array(bytes[20 ..< 22]) == [0, 4])
        #expect(try UTPPacket(parsing: bytes) == packet)
    }

    /// Bit k, least significant first within each byte, acks ack_nr + 2 + k.
    @Test func selectiveAckBitOrder() throws {
        var reorder = ReorderBuffer(capacity: 64)
        let ack: UInt16 = 100
        // Received out of order: 102 (k=0), 104 (k=2), 111 (k=9), 133 (k=31).
        for seq: UInt16 in [102, 104, 111, 133] { reorder.insert(seq, payload: UnsafeRawBufferPointer(start: nil, count: 0)) }
        var mask: [UInt8] = []
        reorder.selectiveAck(ackNr: ack, maxBytes: 64, into: &mask)
        #expect(mask == [0b0000_0101, 0b0000_0010, 0, 0b1000_0000])
        // And the parser reads it the same way.
        let bytes = UTPPacket(header: UTPHeader(type: .state, connectionID: 1, ackNr: ack), selectiveAck: mask).encoded()
        try bytes.withUnsafeBytes { raw in
            let view = try UTPPacketView.parse(raw)
            let set = (0 ..< 32).filter { view.selectiveAckBit($0, in: raw) }.map { ack &+ 2 &+ UInt16($0) }
            #expect(set == [102, 104, 111, 133])
        }
    }

    @Test func selectiveAckLengthIsMultipleOfFour() {
        var reorder = ReorderBuffer(capacity: 1024)
        var mask: [UInt8] = []
        reorder.insert(2, payload: UnsafeRawBufferPointer(start: nil, count: 0))
        reorder.selectiveAck(ackNr: 0, maxBytes: 64, into: &mask)
        #expect(mask.count == 4)
        reorder.insert(40, payload: UnsafeRawBufferPointer(start: nil, count: 0))
        reorder.selectiveAck(ackNr: 0, maxBytes: 64, into: &mask)
        #expect(mask.count == 8)
        reorder.insert(900, payload: UnsafeRawBufferPointer(start: nil, count: 0))
        reorder.selectiveAck(ackNr: 0, maxBytes: 64, into: &mask)
        #expect(mask.count == 64)
    }

    /// Transmission 3.00's SYN: the legacy extension-bits extension, 8 bytes: 30 bytes in all.
    @Test func transmissionLegacySyn() throws {
        var bytes = UTPPacket(header: header(.syn)).encoded()
        bytes[1] = 2
        bytes += [0, 8] + [UInt8](repeating: 0, count: 8)
        #expect(bytes.count == 30)
        let packet = try UTPPacket(parsing: bytes)
        #expect(packet.header.type == .syn)
        #expect(packet.hasLegacyExtension)
        #expect(packet.payload.isEmpty)
        #expect(packet.selectiveAck == nil)
        // Length other than 8 is refused.
        var bad = bytes
        bad[21] = 7
        bad.removeLast()
        #expect(throws: UTPPacketError.badLegacyExtensionLength) { try UTPPacket(parsing: bad) }
    }

    @Test func unknownExtensionIsSkipped() throws {
        var bytes = UTPPacket(header: header(.data)).encoded()
        bytes[1] = 1
        // sack(4 bytes) -> ext 3 (close reason, 4 bytes) -> ext 77 (3 bytes) -> payload.
        bytes += [3, 4, 0xFF, 0, 0, 0]
        bytes += [77, 4, 0, 0, 0, 7]
        bytes += [0, 3, 9, 9, 9]
        bytes += [0xAA, 0xBB]
        let packet = try UTPPacket(parsing: bytes)
        #expect(packet.selectiveAck == [0xFF, 0, 0, 0])
        #expect(packet.payload == [0xAA, 0xBB])
    }

    @Test func overrunningExtensionIsRejected() {
        var bytes = UTPPacket(header: header(.state)).encoded()
        bytes[1] = 1
        bytes += [0, 10, 1, 2, 3]
        #expect(throws: UTPPacketError.extensionOverrun) { try UTPPacket(parsing: bytes) }
        // A chain that promises another extension but ends.
        var chain = UTPPacket(header: header(.state)).encoded()
        chain[1] = 1
        chain += [1, 0]
        #expect(throws: UTPPacketError.extensionOverrun) { try UTPPacket(parsing: chain) }
        // Header claims an extension, no bytes follow.
        var bare = UTPPacket(header: header(.state)).encoded()
        bare[1] = 1
        #expect(throws: UTPPacketError.extensionOverrun) { try UTPPacket(parsing: bare) }
    }

    @Test func versionAndTypeChecks() {
        var bytes = UTPPacket(header: header(.state)).encoded()
        bytes[0] = 0x22
        #expect(throws: UTPPacketError.badVersion) { try UTPPacket(parsing: bytes) }
        bytes[0] = 0x51
        #expect(throws: UTPPacketError.badType) { try UTPPacket(parsing: bytes) }
        bytes[0] = 0xF1
        #expect(throws: UTPPacketError.badType) { try UTPPacket(parsing: bytes) }
        // UDP tracker responses start with 0x00: version 0, never uTP.
        bytes[0] = 0x00
        #expect(throws: UTPPacketError.badVersion) { try UTPPacket(parsing: bytes) }
    }

    @Test func shortDatagramsAreDropped() {
        let full = UTPPacket(header: header(.state)).encoded()
        for n in 0 ..< 20 {
            #expect(throws: UTPPacketError.tooShort) { try UTPPacket(parsing: Array(full.prefix(n))) }
        }
    }

    /// We never send a first extension >= 3: libutp would take the datagram for something else.
    @Test func firstExtensionIsNeverThreeOrMore() {
        let sack = UTPPacket(header: header(.state), selectiveAck: [1, 0, 0, 0], hasLegacyExtension: true).encoded()
        #expect(sack[1] == 1)
        let legacy = UTPPacket(header: header(.syn), hasLegacyExtension: true).encoded()
        #expect(legacy[1] == 2)
    }
}

@Suite struct ArithmeticTests {
    @Test func sequenceComparisonWraps() {
        #expect(Seq.less(65_535, 0))
        #expect(Seq.less(65_000, 100))
        #expect(!Seq.less(100, 65_000))
        #expect(Seq.less(1, 2))
        #expect(!Seq.less(5, 5))
        #expect(Seq.lessOrEqual(5, 5))
        #expect(Seq.distance(from: 65_530, to: 4) == 10)
        #expect(Wrap32.less(UInt32.max - 5, 10))
    }

    @Test func rttEstimator() {
        var rtt = RTTEstimator(minimumRTO: 500_000, initialRTO: 1_000_000)
        #expect(rtt.rto == 1_000_000)
        rtt.add(sample: 100_000)
        #expect(rtt.rtt == 100_000 && rtt.rttVar == 50_000)
        #expect(rtt.rto == 500_000)
        for _ in 0 ..< 50 { rtt.add(sample: 400_000) }
        #expect(rtt.rtt > 390_000 && rtt.rtt <= 400_000)
        #expect(rtt.rto >= rtt.rtt)
    }

    @Test func byteRingWrapsAndGrows() {
        var ring = ByteRing(limit: 10_000)
        var model: [UInt8] = []
        var g = SplitMix64(seed: 3)
        var counter: UInt8 = 0
        for _ in 0 ..< 2_000 {
            let add = Int(g.next() % 700)
            var chunk: [UInt8] = []
            for _ in 0 ..< add { counter &+= 1; chunk.append(counter) }
            let taken = chunk.withUnsafeBytes { ring.append($0) }
            #expect(taken == min(add, 10_000 - model.count))
            model += chunk.prefix(taken)
            let take = Int(g.next() % 700)
            var out: [UInt8] = []
            let n = ring.read(max: take, into: &out)
            #expect(out == Array(model.prefix(n)))
            model.removeFirst(n)
            #expect(ring.count == model.count)
        }
    }

    @Test func delayHistoryKeepsMinimumOverSlots() {
        var history = DelayHistory(slotCount: 3)
        var now: UInt64 = 0
        history.add(1000, now: now)
        history.add(500, now: now + 1)
        #expect(history.base == 500)
        // Three minutes later the 500 has slid out of the window.
        for _ in 0 ..< 3 {
            now += DelayHistory.slotDuration
            history.add(800, now: now)
        }
        #expect(history.base == 800)
        history.shift(by: 7)
        #expect(history.base == 807)
        #expect(history.delayAboveBase(900) == 93)
        #expect(history.delayAboveBase(100) == 0)
    }

    @Test func ledbatShrinksAboveTargetAndHalvesOnLoss() {
        var cc = LEDBAT(packetSize: 1000, maxWindow: 1_000_000)
        // Leave slow start: samples far above the base.
        cc.addOurSample(10_000, now: 0)
        cc.lastWindowFull = 0
        for i in 0 ..< 3 { cc.addOurSample(10_000 + 200_000, now: UInt64(i)) }
        let before = cc.cwnd
        cc.onAck(bytes: 1000, now: 10)
        #expect(!cc.slowStart)
        #expect(cc.cwnd <= before)
        let w = cc.cwnd
        let cut = cc.onLoss(now: 1_000_000)
        #expect(cut)
        #expect(cc.cwnd == max(w / 2, 1000))
        // Not twice within 100 ms.
        let again = cc.onLoss(now: 1_050_000)
        #expect(!again)
        // A random loss leaves the ceiling alone.
        #expect(cc.ceiling == 1_000_000)
        cc.onTimeout(now: 0)
        #expect(cc.cwnd == 1000 && cc.slowStart)
    }

    /// An overflow (many packets lost since the cut) caps the window where the cut left
    /// it; the cap then rises by a packet per 50 ms however fast acks come, where
    /// LEDBAT's gain per round trip would regrow it within milliseconds at loopback.
    @Test func ledbatCeilingAfterOverflow() {
        var cc = LEDBAT(packetSize: 1000, maxWindow: 480_000)
        var now: UInt64 = 0
        while cc.cwnd < 400_000 {
            cc.lastWindowFull = now
            cc.onAck(bytes: 10_000, now: now)
            now += 100
        }
        let cut = cc.onLoss(now: now)
        #expect(cut)
        cc.onOverflow(now: now)
        let capped = cc.cwnd
        #expect(cc.ceiling == capped)
        // A second of acks at a 100 us round trip: 20 packets more, not back to the maximum.
        for _ in 0 ..< 10_000 {
            now += 100
            cc.lastWindowFull = now
            cc.onAck(bytes: 10_000, now: now)
        }
        #expect(cc.cwnd <= capped + 20 * 1000 && cc.cwnd >= capped + 19 * 1000, "cwnd \(cc.cwnd), capped at \(capped)")
        // A timeout halves the ceiling, never below 32 packets.
        let grown = cc.cwnd
        cc.onTimeout(now: now)
        #expect(cc.ceiling == max(grown / 2, 32 * 1000))
    }

    /// A peer whose clock runs slow makes its base delay drop; ours moves by the same
    /// amount (under 10 ms), so the drift does not read as queueing.
    @Test func ledbatClockDriftCorrection() {
        var cc = LEDBAT(packetSize: 1000, maxWindow: 1_000_000)
        cc.addOurSample(50_000, now: 0)
        cc.addTheirSample(70_000, now: 0)
        cc.addTheirSample(66_000, now: 1)
        // Our base moved up by 4 ms: a sample 4 ms above the old base is no queueing.
        cc.addOurSample(54_000, now: 2)
        cc.addOurSample(54_000, now: 3)
        cc.addOurSample(54_000, now: 4)
        #expect(cc.queueingDelay == 0)
        // A big drop is a path change, not drift: no shift.
        cc.addTheirSample(20_000, now: 5)
        cc.addOurSample(70_000, now: 6)
        cc.addOurSample(70_000, now: 7)
        cc.addOurSample(70_000, now: 8)
        #expect(cc.queueingDelay == 16_000)
    }
}
