import EventLoop
import Logging
import UTP

/// uTP (BEP 29) on the shared UDP port: owns the multiplexer and its one timer, feeds
/// it the port's uTP datagrams, sends what it produces through the port, and turns its
/// events into `UTPStream` delegate calls. New incoming connections go to
/// `onAccept`, which hands them to the peer server. Loop-owned.
///
/// Output is batched: datagrams produced while handling a receive batch go out with
/// the port's flush after it; those produced by application calls (a block batch
/// written from a disk completion) go out at the next loop iteration, so several
/// writes in one iteration share `sendmmsg` calls.
final class UTPService {
    private var mux: UTPMultiplexer<SocketAddress>
    private unowned let port: UDPPort
    private unowned let loop: EventLoop
    private let logger: Logger
    private var streams: [UTPConnectionID: UTPStream] = [:]
    /// Streams waiting for room, checked after each receive batch and timer pass.
    private var roomWatchers: [UTPStream] = []
    /// Streams with deferred delegate work (readable again, end of stream).
    private var soonStreams: [UTPStream] = []
    private var deadlineTimer: Timer?
    private var armedDeadline: UInt64?
    private var soonTimer: Timer?
    private var soonScheduled = false
    private var settling = false
    private var batchNow: UInt64?
    private var rng = SystemRandomNumberGenerator()
    private var spare = UTPDatagramBatch<SocketAddress>()
    private var readScratch: [UInt8] = []
    private var stopped = false

    /// A new incoming connection; return false to refuse it (it is reset).
    var onAccept: (UTPStream) -> Bool = { _ in false }

    /// Totals of streams that have closed; live streams are added on demand.
    private var closedRetransmits: Int64 = 0
    private var closedUploaded: Int64 = 0

    /// The multiplexer's defaults, but a 2 MiB send buffer: it holds the bytes in flight
    /// (up to about 670 KB at 480 packets) as well as the unsent ones, and the peer
    /// connection keeps up to about 1 MiB unsent. With 1 MiB most block batches did not
    /// fit and took a second copy through the stream's queue (perf: 15 % of the loop).
    /// The ring grows on demand, so slow peers do not pay for it.
    static var defaultConfiguration: UTPConfiguration {
        var configuration = UTPConfiguration()
        configuration.sendBufferSize = 2 << 20
        return configuration
    }

    init(loop: EventLoop, port: UDPPort, logger: Logger, configuration: UTPConfiguration = UTPService.defaultConfiguration) {
        self.loop = loop
        self.port = port
        self.logger = logger
        mux = UTPMultiplexer(configuration: configuration, packetSize: { $0.isIPv4 ? 1402 : 1232 })
        mux.keepsFinalStats = true
        readScratch.reserveCapacity(1 << 16)
        // One-shot events re-armed as needed; created far in the future, then scheduled.
        deadlineTimer = Timer(loop: loop, after: 3_600_000_000) { [unowned self] in self.deadlineFired() }
        soonTimer = Timer(loop: loop, after: 3_600_000_000) { [unowned self] in self.soonFired() }
        port.onUTP = { [unowned self] bytes, source in self.receive(bytes, from: source) }
        port.onDrained = { [unowned self] in self.drained() }
    }

    // MARK: Status

    var connectionCount: Int { mux.connectionCount }
    var streamCount: Int { streams.count }

    /// uTP packets sent again after a loss or timeout, over all connections so far.
    var retransmits: Int64 {
        var total = closedRetransmits
        for id in streams.keys { total += Int64(mux.stats(of: id)?.retransmits ?? 0) }
        return total
    }

    /// Piece payload sent to peers over uTP so far.
    var uploadedBytes: Int64 {
        closedUploaded + streams.values.reduce(Int64(0)) { $0 + ((($1.delegate as? PeerConnection)?.uploaded) ?? 0) }
    }

    var multiplexerStats: UTPMultiplexerStats { mux.stats }

    // MARK: Connections

    /// Starts an outgoing connection; nil when the multiplexer is full. The stream's
    /// delegate hears `transportConnected` or, after the connect timeout,
    /// `transportClosed`.
    func connect(to address: SocketAddress) -> UTPStream? {
        guard !stopped, address.isIPv4 ? port.hasIPv4 : port.hasIPv6 else { return nil }
        guard let id = mux.connect(to: address, now: EventLoop.now(), rng: &rng) else { return nil }
        let stream = UTPStream(id: id, remote: address, service: self, outgoing: true)
        streams[id] = stream
        scheduleSoon(nil)
        return stream
    }

    /// Closes every connection (FIN) and stops taking new ones.
    func stop() {
        stopped = true
        for stream in Array(streams.values) { stream.close() }
    }

    // MARK: Calls from streams

    func write(_ id: UTPConnectionID, _ bytes: UnsafeRawBufferPointer) -> Int {
        let taken = mux.write(id, bytes, now: EventLoop.now())
        scheduleSoon(nil)
        return taken
    }

    func unsentBytes(_ id: UTPConnectionID) -> Int { mux.unsentBytes(id) }
    func readableBytes(_ id: UTPConnectionID) -> Int { mux.readableBytes(id) }
    func isAtEndOfStream(_ id: UTPConnectionID) -> Bool { mux.isAtEndOfStream(id) }

    /// Hands everything readable to `body` in one chunk (reading may send a window
    /// update).
    func read(_ id: UTPConnectionID, _ body: (UnsafeRawBufferPointer) -> Void) {
        readScratch.removeAll(keepingCapacity: true)
        let n = mux.read(id, maxBytes: Int.max, into: &readScratch, now: EventLoop.now())
        guard n > 0 else { return }
        readScratch.withUnsafeBytes { body($0) }
        scheduleSoon(nil)
    }

    /// Our side closed the stream: FIN after what is already written (the multiplexer
    /// keeps the connection until the FIN is acknowledged or times out).
    func streamClosed(_ stream: UTPStream) {
        guard streams.removeValue(forKey: stream.id) != nil else { return }
        // Reading the last bytes of a connection the peer ended frees its slot: its
        // counters are then the ones kept at close.
        account(stream, stats: mux.stats(of: stream.id) ?? stream.finalStats ?? mux.takeFinalStats(stream.id), reason: "closed by us")
        mux.close(stream.id, now: EventLoop.now())
        scheduleSoon(nil)
    }

    func watchRoom(_ stream: UTPStream) {
        roomWatchers.append(stream)
    }

    /// Runs deferred work (and sends pending datagrams) at the next loop iteration.
    func scheduleSoon(_ stream: UTPStream?) {
        if let stream { soonStreams.append(stream) }
        guard !soonScheduled else { return }
        soonScheduled = true
        soonTimer?.schedule(after: 0)
    }

    // MARK: Driving the multiplexer


    private func receive(_ bytes: UnsafeRawBufferPointer, from source: SocketAddress) {
        guard !stopped else { return }
        let now: UInt64
        if let batchNow { now = batchNow } else {
            now = EventLoop.now()
            batchNow = now
        }
        mux.receive(bytes, from: source, now: now, rng: &rng)
    }

    /// The port's receive batch is drained: deferred acks and data go out now, before
    /// the port flushes its socket.
    private func drained() {
        guard let now = batchNow else { return }
        batchNow = nil
        mux.endOfBatch(now: now)
        settle()
    }

    private func deadlineFired() {
        armedDeadline = nil
        mux.tick(now: EventLoop.now())
        settle()
        port.flush()
    }

    private func soonFired() {
        soonScheduled = false
        let work = soonStreams
        soonStreams.removeAll(keepingCapacity: true)
        for stream in work where stream.isOpen && streams[stream.id] === stream {
            if stream.pendingReadable {
                stream.pendingReadable = false
                if stream.reading { stream.delegate?.transportReadable(stream) }
            }
            if stream.pendingEndOfStream && stream.isOpen {
                stream.pendingEndOfStream = false
                finish(stream, reason: "peer closed the connection", stats: mux.stats(of: stream.id))
                mux.release(stream.id, now: EventLoop.now())
            }
        }
        settle()
        port.flush()
    }

    /// Handles events until none are left, tells streams about room, sends the
    /// datagrams and re-arms the timer. Delegate calls made here can produce more
    /// events and datagrams; a nested call leaves them to the outer loop.
    private func settle() {
        guard !settling else { return }
        settling = true
        defer { settling = false }
        var rounds = 0
        repeat {
            var events = mux.takeEvents()
            for event in events { handle(event) }
            events.removeAll()
            notifyRoom()
            rounds += 1
        } while mux.pendingEventCount > 0 && rounds < 16
        mux.takeDatagrams(into: &spare)
        let port = self.port
        spare.forEachRun { destination, raw, start, ends in port.send(run: raw, start: start, ends: ends, to: destination) }
        armTimer()
    }

    private func handle(_ event: UTPEvent<SocketAddress>) {
        switch event {
        case .accepted(let id, let endpoint):
            guard !stopped else { return mux.abort(id, now: EventLoop.now()) }
            let stream = UTPStream(id: id, remote: endpoint, service: self, outgoing: false)
            streams[id] = stream
            if !onAccept(stream) {
                streams[id] = nil
                stream.detach()
                mux.abort(id, now: EventLoop.now())
            }
        case .connected(let id):
            guard let stream = streams[id] else { return }
            stream.everConnected = true
            stream.delegate?.transportConnected(stream)
        case .readable(let id):
            guard let stream = streams[id] else {
                // Closed by us: nobody reads this any more, so it must not hold the window shut.
                readScratch.removeAll(keepingCapacity: true)
                _ = mux.read(id, maxBytes: Int.max, into: &readScratch, now: EventLoop.now())
                return
            }
            if stream.reading { stream.delegate?.transportReadable(stream) }
        case .writable(let id):
            guard let stream = streams[id] else { return }
            stream.pushPending()
            if stream.queuedBytes == 0 || stream.outputLength < UTPStream.lowWatermark {
                stream.wantsRoom = false
                stream.delegate?.transportWritable(stream)
            }
        case .closed(let id, let reason):
            let stats = mux.takeFinalStats(id)
            guard let stream = streams[id] else {
                mux.release(id, now: EventLoop.now())
                return
            }
            // What arrived before the end is still the peer's to deliver; the peer
            // connection may close the stream while reading it.
            stream.finalStats = stats
            if stream.reading && mux.readableBytes(id) > 0 { stream.delegate?.transportReadable(stream) }
            if stream.isOpen && streams[id] === stream {
                finish(stream, reason: Self.describe(reason, connected: stream.everConnected), stats: stats)
            }
            mux.release(id, now: EventLoop.now())
        }
    }

    /// Detaches a stream that ended on the peer's or the network's side and tells its delegate.
    private func finish(_ stream: UTPStream, reason: String, stats: UTPConnectionStats?) {
        streams[stream.id] = nil
        account(stream, stats: stats, reason: reason)
        stream.detach()
        stream.delegate?.transportClosed(stream, reason: reason)
    }

    /// Adds a closing stream's counters to the totals and logs them.
    private func account(_ stream: UTPStream, stats: UTPConnectionStats?, reason: String) {
        let uploaded = (stream.delegate as? PeerConnection)?.uploaded ?? 0
        closedUploaded += uploaded
        guard let s = stats else { return }
        closedRetransmits += Int64(s.retransmits)
        logger.debug("uTP connection closed", metadata: [
            "peer": "\(stream.remote)", "reason": "\(reason)", "uploaded": "\(uploaded)",
            "rtt_ms": "\(Double(s.rtt) / 1000)", "rtt_var_ms": "\(Double(s.rttVar) / 1000)", "cwnd": "\(s.cwnd)",
            "retransmits": "\(s.retransmits)", "fast_retransmits": "\(s.fastRetransmits)", "timeouts": "\(s.timeouts)",
            "packets_sent": "\(s.packetsSent)", "packets_received": "\(s.packetsReceived)",
            "bytes_sent": "\(s.bytesSent)", "bytes_received": "\(s.bytesReceived)",
        ])
    }

    /// Streams whose peer connection stopped for back-pressure hear about room once
    /// their output falls under the low watermark.
    private func notifyRoom() {
        guard !roomWatchers.isEmpty else { return }
        var i = 0
        while i < roomWatchers.count {
            let stream = roomWatchers[i]
            if !stream.isOpen || !stream.wantsRoom {
                stream.wantsRoom = false
                roomWatchers.swapAt(i, roomWatchers.count - 1)
                roomWatchers.removeLast()
                continue
            }
            stream.pushPending()
            if stream.outputLength < UTPStream.lowWatermark {
                stream.wantsRoom = false
                roomWatchers.swapAt(i, roomWatchers.count - 1)
                roomWatchers.removeLast()
                stream.delegate?.transportWritable(stream)
                continue
            }
            i += 1
        }
    }

    private func armTimer() {
        guard let deadline = mux.nextDeadline else { return }
        if let armed = armedDeadline, armed <= deadline { return }
        armedDeadline = deadline
        let now = EventLoop.now()
        deadlineTimer?.schedule(after: deadline > now ? Int64(deadline - now) : 0)
    }

    private static func describe(_ reason: UTPCloseReason, connected: Bool) -> String {
        switch reason {
        case .finished: return "peer closed the connection (uTP FIN)"
        case .reset: return "connection reset by peer (uTP RESET)"
        case .timedOut: return connected ? "uTP connection timed out" : "uTP connect timed out"
        case .aborted: return "uTP connection aborted"
        case .evicted: return "uTP connection evicted"
        }
    }
}
