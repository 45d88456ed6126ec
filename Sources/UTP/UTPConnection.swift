/// Things a connection wants the multiplexer to tell the application.
struct UTPSignals: OptionSet {
    let rawValue: UInt8
    static let connected = UTPSignals(rawValue: 1)
    static let readable = UTPSignals(rawValue: 2)
    static let writable = UTPSignals(rawValue: 4)
    static let closed = UTPSignals(rawValue: 8)
}

/// One BEP 29 connection as a state machine: packets, application calls and timer
/// ticks go in, datagrams come out through a `UTPPacketWriter`, and `signals` tell the
/// multiplexer which application events to raise. No clock, socket or randomness.
///
/// Sequence numbering (protocol-notes.md, the way libtorrent and libutp actually do it):
/// the initiator's SYN carries its ISN and its first DATA is ISN+1; the acceptor's
/// SYN-ACK is a STATE whose seq_nr is its ISN, unincremented, and its first DATA also
/// uses ISN. STATE carries the next seq_nr and consumes none.
struct UTPConnection {
    enum State: Equatable {
        case synSent
        case connected
        case closed(UTPCloseReason)
    }

    enum FinState: Equatable {
        case none
        /// The application closed; the FIN goes out after the buffered data.
        case wanted
        case sent(UInt16)
        case acked
    }

    private(set) var state: State
    let recvID: UInt16
    let sendID: UInt16
    let isInitiator: Bool
    let isn: UInt16
    /// The peer's SYN seq_nr (acceptor only), to recognise a duplicate SYN.
    let peerSynSeq: UInt16
    /// UDP payload limit for this path (1402 IPv4, 1232 IPv6).
    let packetSize: Int
    /// DATA payload per packet: the packet size less the header. A selective ack rides
    /// on a DATA only when it fits; otherwise a STATE carries it.
    let mss: Int
    private let config: UTPConfiguration

    // Sending.
    private var sendBuffer: ByteRing
    /// Stream offset of the first byte in `sendBuffer` (the oldest unacknowledged byte).
    private var sendBase: UInt64 = 0
    /// Stream offset of the first byte not yet put into a packet.
    private var sendNext: UInt64 = 0
    private(set) var nextSeq: UInt16
    /// The peer's cumulative ack: every seq up to it is done.
    private(set) var lastAcked: UInt16
    private var window = OutgoingWindow()
    private var bytesInFlight = 0
    private var resendQueue: [UInt16] = []
    private var resendHead = 0
    private var dupAcks = 0
    private var inRecovery = false
    private var recoverySeq: UInt16 = 0
    private var peerWindow: Int
    /// Nagle: the one undersized packet allowed in flight.
    private var undersizedInFlight: UInt16?
    private(set) var fin: FinState = .none
    private var writeBlocked = false
    private var zeroWindowSince: UInt64?
    /// When our FIN was acknowledged; we wait a little for the peer's FIN after that.
    private var finAckedAt: UInt64?
    static let finLinger: UInt64 = 2_000_000

    // Receiving.
    /// The last in-order seq_nr received.
    private(set) var ackNr: UInt16 = 0
    private var recvBuffer: ByteRing
    private var reorder = ReorderBuffer(capacity: 1024)
    private(set) var peerFinished = false
    private var finAcksSent = false
    private(set) var ackPending = false
    private var lastAdvertised = 0
    /// The largest DATA payload the peer has sent. libtorrent sends nothing while its
    /// next packet does not fit our window, even with nothing in flight, and its packets
    /// (1452 bytes of payload after MTU discovery) may exceed our MSS: a window is
    /// closed for it below this size, not below ours.
    private var largestPeerPayload = 0
    private var sackScratch: [UInt8] = []

    // Timing.
    private var rtt: RTTEstimator
    private(set) var ledbat: LEDBAT
    private var rtoDeadline: UInt64?
    private var timeouts = 0
    private var lastSend: UInt64
    private var replyMicro: UInt32 = 0
    private var synSentAt: UInt64 = 0
    /// How long a packet may be overtaken before three later selective acks mean it is
    /// lost. Zero (libtorrent's and libutp's rule) until a retransmission proves spurious.
    private var reorderWindow: UInt64 = 0
    /// Tail-loss probe (RFC 8985): a flight whose only ack is lost would otherwise
    /// wait out the 500 ms RTO floor. After two round trips without an ack, one packet
    /// goes out to draw an ack; it does not touch the congestion window.
    private var probeAt: UInt64?
    private var probeSent = false
    private var lastPeerTimestamp: UInt32 = 0
    private var lastPeerAck: UInt16 = 0
    /// Packets found lost since the last window cut; many mean a buffer overflowed.
    private var lostSinceCut = 0

    private var counters = UTPConnectionStats()
    var signals: UTPSignals = []

    private init(state: State, recvID: UInt16, sendID: UInt16, isInitiator: Bool, isn: UInt16, peerSynSeq: UInt16,
                 packetSize: Int, config: UTPConfiguration, now: UInt64) {
        self.state = state
        self.recvID = recvID
        self.sendID = sendID
        self.isInitiator = isInitiator
        self.isn = isn
        self.peerSynSeq = peerSynSeq
        self.packetSize = max(packetSize, UTPHeader.size + 150)
        self.mss = self.packetSize - UTPHeader.size
        self.config = config
        sendBuffer = ByteRing(limit: config.sendBufferSize)
        recvBuffer = ByteRing(limit: config.receiveBufferSize)
        rtt = RTTEstimator(minimumRTO: config.minimumRTO, initialRTO: config.initialRTO)
        ledbat = LEDBAT(packetSize: self.packetSize - UTPHeader.size,
                        maxWindow: config.maxPacketsInFlight * self.packetSize)
        // Until the peer's first real header: LT's SYN says 0, which is not a zero window.
        peerWindow = config.receiveBufferSize
        lastSend = now
        nextSeq = isn
        lastAcked = isn &- 1
    }

    /// An outgoing connection; the caller sends the SYN with `sendSyn`.
    static func initiator(recvID: UInt16, isn: UInt16, packetSize: Int, config: UTPConfiguration, now: UInt64) -> UTPConnection {
        var c = UTPConnection(state: .synSent, recvID: recvID, sendID: recvID &+ 1, isInitiator: true, isn: isn,
                              peerSynSeq: 0, packetSize: packetSize, config: config, now: now)
        c.nextSeq = isn &+ 1
        c.lastAcked = isn
        return c
    }

    /// An incoming connection for SYN(connection_id = X, seq_nr = synSeq), promoted when
    /// the peer's first packet after our SYN-ACK arrives.
    static func acceptor(synID: UInt16, synSeq: UInt16, isn: UInt16, packetSize: Int, config: UTPConfiguration,
                         now: UInt64) -> UTPConnection {
        var c = UTPConnection(state: .connected, recvID: synID &+ 1, sendID: synID, isInitiator: false, isn: isn,
                              peerSynSeq: synSeq, packetSize: packetSize, config: config, now: now)
        c.ackNr = synSeq
        return c
    }

    /// Hands the pending signals over (clearing them) with the next deadline, in place.
    mutating func poll() -> (signals: UTPSignals, deadline: UInt64?) {
        let pending = signals
        signals = []
        return (pending, nextDeadline)
    }

    var isClosed: Bool { if case .closed = state { return true } else { return false } }
    var closeReason: UTPCloseReason? { if case .closed(let r) = state { return r } else { return nil } }
    var isConnected: Bool { state == .connected }
    var readableBytes: Int { recvBuffer.count }
    var writableBytes: Int { isClosed || fin != .none ? 0 : sendBuffer.freeSpace }
    /// Written and not yet sent once: what an application's back-pressure should count.
    var unsentBytes: Int { isClosed ? 0 : Int(sendBase &+ UInt64(sendBuffer.count) &- sendNext) }
    var packetsInFlight: Int { Seq.distance(from: lastAcked, to: nextSeq &- 1) }
    /// The application has read everything and the peer sent FIN.
    var isAtEndOfStream: Bool { recvBuffer.isEmpty && (peerFinished || isClosed) }

    var advertisedWindow: Int {
        max(0, config.receiveBufferSize - recvBuffer.count - reorder.bytes)
    }

    var stats: UTPConnectionStats {
        var s = counters
        s.rtt = rtt.rtt
        s.rttVar = rtt.rttVar
        s.rto = rtt.rto
        s.cwnd = ledbat.cwnd
        s.peerWindow = peerWindow
        s.bytesInFlight = bytesInFlight
        s.packetsInFlight = packetsInFlight
        s.queueingDelay = ledbat.queueingDelay
        s.slowStart = ledbat.slowStart
        s.reorderWindow = reorderWindow
        return s
    }

    var nextDeadline: UInt64? {
        switch state {
        case .closed:
            return nil
        case .synSent:
            return rtoDeadline
        case .connected:
            var deadline = lastSend &+ config.keepaliveInterval
            if let r = rtoDeadline, packetsInFlight > 0 { deadline = min(deadline, r) }
            if let p = probeAt, packetsInFlight > 0 { deadline = min(deadline, p) }
            if let z = zeroWindowSince { deadline = min(deadline, z &+ config.zeroWindowProbeDelay) }
            if let f = finAckedAt { deadline = min(deadline, f &+ Self.finLinger) }
            return deadline
        }
    }

    // MARK: - Emitting packets

    @inline(__always)
    private static func timestamp(_ now: UInt64) -> UInt32 {
        let t = UInt32(truncatingIfNeeded: now)
        return t == 0 ? 1 : t
    }

    /// Writes one packet. Every packet carries our ack_nr and, while packets are
    /// buffered out of order, a selective ack, so any of them satisfies a pending ack.
    private mutating func emit(_ type: UTPPacketType, seq: UInt16, ack: UInt16, payloadOffset: Int = 0,
                               payloadLength: Int = 0, now: UInt64, into w: inout UTPPacketWriter) {
        let windowSize = advertisedWindow
        var header = UTPHeader(type: type, connectionID: type == .syn ? recvID : sendID,
                               timestamp: Self.timestamp(now), timestampDifference: replyMicro,
                               windowSize: UInt32(windowSize), seqNr: seq, ackNr: ack)
        if type == .syn { header.timestampDifference = 0 }
        let wantsSack = reorder.count > 0 && type != .syn && type != .reset
        var hasSack = false
        if wantsSack {
            reorder.selectiveAck(ackNr: ackNr, maxBytes: config.maxSelectiveAckBytes, into: &sackScratch)
            hasSack = !sackScratch.isEmpty && UTPHeader.size + 2 + sackScratch.count + payloadLength <= packetSize
        }
        UTPWire.appendHeader(header, firstExtension: hasSack ? UTPExtension.selectiveAck : 0, to: &w.bytes)
        if hasSack {
            w.bytes.append(0)
            w.bytes.append(UInt8(sackScratch.count))
            w.bytes.append(contentsOf: sackScratch)
        }
        if payloadLength > 0 {
            sendBuffer.append(from: payloadOffset, count: payloadLength, to: &w.bytes)
            counters.bytesSent &+= UInt64(payloadLength)
        }
        w.commit()
        lastSend = now
        lastAdvertised = windowSize
        counters.packetsSent += 1
        // Any packet carries ack_nr; with data buffered out of order the ack is only
        // complete with the selective ack.
        if type != .syn && (hasSack || !wantsSack) { ackPending = false }
    }

    mutating func sendSyn(now: UInt64, into w: inout UTPPacketWriter) {
        synSentAt = now
        emit(.syn, seq: isn, ack: 0, now: now, into: &w)
        if rtoDeadline == nil { rtoDeadline = now &+ rtt.rto }
    }

    /// The SYN-ACK: a STATE with seq_nr = our ISN (not incremented) and ack_nr = the SYN's seq_nr.
    static func writeSynAck(synID: UInt16, synSeq: UInt16, isn: UInt16, peerTimestamp: UInt32, window: Int, now: UInt64,
                            into w: inout UTPPacketWriter) {
        let ts = timestamp(now)
        let header = UTPHeader(type: .state, connectionID: synID, timestamp: ts,
                               timestampDifference: peerTimestamp == 0 ? 0 : ts &- peerTimestamp,
                               windowSize: UInt32(window), seqNr: isn, ackNr: synSeq)
        UTPWire.appendHeader(header, firstExtension: 0, to: &w.bytes)
        w.commit()
    }

    /// A RESET answering a packet of no connection we know: its id is the one the
    /// packet carried, which libutp accepts as either of its ids.
    static func writeStrayReset(to header: UTPHeader, now: UInt64, into w: inout UTPPacketWriter) {
        let reset = UTPHeader(type: .reset, connectionID: header.connectionID, timestamp: timestamp(now),
                              seqNr: header.ackNr &+ 1, ackNr: header.seqNr)
        UTPWire.appendHeader(reset, firstExtension: 0, to: &w.bytes)
        w.commit()
    }

    private mutating func sendState(now: UInt64, into w: inout UTPPacketWriter) {
        emit(.state, seq: nextSeq, ack: ackNr, now: now, into: &w)
    }

    // MARK: - Receiving

    /// Handles one datagram already matched to this connection. Data and acks are
    /// absorbed; replies wait for `flush` at the end of the receive batch.
    mutating func receive(_ packet: UTPPacketView, bytes raw: UnsafeRawBufferPointer, now: UInt64) {
        guard !isClosed else { return }
        let h = packet.header
        switch h.type {
        case .reset:
            close(.reset)
            return
        case .syn:
            return
        default:
            break
        }

        if state == .synSent {
            // Only the first SYN-ACK counts; it must ack our SYN.
            guard h.type == .state, h.ackNr == isn else { return }
            state = .connected
            ackNr = h.seqNr &- 1
            signals.insert(.connected)
            // Karn: only an unrepeated SYN gives an RTT sample.
            if timeouts == 0, now >= synSentAt { rtt.add(sample: now &- synSentAt) }
            timeouts = 0
            rtoDeadline = nil
        }

        // The ack must lie in [lastAcked - 4, newest sent]: libutp's rule, with room for
        // a keepalive's ack_nr - 1. Anything else is stale or forged.
        let newest = nextSeq &- 1
        let lowest = lastAcked &- 4
        guard Seq.distance(from: lowest, to: h.ackNr) <= Seq.distance(from: lowest, to: newest) else {
            counters.droppedInvalidAck += 1
            return
        }
        counters.packetsReceived += 1
        peerWindow = Int(h.windowSize)
        if peerWindow > 0 { zeroWindowSince = nil }

        // The network may deliver a datagram twice; a copy has the same send timestamp
        // and must not count as another duplicate ack (three of which resend and cut
        // the window).
        let isCopy = h.timestamp != 0 && h.timestamp == lastPeerTimestamp && h.ackNr == lastPeerAck
        lastPeerTimestamp = h.timestamp
        lastPeerAck = h.ackNr
        if h.timestamp != 0 {
            replyMicro = Self.timestamp(now) &- h.timestamp
            ledbat.addTheirSample(replyMicro, now: now)
        }
        if h.timestampDifference != 0 && h.timestampDifference != 0x7FFF_FFFF {
            ledbat.addOurSample(h.timestampDifference, now: now)
        }

        processAcks(packet, raw, now: now, isCopy: isCopy)

        if h.type == .data || h.type == .fin {
            processData(packet, raw, now: now)
        }
        if fin == .acked && peerFinished && finAcksSent { close(.finished) }
    }

    private mutating func processAcks(_ packet: UTPPacketView, _ raw: UnsafeRawBufferPointer, now: UInt64, isCopy: Bool) {
        let h = packet.header
        var ackedBytes = 0
        var lost = 0
        // One RTT sample per ack, from the most recently sent packet it newly covers:
        // older ones may have waited for a lost ack or a hole and would inflate it.
        var newestSentAt: UInt64?
        if Seq.less(lastAcked, h.ackNr) {
            var seq = lastAcked
            var releaseTo = sendBase
            repeat {
                seq &+= 1
                let e = window[seq]
                if !e.sacked {
                    ackedBytes += Int(e.length)
                    if !e.needResend { bytesInFlight -= Int(e.length) }
                    if e.transmissions == 1 { newestSentAt = max(newestSentAt ?? 0, e.sentAt) } else { checkSpurious(e, now: now) }
                }
                if e.isFin {
                    fin = .acked
                    finAckedAt = now
                }
                if e.length > 0 { releaseTo = e.streamEnd }
                if undersizedInFlight == seq { undersizedInFlight = nil }
                window.clear(seq)
            } while seq != h.ackNr
            lastAcked = h.ackNr
            if releaseTo > sendBase {
                sendBuffer.discard(Int(releaseTo - sendBase))
                sendBase = releaseTo
            }
            dupAcks = 0
            timeouts = 0
            rtoDeadline = packetsInFlight > 0 ? now &+ rtt.rto : nil
            probeSent = false
            probeAt = packetsInFlight > 0 ? probeDeadline(now) : nil
            if inRecovery && !Seq.less(lastAcked, recoverySeq) { inRecovery = false }
            if writeBlocked && sendBuffer.freeSpace > 0 && fin == .none {
                writeBlocked = false
                signals.insert(.writable)
            }
        } else if h.ackNr == lastAcked && h.type == .state && packetsInFlight > 0 && !isCopy && packet.hasSelectiveAck {
            // Only a duplicate ack that reports a hole counts: libtorrent and libutp send a
            // selective ack whenever they hold data out of order, so a bare repeat of the
            // ack was triggered by a duplicated DATA or a window update, not by a loss.
            dupAcks += 1
            counters.duplicateAcks += 1
            // Resend on the third, unless it already went again (early retransmit or a
            // probe) less than a round trip ago.
            let oldest = window[lastAcked &+ 1]
            let roundTrip = rtt.hasSample ? rtt.rtt : rtt.rto
            if dupAcks == 3 && (oldest.transmissions <= 1 || now &- oldest.sentAt >= roundTrip) {
                let seq = lastAcked &+ 1
                if markLost(seq, evenIfSelectivelyAcked: true) {
                    counters.fastRetransmits += 1
                    lost += 1
                }
            }
        }

        // An ack older than one already seen (reordered on the way back) carries a
        // stale picture of what arrived: only the newest ack's selective ack counts.
        if packet.hasSelectiveAck && packetsInFlight > 0 && h.ackNr == lastAcked && !isCopy {
            let (acked, newlyLost, sackedSentAt) = processSelectiveAck(packet, raw, now: now)
            ackedBytes += acked
            lost += newlyLost
            if let t = sackedSentAt { newestSentAt = max(newestSentAt ?? 0, t) }
        }
        if let t = newestSentAt, now >= t { rtt.add(sample: now &- t) }
        if lost > 0 && !inRecovery {
            if ledbat.onLoss(now: now) {
                inRecovery = true
                recoverySeq = nextSeq &- 1
                lostSinceCut = 0
            }
        }
        if lost > 0 {
            let before = lostSinceCut
            lostSinceCut += lost
            if before < LEDBAT.overflowLossPackets && lostSinceCut >= LEDBAT.overflowLossPackets {
                ledbat.onOverflow(now: now)
            }
        }
        if ackedBytes > 0 { ledbat.onAck(bytes: ackedBytes, now: now) }
    }

    /// Bit k acks ack_nr + 2 + k; ack_nr + 1 is implied missing. A packet with at least
    /// three selectively acked packets sent after its last transmission is lost
    /// (libutp and libtorrent both resend then). The walk covers only the bitmask,
    /// never the whole window. Returns the bytes newly acked, the number of packets
    /// newly found lost, and the latest send time among those acked.
    private mutating func processSelectiveAck(_ packet: UTPPacketView, _ raw: UnsafeRawBufferPointer,
                                              now: UInt64) -> (Int, Int, UInt64?) {
        let ack = packet.header.ackNr
        let newest = nextSeq &- 1
        let first = ack &+ 2
        guard Seq.lessOrEqual(first, newest) else { return (0, 0, nil) }
        var newestSentAt: UInt64?
        let bits = min(packet.selectiveAckLength * 8, Seq.distance(from: first, to: newest) + 1)
        var acked = 0
        var lost = 0
        // The three latest send times among selectively acked packets seen so far.
        var top: (UInt64, UInt64, UInt64) = (0, 0, 0)
        var sackedCount = 0
        var k = bits - 1
        while k >= -1 {
            let seq = ack &+ 2 &+ UInt16(truncatingIfNeeded: k)
            guard Seq.less(lastAcked, seq) else { break }
            var e = window[seq]
            if k >= 0 && packet.selectiveAckBit(k, in: raw) {
                if !e.sacked {
                    e.sacked = true
                    acked += Int(e.length)
                    if e.needResend { e.needResend = false } else { bytesInFlight -= Int(e.length) }
                    if e.transmissions == 1 { newestSentAt = max(newestSentAt ?? 0, e.sentAt) } else { checkSpurious(e, now: now) }
                    if undersizedInFlight == seq { undersizedInFlight = nil }
                    window[seq] = e
                }
                sackedCount += 1
                let t = e.sentAt
                if t > top.0 { top = (t, top.0, top.1) } else if t > top.1 { top = (top.0, t, top.1) } else if t > top.2 { top.2 = t }
            } else if !e.sacked, !e.needResend, e.transmissions > 0,
                      (sackedCount >= 3 && top.2 >= e.sentAt) || isEarlyRetransmit(seq, sacked: sackedCount, latest: top.0, e),
                      reorderWindow == 0 || now &- e.sentAt >= rtt.minimum &+ reorderWindow {
                if markLost(seq) { lost += 1 }
            }
            k -= 1
        }
        return (acked, lost, newestSentAt)
    }

    /// Early retransmit (RFC 5827): with fewer than three packets sent after this one,
    /// three selective acks can never come; if every later packet has been selectively
    /// acked and nothing newer is waiting to go, the hole is a loss now rather than
    /// after a 500 ms timeout.
    private func isEarlyRetransmit(_ seq: UInt16, sacked: Int, latest: UInt64, _ e: OutgoingPacket) -> Bool {
        let after = Seq.distance(from: seq, to: nextSeq &- 1)
        guard sacked >= 1, after < 3, sacked == after, latest >= e.sentAt else { return false }
        let unsent = sendBase &+ UInt64(sendBuffer.count) &- sendNext
        return unsent == 0 || bytesInFlight + mss > min(ledbat.cwnd, peerWindow)
    }

    /// An ack for a retransmitted packet sooner after the retransmission than any round
    /// trip has taken acks the original: it was overtaken, not lost. Widen the reorder
    /// window (doubling, up to one smoothed RTT) and take back the window cut.
    private mutating func checkSpurious(_ e: OutgoingPacket, now: UInt64) {
        guard rtt.hasSample, rtt.minimum != .max, now &- e.sentAt < rtt.minimum / 2 else { return }
        counters.spuriousRetransmits += 1
        let floor = max(rtt.minimum / 4, 1_000)
        reorderWindow = min(max(reorderWindow * 2, floor), max(rtt.rtt, floor))
        ledbat.undoLastCut()
    }

    /// A selective ack is advice, not a promise: when the peer keeps asking for a packet
    /// it claimed to have (a reneging or spoofed ack), resend it anyway.
    @discardableResult
    private mutating func markLost(_ seq: UInt16, evenIfSelectivelyAcked: Bool = false) -> Bool {
        guard Seq.less(lastAcked, seq), Seq.less(seq, nextSeq) else { return false }
        var e = window[seq]
        guard e.transmissions > 0, !e.needResend else { return false }
        if e.sacked {
            guard evenIfSelectivelyAcked else { return false }
            e.sacked = false
        } else {
            bytesInFlight -= Int(e.length)
        }
        e.needResend = true
        window[seq] = e
        resendQueue.append(seq)
        return true
    }

    private mutating func processData(_ packet: UTPPacketView, _ raw: UnsafeRawBufferPointer, now: UInt64) {
        let h = packet.header
        ackPending = true
        guard !peerFinished else { return }
        // libtorrent takes a FIN whose seq_nr is the last one already received as in
        // order too (for peers that do not give their FIN a seq_nr of its own).
        if h.type == .fin && h.seqNr == ackNr {
            peerReachedFin()
            return
        }
        let offset = Seq.distance(from: ackNr &+ 1, to: h.seqNr)
        let payload = UnsafeRawBufferPointer(rebasing: raw[packet.payloadOffset ..< packet.payloadOffset + packet.payloadLength])
        if payload.count > largestPeerPayload { largestPeerPayload = payload.count }
        if offset == 0 {
            let wasEmpty = recvBuffer.isEmpty
            if h.type == .fin {
                ackNr = h.seqNr
                peerReachedFin()
            } else {
                // Memory stays within the advertised window even for a peer that ignores it.
                guard recvBuffer.count + reorder.bytes + payload.count <= config.receiveBufferSize else { return }
                recvBuffer.append(payload)
                counters.bytesReceived &+= UInt64(payload.count)
                ackNr = h.seqNr
                drainReorder()
            }
            if (wasEmpty && !recvBuffer.isEmpty) || peerFinished { signals.insert(.readable) }
        } else if offset < reorder.capacity {
            if let finSeq = reorder.finSeq, !Seq.less(h.seqNr, finSeq) { return }
            if h.type == .fin {
                reorder.finSeq = h.seqNr
            } else if !reorder.contains(h.seqNr) {
                // Keep a packet's room free for the hole, so buffering can never wedge.
                let room = config.receiveBufferSize - mss
                guard recvBuffer.count + reorder.bytes + payload.count <= room else { return }
                reorder.insert(h.seqNr, payload: payload)
            } else {
                counters.duplicatePackets += 1
            }
        } else {
            // Already received (our ack was lost) or wildly out of range: re-ack only.
            counters.duplicatePackets += 1
        }
    }

    private mutating func drainReorder() {
        while reorder.count > 0 || reorder.finSeq != nil {
            let next = ackNr &+ 1
            if reorder.finSeq == next {
                ackNr = next
                reorder.finSeq = nil
                peerReachedFin()
                return
            }
            var moved = 0
            let found = reorder.remove(next) { bytes in moved = recvBuffer.append(bytes) }
            guard found else { return }
            counters.bytesReceived &+= UInt64(moved)
            ackNr = next
        }
    }

    /// The peer's FIN is in order. libtorrent 2.0.8 answers with its own FIN at once,
    /// and so do we: nothing still unsent can reach an application that has finished.
    private mutating func peerReachedFin() {
        peerFinished = true
        signals.insert(.readable)
        let unsent = Int(sendBase &+ UInt64(sendBuffer.count) &- sendNext)
        if unsent > 0 { sendBuffer.removeLast(unsent) }
        if fin == .none { fin = .wanted }
    }

    // MARK: - Sending

    /// Sends what the windows allow: retransmissions first, then new data, then a FIN,
    /// then a STATE if an ack is still owed. Called once per receive batch, after
    /// application writes, and on timer ticks.
    mutating func flush(now: UInt64, into w: inout UTPPacketWriter) {
        guard state == .connected else { return }
        if peerFinished && !finAcksSent {
            // libtorrent does not count its FIN in seq_nr, libutp does; each peer drops
            // the ack it finds out of range, so send both.
            finAcksSent = true
            emit(.state, seq: nextSeq, ack: ackNr, now: now, into: &w)
            emit(.state, seq: nextSeq, ack: ackNr &+ 1, now: now, into: &w)
            if fin == .acked {
                close(.finished)
                return
            }
        }
        let limit = min(ledbat.cwnd, peerWindow)

        while resendHead < resendQueue.count {
            let seq = resendQueue[resendHead]
            let e = window[seq]
            guard Seq.less(lastAcked, seq), Seq.less(seq, nextSeq), e.needResend, !e.sacked else {
                resendHead += 1
                continue
            }
            // The oldest packet holds up the whole stream: it goes regardless of the window.
            if seq != lastAcked &+ 1 && bytesInFlight > 0 && bytesInFlight + Int(e.length) > limit {
                ledbat.lastWindowFull = now
                break
            }
            resendHead += 1
            transmit(seq, now: now, into: &w)
        }
        if resendHead == resendQueue.count {
            resendQueue.removeAll(keepingCapacity: true)
            resendHead = 0
        }

        while true {
            let unsent = Int(sendBase &+ UInt64(sendBuffer.count) &- sendNext)
            guard unsent > 0, packetsInFlight < config.maxPacketsInFlight else { break }
            let length = min(mss, unsent)
            if length < mss && undersizedInFlight != nil { break }
            if peerWindow == 0 {
                if bytesInFlight == 0 && zeroWindowSince == nil { zeroWindowSince = now }
                break
            }
            if bytesInFlight > 0 && bytesInFlight + length > limit {
                ledbat.lastWindowFull = now
                break
            }
            let seq = nextSeq
            window.reserve(span: packetsInFlight + 1, first: lastAcked &+ 1)
            nextSeq &+= 1
            sendNext &+= UInt64(length)
            window[seq] = OutgoingPacket(streamEnd: sendNext, sentAt: now, length: Int32(length))
            if length < mss { undersizedInFlight = seq }
            transmit(seq, now: now, into: &w)
        }

        if fin == .wanted && sendNext == sendBase &+ UInt64(sendBuffer.count) && packetsInFlight < config.maxPacketsInFlight {
            let seq = nextSeq
            window.reserve(span: packetsInFlight + 1, first: lastAcked &+ 1)
            nextSeq &+= 1
            window[seq] = OutgoingPacket(streamEnd: sendNext, sentAt: now, length: 0, isFin: true)
            fin = .sent(seq)
            transmit(seq, now: now, into: &w)
            if peerFinished {
                close(.finished)
                return
            }
        }

        if ackPending { sendState(now: now, into: &w) }
    }

    private mutating func transmit(_ seq: UInt16, now: UInt64, into w: inout UTPPacketWriter) {
        var e = window[seq]
        e.transmissions &+= 1
        e.sentAt = now
        e.needResend = false
        window[seq] = e
        bytesInFlight += Int(e.length)
        if e.transmissions > 1 { counters.retransmits += 1 }
        let length = Int(e.length)
        let offset = Int(e.streamEnd &- UInt64(length) &- sendBase)
        emit(e.isFin ? .fin : .data, seq: seq, ack: ackNr, payloadOffset: offset, payloadLength: length, now: now, into: &w)
        if rtoDeadline == nil { rtoDeadline = now &+ rtt.rto }
        if !probeSent { probeAt = probeDeadline(now) }
    }

    /// Two smoothed round trips after `now`, if that comes before the RTO.
    private func probeDeadline(_ now: UInt64) -> UInt64? {
        guard rtt.hasSample else { return nil }
        let at = now &+ max(2 * rtt.rtt, 10_000)
        if let r = rtoDeadline, at >= r { return nil }
        return at
    }

    /// New data if any is waiting (beyond the window: this is a probe), else the newest
    /// packet in flight again.
    private mutating func sendProbe(now: UInt64, into w: inout UTPPacketWriter) {
        probeSent = true
        probeAt = nil
        let unsent = Int(sendBase &+ UInt64(sendBuffer.count) &- sendNext)
        if unsent > 0 && packetsInFlight < config.maxPacketsInFlight && peerWindow > 0 {
            let length = min(mss, unsent)
            let seq = nextSeq
            window.reserve(span: packetsInFlight + 1, first: lastAcked &+ 1)
            nextSeq &+= 1
            sendNext &+= UInt64(length)
            window[seq] = OutgoingPacket(streamEnd: sendNext, sentAt: now, length: Int32(length))
            if length < mss { undersizedInFlight = seq }
            transmit(seq, now: now, into: &w)
            return
        }
        var seq = nextSeq &- 1
        while Seq.less(lastAcked, seq) {
            var e = window[seq]
            if !e.sacked && e.transmissions > 0 {
                if !e.needResend { bytesInFlight -= Int(e.length) }
                e.needResend = true
                window[seq] = e
                transmit(seq, now: now, into: &w)
                return
            }
            seq &-= 1
        }
    }

    // MARK: - Timer

    mutating func tick(now: UInt64, into w: inout UTPPacketWriter) {
        switch state {
        case .closed:
            return
        case .synSent:
            guard let deadline = rtoDeadline, now >= deadline else { return }
            timeouts += 1
            counters.timeouts += 1
            if timeouts >= config.maxConnectTimeouts {
                close(.timedOut)
                return
            }
            emit(.syn, seq: isn, ack: 0, now: now, into: &w)
            rtoDeadline = now &+ min(rtt.rto << UInt64(timeouts), 60_000_000)
        case .connected:
            if let deadline = rtoDeadline, now >= deadline {
                if packetsInFlight > 0 {
                    onTimeout(now: now)
                    if isClosed { return }
                } else {
                    rtoDeadline = nil
                }
            }
            if let p = probeAt, now >= p {
                probeAt = nil
                if packetsInFlight > 0 && !probeSent { sendProbe(now: now, into: &w) }
            }
            if let f = finAckedAt, now &- f >= Self.finLinger {
                // Our FIN is acknowledged and the peer never sent its own.
                close(.finished)
                return
            }
            if let since = zeroWindowSince, now &- since >= config.zeroWindowProbeDelay {
                // The peer's window update may have been lost: pretend one packet fits.
                zeroWindowSince = nil
                peerWindow = mss
            }
            flush(now: now, into: &w)
            if isClosed { return }
            if now &- lastSend >= config.keepaliveInterval {
                // libutp's keepalive: ack_nr - 1, which libtorrent does not count as a duplicate ack.
                emit(.state, seq: nextSeq, ack: ackNr &- 1, now: now, into: &w)
            }
        }
    }

    /// Every unacknowledged packet is presumed lost; the window drops to one packet and
    /// slow start begins again, with the timeout backed off exponentially.
    private mutating func onTimeout(now: UInt64) {
        timeouts += 1
        counters.timeouts += 1
        if timeouts > config.maxTimeouts {
            close(.timedOut)
            return
        }
        ledbat.onTimeout(now: now)
        resendQueue.removeAll(keepingCapacity: true)
        resendHead = 0
        var seq = lastAcked &+ 1
        while seq != nextSeq {
            var e = window[seq]
            // After a timeout, selective acks are forgotten (as TCP does, RFC 2018): a peer
            // that reneged, or a forged ack, must not leave holes nobody resends.
            if e.sacked {
                e.sacked = false
            } else if !e.needResend {
                bytesInFlight -= Int(e.length)
            }
            e.needResend = true
            window[seq] = e
            resendQueue.append(seq)
            seq &+= 1
        }
        dupAcks = 0
        inRecovery = false
        probeSent = true
        probeAt = nil
        rtoDeadline = now &+ min(rtt.rto << UInt64(timeouts), 60_000_000)
    }

    // MARK: - Application

    /// Appends to the send buffer; returns how much fit. Sends right away what the
    /// windows allow.
    mutating func write(_ bytes: UnsafeRawBufferPointer, now: UInt64, into w: inout UTPPacketWriter) -> Int {
        guard !isClosed, fin == .none else { return 0 }
        let taken = sendBuffer.append(bytes)
        if taken < bytes.count { writeBlocked = true }
        if taken > 0 { flush(now: now, into: &w) }
        return taken
    }

    /// Takes up to `max` in-order bytes. If the window had closed to less than one of
    /// the peer's packets (or ours) and this read reopened it, a window-update STATE
    /// goes out at once: libtorrent never probes a zero window.
    mutating func read(max: Int, into out: inout [UInt8], now: UInt64, into w: inout UTPPacketWriter) -> Int {
        let n = recvBuffer.read(max: max, into: &out)
        // Capped so that a peer's oversized datagrams cannot push it past the buffer.
        let packet = Swift.max(mss, Swift.min(largestPeerPayload, config.receiveBufferSize / 4))
        if n > 0 && state == .connected && !peerFinished && lastAdvertised < packet && advertisedWindow >= packet {
            sendState(now: now, into: &w)
        }
        return n
    }

    /// Graceful close: FIN after the buffered data.
    mutating func close(now: UInt64, into w: inout UTPPacketWriter) {
        switch state {
        case .closed:
            return
        case .synSent:
            abort(now: now, into: &w)
        case .connected:
            if fin == .none { fin = .wanted }
            flush(now: now, into: &w)
        }
    }

    /// RESET with our send_id, our ack_nr and our next seq_nr (a random seq fails
    /// libtorrent's window check).
    mutating func abort(now: UInt64, into w: inout UTPPacketWriter) {
        guard !isClosed else { return }
        if state == .connected {
            emit(.reset, seq: nextSeq, ack: ackNr, now: now, into: &w)
        }
        close(.aborted)
    }

    /// Ends the connection. The receive buffer survives so the application can still
    /// read what arrived; everything on the sending side is released.
    mutating func close(_ reason: UTPCloseReason) {
        guard !isClosed else { return }
        state = .closed(reason)
        signals.insert(.closed)
        sendBuffer = ByteRing(limit: 1)
        window = OutgoingWindow(initialCapacity: 1)
        reorder = ReorderBuffer(capacity: 1)
        resendQueue = []
        sackScratch = []
        bytesInFlight = 0
        rtoDeadline = nil
        zeroWindowSince = nil
        probeAt = nil
    }
}
