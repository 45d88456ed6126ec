/// A stable handle for one connection. The generation makes a handle to a released
/// slot harmless: every call on it is a no-op.
public struct UTPConnectionID: Hashable, Sendable, CustomStringConvertible {
    let slot: Int32
    let generation: UInt32
    public var description: String { "utp#\(slot).\(generation)" }
}

/// What the application should do something about.
public enum UTPEvent<Endpoint: Hashable & Sendable>: Sendable, Equatable {
    /// A new incoming connection (its peer has sent DATA after our SYN-ACK).
    case accepted(UTPConnectionID, Endpoint)
    /// An outgoing connection got its SYN-ACK; it is writable.
    case connected(UTPConnectionID)
    /// The receive buffer went from empty to non-empty, or the peer sent FIN.
    case readable(UTPConnectionID)
    /// A write that did not fit has room now.
    case writable(UTPConnectionID)
    /// The connection ended. Bytes already received stay readable until read or released.
    case closed(UTPConnectionID, UTPCloseReason)
}

/// Counters over the whole socket.
public struct UTPMultiplexerStats: Sendable, Equatable {
    public var datagramsReceived = 0
    public var malformed = 0
    public var synsReceived = 0
    public var duplicateSyns = 0
    public var halfOpenEvicted = 0
    /// Connections accepted from a SYN cookie after their half-open entry was gone.
    public var cookiesAccepted = 0
    public var halfOpenExpired = 0
    public var refused = 0
    public var strayPackets = 0
    public var strayResetsSent = 0
    public var resetsIgnored = 0
    public init() {}
}

/// All uTP connections on one UDP socket (BEP 29). Demultiplexes by (endpoint,
/// connection id == our recv_id), answers SYNs, keeps a bounded half-open table,
/// answers strays with RESET, and batches output.
///
/// How the caller drives it, on the loop thread:
/// 1. For each datagram of a recvmmsg batch: `receive(_:from:now:rng:)`.
/// 2. When the batch is drained: `endOfBatch(now:)`: acks and data go out once per batch.
/// 3. `takeDatagrams(into:)` and send them with sendmmsg; `takeEvents(into:)` and handle them.
/// 4. Arm one timer for `nextDeadline`; when it fires, `tick(now:)` then step 3.
/// Application calls (`write`, `read`, `close`, `abort`, `connect`) may emit datagrams
/// and events too: flush after them as in step 3.
public struct UTPMultiplexer<Endpoint: Hashable & Sendable> {
    struct Key: Hashable {
        var endpoint: Endpoint
        var id: UInt16
    }

    /// Per-slot bookkeeping. Kept apart from the endpoints so that, even where this
    /// generic type is not specialised for the caller's endpoint, the per-packet path
    /// touches only concrete types (no value-witness copies of a whole slot).
    struct SlotMeta {
        var generation: UInt32 = 0
        var occupied = false
        var dirty = false
        var registered = false
        /// The connection's next timer deadline as of its last event.
        var deadline: UInt64?
    }

    /// A SYN we answered whose peer has not yet sent anything else. Tiny on purpose:
    /// buffers are allocated only at promotion, so a SYN flood costs a bounded table.
    struct HalfOpen {
        var synSeq: UInt16
        var isn: UInt16
        var packetSize: Int
        var created: UInt64
        var serial: UInt64
        var peerTimestamp: UInt32
    }

    public let configuration: UTPConfiguration
    private let packetSizeFor: (Endpoint) -> Int

    private var connections: [UTPConnection?] = []
    private var slotEndpoints: [Endpoint?] = []
    private var meta: [SlotMeta] = []
    private var freeSlots: [Int] = []
    private var byKey: [Key: Int] = [:]
    private var halfOpen: [Key: HalfOpen] = [:]
    private var halfOpenOrder: [(key: Key, serial: UInt64)] = []
    private var halfOpenHead = 0
    private var halfOpenSerial: UInt64 = 0
    private var dirtySlots: [Int] = []
    private var out = UTPDatagramBatch<Endpoint>()
    private var events: [UTPEvent<Endpoint>] = []
    private var cachedDeadline: UInt64?
    private var strayTokens = 0
    private var strayWindowStart: UInt64 = 0
    private var strayWindowStarted = false
    private var liveCount = 0
    /// Secret for SYN cookies, drawn from the caller's rng at the first SYN.
    private var cookieKey: UInt64?
    /// Counters of connections that closed on their own, kept until `takeFinalStats`:
    /// the slot may be freed before the application sees `.closed`.
    private var finalStats: [UTPConnectionID: UTPConnectionStats] = [:]
    public private(set) var stats = UTPMultiplexerStats()

    /// `packetSize` gives the UDP payload limit toward an endpoint: 1402 for IPv4,
    /// 1232 for IPv6 (the endpoint type is the caller's, so only it knows the family).
    public init(configuration: UTPConfiguration = UTPConfiguration(), packetSize: @escaping (Endpoint) -> Int = { _ in 1402 }) {
        self.configuration = configuration
        self.packetSizeFor = packetSize
    }

    // MARK: - Queries

    /// Established (and closing) connections.
    public var connectionCount: Int { liveCount }
    public var halfOpenCount: Int { halfOpen.count }
    /// Datagrams waiting for `takeDatagrams`.
    public var pendingDatagrams: UTPDatagramBatch<Endpoint> { out }
    public var pendingEventCount: Int { events.count }

    /// When to call `tick` next, or nil if nothing is scheduled.
    public var nextDeadline: UInt64? { cachedDeadline }

    public func stats(of id: UTPConnectionID) -> UTPConnectionStats? { slotIndex(id).flatMap { connections[$0]?.stats } }
    public func endpoint(of id: UTPConnectionID) -> Endpoint? { slotIndex(id).flatMap { slotEndpoints[$0] } }
    public func readableBytes(_ id: UTPConnectionID) -> Int { slotIndex(id).flatMap { connections[$0]?.readableBytes } ?? 0 }
    public func writableBytes(_ id: UTPConnectionID) -> Int { slotIndex(id).flatMap { connections[$0]?.writableBytes } ?? 0 }
    /// Bytes written and not yet sent (those in flight do not count).
    public func unsentBytes(_ id: UTPConnectionID) -> Int { slotIndex(id).flatMap { connections[$0]?.unsentBytes } ?? 0 }
    public func isConnected(_ id: UTPConnectionID) -> Bool { slotIndex(id).flatMap { connections[$0]?.isConnected } ?? false }
    /// True once the peer's FIN has been read past (or the connection is gone) and nothing is left to read.
    public func isAtEndOfStream(_ id: UTPConnectionID) -> Bool { slotIndex(id).flatMap { connections[$0]?.isAtEndOfStream } ?? true }
    public func closeReason(_ id: UTPConnectionID) -> UTPCloseReason? { slotIndex(id).flatMap { connections[$0]?.closeReason } }

    // MARK: - Output

    /// Hands over the datagrams to send, swapping buffers so neither side reallocates:
    /// pass the batch back (after sending) the next time.
    public mutating func takeDatagrams(into batch: inout UTPDatagramBatch<Endpoint>) {
        batch.removeAll()
        swap(&batch, &out)
    }

    public mutating func takeEvents(into list: inout [UTPEvent<Endpoint>]) {
        list.removeAll(keepingCapacity: true)
        swap(&list, &events)
    }

    public mutating func takeEvents() -> [UTPEvent<Endpoint>] {
        defer { events.removeAll(keepingCapacity: true) }
        return events
    }

    /// When true, each `.closed` event leaves the connection's last counters for
    /// `takeFinalStats` (for a log line); the caller must take them.
    public var keepsFinalStats = false

    /// The counters of a connection as it closed (see `keepsFinalStats`), once.
    public mutating func takeFinalStats(_ id: UTPConnectionID) -> UTPConnectionStats? {
        finalStats.removeValue(forKey: id)
    }

    // MARK: - Connections

    /// Opens a connection: picks a recv_id unused toward `endpoint` and an ISN from
    /// `rng`, and queues the SYN. `.connected` follows when the SYN-ACK arrives.
    /// Returns nil when the connection limit is reached.
    public mutating func connect(to endpoint: Endpoint, now: UInt64, packetSize: Int? = nil,
                                 rng: inout some RandomNumberGenerator) -> UTPConnectionID? {
        guard liveCount < configuration.maxConnections else { return nil }
        var recvID: UInt16 = 0
        var found = false
        for _ in 0 ..< 64 {
            recvID = UInt16.random(in: .min ... .max, using: &rng)
            // Our recv_id must be free, and so must the id an acceptor there would use.
            let key = Key(endpoint: endpoint, id: recvID)
            if byKey[key] == nil && halfOpen[key] == nil {
                found = true
                break
            }
        }
        guard found else { return nil }
        let isn = UInt16.random(in: .min ... .max, using: &rng)
        let connection = UTPConnection.initiator(recvID: recvID, isn: isn, packetSize: packetSize ?? packetSizeFor(endpoint),
                                                 config: configuration, now: now)
        let slot = allocate(connection, endpoint: endpoint)
        withConnection(slot) { c, w in c.sendSyn(now: now, into: &w) }
        return id(of: slot)
    }

    /// Appends to the send buffer; returns how many bytes were taken (the rest waits for `.writable`).
    public mutating func write(_ id: UTPConnectionID, _ bytes: UnsafeRawBufferPointer, now: UInt64) -> Int {
        guard let slot = slotIndex(id) else { return 0 }
        return withConnection(slot) { c, w in c.write(bytes, now: now, into: &w) }
    }

    public mutating func write(_ id: UTPConnectionID, _ bytes: [UInt8], now: UInt64) -> Int {
        bytes.withUnsafeBytes { write(id, $0, now: now) }
    }

    /// Moves up to `maxBytes` of in-order data to the end of `buffer`; returns the count.
    /// Reading is the download throttle: unread data shrinks the advertised window.
    public mutating func read(_ id: UTPConnectionID, maxBytes: Int, into buffer: inout [UInt8], now: UInt64) -> Int {
        guard let slot = slotIndex(id), maxBytes > 0 else { return 0 }
        var drainedAfterClose = false
        let n = withConnection(slot) { c, w in
            let n = c.read(max: maxBytes, into: &buffer, now: now, into: &w)
            drainedAfterClose = c.isClosed && c.readableBytes == 0
            return n
        }
        if drainedAfterClose && meta[slot].occupied { free(slot) }
        return n
    }

    public mutating func read(_ id: UTPConnectionID, maxBytes: Int, now: UInt64) -> [UInt8] {
        var buffer: [UInt8] = []
        _ = read(id, maxBytes: maxBytes, into: &buffer, now: now)
        return buffer
    }

    /// Graceful close: FIN after everything written so far. `.closed(.finished)` follows.
    public mutating func close(_ id: UTPConnectionID, now: UInt64) {
        guard let slot = slotIndex(id) else { return }
        withConnection(slot) { c, w in c.close(now: now, into: &w) }
    }

    /// Immediate close with RESET. `.closed(.aborted)` follows.
    public mutating func abort(_ id: UTPConnectionID, now: UInt64) {
        guard let slot = slotIndex(id) else { return }
        withConnection(slot) { c, w in c.abort(now: now, into: &w) }
    }

    /// Forgets a connection at once (aborting it if still open), unread data included.
    public mutating func release(_ id: UTPConnectionID, now: UInt64) {
        guard let slot = slotIndex(id) else { return }
        if connections[slot]!.isClosed == false {
            withConnection(slot) { c, w in c.abort(now: now, into: &w) }
            // The application asked for it; it needs no closed event.
            if case .closed(id, _)? = events.last { events.removeLast() }
        }
        finalStats[id] = nil
        free(slot)
    }

    // MARK: - Input

    @discardableResult
    public mutating func receive(_ datagram: [UInt8], from endpoint: Endpoint, now: UInt64,
                                 rng: inout some RandomNumberGenerator) -> Bool {
        datagram.withUnsafeBytes { receive($0, from: endpoint, now: now, rng: &rng) }
    }

    /// One received datagram. Replies other than SYN-ACKs and RESETs wait for
    /// `endOfBatch`. Returns false when the datagram is not valid uTP (it was dropped).
    /// `rng` is used only to answer a new SYN (its ISN).
    @discardableResult
    public mutating func receive(_ datagram: UnsafeRawBufferPointer, from endpoint: Endpoint, now: UInt64,
                                 rng: inout some RandomNumberGenerator) -> Bool {
        stats.datagramsReceived += 1
        let packet: UTPPacketView
        do {
            packet = try UTPPacketView.parse(datagram)
        } catch {
            stats.malformed += 1
            return false
        }
        let h = packet.header
        switch h.type {
        case .syn:
            handleSyn(packet, from: endpoint, now: now, rng: &rng)
        case .reset:
            handleReset(h, from: endpoint)
        case .data, .fin, .state:
            let key = Key(endpoint: endpoint, id: h.connectionID)
            if let slot = byKey[key] {
                deliver(packet, datagram, to: slot, now: now)
            } else if let pending = halfOpen.removeValue(forKey: key) {
                let slot = promote(pending, key: key, now: now)
                deliver(packet, datagram, to: slot, now: now)
            } else if h.type == .data, let pending = acceptCookie(h, from: endpoint, now: now) {
                // A SYN flood pushed this peer's half-open entry out (or it expired) before
                // its DATA arrived; the ISN we sent is a cookie, so the DATA proves the handshake.
                stats.cookiesAccepted += 1
                let slot = promote(pending, key: key, now: now)
                deliver(packet, datagram, to: slot, now: now)
            } else {
                stats.strayPackets += 1
                sendStrayReset(h, to: endpoint, now: now)
            }
        }
        return true
    }

    /// The receive batch is drained: each connection that got packets sends its data
    /// and at most one ack now.
    public mutating func endOfBatch(now: UInt64) {
        var i = 0
        while i < dirtySlots.count {
            let slot = dirtySlots[i]
            i += 1
            meta[slot].dirty = false
            guard meta[slot].occupied else { continue }
            withConnection(slot) { c, w in c.flush(now: now, into: &w) }
        }
        dirtySlots.removeAll(keepingCapacity: true)
    }

    /// Timers: retransmission, keepalive, zero-window probe, connect retries, half-open expiry.
    public mutating func tick(now: UInt64) {
        endOfBatch(now: now)
        var earliest: UInt64?
        for slot in meta.indices where meta[slot].occupied {
            if let d = meta[slot].deadline, d <= now {
                withConnection(slot) { c, w in c.tick(now: now, into: &w) }
            }
            if meta[slot].occupied, let d = meta[slot].deadline { earliest = min(earliest ?? d, d) }
        }
        expireHalfOpen(now: now)
        if let oldest = oldestHalfOpen {
            let d = oldest.created &+ configuration.halfOpenTimeout
            earliest = min(earliest ?? d, d)
        }
        cachedDeadline = earliest
    }

    // MARK: - Internals

    private func slotIndex(_ id: UTPConnectionID) -> Int? {
        let slot = Int(id.slot)
        guard slot >= 0, slot < connections.count, meta[slot].generation == id.generation,
              meta[slot].occupied else { return nil }
        return slot
    }

    private func id(of slot: Int) -> UTPConnectionID {
        UTPConnectionID(slot: Int32(slot), generation: meta[slot].generation)
    }

    private mutating func allocate(_ connection: UTPConnection, endpoint: Endpoint) -> Int {
        let slot: Int
        if let reused = freeSlots.popLast() {
            slot = reused
        } else {
            slot = connections.count
            connections.append(nil)
            slotEndpoints.append(nil)
            meta.append(SlotMeta())
        }
        connections[slot] = connection
        slotEndpoints[slot] = endpoint
        meta[slot].occupied = true
        meta[slot].registered = true
        meta[slot].deadline = nil
        byKey[Key(endpoint: endpoint, id: connection.recvID)] = slot
        liveCount += 1
        return slot
    }

    private mutating func unregister(_ slot: Int) {
        guard meta[slot].registered, let endpoint = slotEndpoints[slot], let recvID = connections[slot]?.recvID else { return }
        meta[slot].registered = false
        let key = Key(endpoint: endpoint, id: recvID)
        if byKey[key] == slot { byKey[key] = nil }
        liveCount -= 1
    }

    private mutating func free(_ slot: Int) {
        // `release` aborts first, and the abort's close may already have freed the slot;
        // a second free would put it on the free list twice and alias two connections.
        guard meta[slot].occupied else { return }
        unregister(slot)
        connections[slot] = nil
        slotEndpoints[slot] = nil
        meta[slot].occupied = false
        meta[slot].deadline = nil
        meta[slot].generation &+= 1
        freeSlots.append(slot)
    }

    /// Runs `body` on a connection with the output batch, then turns its signals into events.
    @discardableResult
    private mutating func withConnection<R>(_ slot: Int, _ body: (inout UTPConnection, inout UTPPacketWriter) -> R) -> R {
        var writer = out.takeWriter()
        let result = body(&connections[slot]!, &writer)
        out.restore(writer, endpoint: slotEndpoints[slot]!)
        collect(slot)
        return result
    }

    /// Takes the connection's signals in place (never copying it out, which would cost
    /// reference counting on all its buffers per packet) and turns them into events.
    private mutating func collect(_ slot: Int) {
        guard meta[slot].occupied else { return }
        let (signals, deadline) = connections[slot]!.poll()
        meta[slot].deadline = deadline
        if let d = deadline { cachedDeadline = min(cachedDeadline ?? d, d) }
        guard !signals.isEmpty else { return }
        let id = id(of: slot)
        if signals.contains(.connected) { events.append(.connected(id)) }
        if signals.contains(.readable) { events.append(.readable(id)) }
        if signals.contains(.writable) { events.append(.writable(id)) }
        if signals.contains(.closed), let reason = connections[slot]!.closeReason {
            events.append(.closed(id, reason))
            if keepsFinalStats { finalStats[id] = connections[slot]!.stats }
            unregister(slot)
            if connections[slot]!.readableBytes == 0 { free(slot) }
        }
    }

    private mutating func deliver(_ packet: UTPPacketView, _ raw: UnsafeRawBufferPointer, to slot: Int, now: UInt64) {
        connections[slot]!.receive(packet, bytes: raw, now: now)
        collect(slot)
        if meta[slot].occupied && !meta[slot].dirty {
            meta[slot].dirty = true
            dirtySlots.append(slot)
        }
    }

    private mutating func handleSyn(_ packet: UTPPacketView, from endpoint: Endpoint, now: UInt64,
                                    rng: inout some RandomNumberGenerator) {
        stats.synsReceived += 1
        let h = packet.header
        let key = Key(endpoint: endpoint, id: h.connectionID &+ 1)
        if byKey[key] != nil {
            // Already promoted: the peer has our SYN-ACK (it sent data), so this is stale.
            stats.duplicateSyns += 1
            return
        }
        if let pending = halfOpen[key] {
            stats.duplicateSyns += 1
            // The same SYN again: the same SYN-ACK again, never a second connection.
            if pending.synSeq == h.seqNr {
                writeSynAck(key: key, pending, peerTimestamp: h.timestamp, now: now)
            }
            return
        }
        guard liveCount + halfOpen.count < configuration.maxConnections else {
            stats.refused += 1
            sendStrayReset(h, to: endpoint, now: now)
            return
        }
        while halfOpen.count >= max(configuration.maxHalfOpen, 1) {
            guard evictOldestHalfOpen() else { break }
            stats.halfOpenEvicted += 1
        }
        halfOpenSerial += 1
        // Under a SYN flood (the table half full) the ISN is a cookie, so that a peer whose
        // entry the flood pushes out is still accepted by its first DATA. Otherwise random.
        let isn: UInt16
        if halfOpen.count >= max(configuration.maxHalfOpen, 1) / 2 {
            if cookieKey == nil { cookieKey = UInt64.random(in: .min ... .max, using: &rng) }
            isn = cookie(endpoint: endpoint, synID: h.connectionID, synSeq: h.seqNr, slot: now >> Self.cookieSlotShift)
        } else {
            isn = UInt16.random(in: .min ... .max, using: &rng)
        }
        let pending = HalfOpen(synSeq: h.seqNr, isn: isn,
                               packetSize: packetSizeFor(endpoint), created: now, serial: halfOpenSerial,
                               peerTimestamp: h.timestamp)
        halfOpen[key] = pending
        halfOpenOrder.append((key, halfOpenSerial))
        compactHalfOpenOrder()
        writeSynAck(key: key, pending, peerTimestamp: h.timestamp, now: now)
        let d = now &+ configuration.halfOpenTimeout
        cachedDeadline = min(cachedDeadline ?? d, d)
    }

    private mutating func writeSynAck(key: Key, _ pending: HalfOpen, peerTimestamp: UInt32, now: UInt64) {
        var writer = out.takeWriter()
        UTPConnection.writeSynAck(synID: key.id &- 1, synSeq: pending.synSeq, isn: pending.isn, peerTimestamp: peerTimestamp,
                                  window: configuration.receiveBufferSize, now: now, into: &writer)
        out.restore(writer, endpoint: key.endpoint)
    }

    private mutating func promote(_ pending: HalfOpen, key: Key, now: UInt64) -> Int {
        let connection = UTPConnection.acceptor(synID: key.id &- 1, synSeq: pending.synSeq, isn: pending.isn,
                                                packetSize: pending.packetSize, config: configuration, now: now)
        let slot = allocate(connection, endpoint: key.endpoint)
        events.append(.accepted(id(of: slot), key.endpoint))
        return slot
    }

    /// A cookie is valid in the time slot of its SYN and the next (33.5 s slots): longer
    /// than the half-open timeout, short enough that old ISNs do not open connections.
    static var cookieSlotShift: UInt64 { 25 }

    /// Our ISN for a SYN: a keyed hash of the SYN, so that the first DATA can be checked
    /// without state (TCP's SYN cookies), with the random key keeping it unguessable.
    private func cookie(endpoint: Endpoint, synID: UInt16, synSeq: UInt16, slot: UInt64) -> UInt16 {
        var hasher = Hasher()
        hasher.combine(cookieKey ?? 0)
        hasher.combine(endpoint)
        hasher.combine(synID)
        hasher.combine(synSeq)
        hasher.combine(slot)
        return UInt16(truncatingIfNeeded: hasher.finalize())
    }

    /// The half-open state a DATA packet proves: it acks our cookie ISN - 1 (the
    /// initiator's ack of a SYN-ACK) and its seq_nr is one of the first few after its
    /// SYN (earlier DATA may have been lost). Nil when it proves nothing.
    private mutating func acceptCookie(_ h: UTPHeader, from endpoint: Endpoint, now: UInt64) -> HalfOpen? {
        guard cookieKey != nil, liveCount < configuration.maxConnections else { return nil }
        let synID = h.connectionID &- 1
        let isn = h.ackNr &+ 1
        let currentSlot = now >> Self.cookieSlotShift
        for slot in [currentSlot, currentSlot &- 1] {
            for back in 1 ... 4 as ClosedRange<UInt16> {
                let synSeq = h.seqNr &- back
                if cookie(endpoint: endpoint, synID: synID, synSeq: synSeq, slot: slot) == isn {
                    halfOpenSerial += 1
                    return HalfOpen(synSeq: synSeq, isn: isn, packetSize: packetSizeFor(endpoint), created: now,
                                    serial: halfOpenSerial, peerTimestamp: h.timestamp)
                }
            }
        }
        return nil
    }

    /// libutp accepts a RESET carrying either of its ids; so do we, from that endpoint only.
    private mutating func handleReset(_ h: UTPHeader, from endpoint: Endpoint) {
        let id = h.connectionID
        for candidate in [id, id &- 1, id &+ 1] {
            let key = Key(endpoint: endpoint, id: candidate)
            if let slot = byKey[key], connections[slot]?.recvID == id || connections[slot]?.sendID == id {
                connections[slot]!.close(.reset)
                collect(slot)
                return
            }
            if candidate != id &- 1, halfOpen.removeValue(forKey: key) != nil { return }
        }
        stats.resetsIgnored += 1
    }

    /// Rate-limited, and never in answer to a RESET, so two stacks cannot ping-pong.
    private mutating func sendStrayReset(_ h: UTPHeader, to endpoint: Endpoint, now: UInt64) {
        if !strayWindowStarted || now &- strayWindowStart >= 1_000_000 {
            strayWindowStarted = true
            strayWindowStart = now
            strayTokens = configuration.strayResetsPerSecond
        }
        guard strayTokens > 0 else { return }
        strayTokens -= 1
        stats.strayResetsSent += 1
        var writer = out.takeWriter()
        UTPConnection.writeStrayReset(to: h, now: now, into: &writer)
        out.restore(writer, endpoint: endpoint)
    }

    private var oldestHalfOpen: HalfOpen? {
        var i = halfOpenHead
        while i < halfOpenOrder.count {
            let entry = halfOpenOrder[i]
            if let pending = halfOpen[entry.key], pending.serial == entry.serial { return pending }
            i += 1
        }
        return nil
    }

    private mutating func evictOldestHalfOpen() -> Bool {
        while halfOpenHead < halfOpenOrder.count {
            let entry = halfOpenOrder[halfOpenHead]
            halfOpenHead += 1
            if let pending = halfOpen[entry.key], pending.serial == entry.serial {
                halfOpen[entry.key] = nil
                return true
            }
        }
        return false
    }

    private mutating func expireHalfOpen(now: UInt64) {
        while halfOpenHead < halfOpenOrder.count {
            let entry = halfOpenOrder[halfOpenHead]
            if let pending = halfOpen[entry.key], pending.serial == entry.serial {
                guard now &- pending.created >= configuration.halfOpenTimeout else { break }
                halfOpen[entry.key] = nil
                stats.halfOpenExpired += 1
            }
            halfOpenHead += 1
        }
        compactHalfOpenOrder()
    }

    /// Promoted and reset entries leave stale order records; drop them so the order
    /// list stays within a small multiple of the table.
    private mutating func compactHalfOpenOrder() {
        if halfOpenHead == halfOpenOrder.count {
            halfOpenOrder.removeAll(keepingCapacity: true)
            halfOpenHead = 0
            return
        }
        let live = halfOpenOrder.count - halfOpenHead
        guard live > 2 * max(configuration.maxHalfOpen, 16) || halfOpenHead > 4096 else { return }
        var kept: [(key: Key, serial: UInt64)] = []
        kept.reserveCapacity(halfOpen.count)
        for i in halfOpenHead ..< halfOpenOrder.count {
            let entry = halfOpenOrder[i]
            if let pending = halfOpen[entry.key], pending.serial == entry.serial { kept.append(entry) }
        }
        halfOpenOrder = kept
        halfOpenHead = 0
    }
}
