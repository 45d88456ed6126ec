/// One peer's request pipeline in the download direction: how many requests to keep
/// outstanding, which ones have waited too long, whether the peer has stopped sending
/// (snubbed), and its measured download rate. Pure: time comes in as `now`
/// (monotonic µs); the picker decides which blocks, this decides how many and when to
/// give up on them.
///
/// Depth follows the bandwidth-delay product, as libtorrent does: enough requests to
/// cover `requestQueueTime` (3 s) of the peer's measured rate, at least
/// `minimumDepth`, at most the `reqq` the peer advertised in its BEP 10 extension
/// handshake (250 when it sent none). Before the rate is known the depth grows by one
/// per block received (slow start: doubling each round trip) and settles on the rate
/// once a rate sample stops growing.
///
/// A request is timed out after max(`minimumTimeout`, `timeoutRoundTrips` x the
/// smoothed request-to-block time): that time includes the wait behind the requests
/// queued before it, so a deep pipeline to a slow peer does not time out spuriously.
/// A peer that sends no block for `snubTimeout` while requests are outstanding is
/// snubbed: its depth drops to 1 until it sends a block again.
public struct RequestPipeline: Sendable {
    public struct Configuration: Sendable {
        /// Seconds of download to keep requested (libtorrent's `request_queue_time`).
        public var requestQueueTime: UInt64 = 3_000_000
        public var minimumDepth = 2
        /// Slow start begins here.
        public var initialDepth = 4
        /// The peer's queue when its extension handshake has no `reqq`.
        public var defaultPeerQueueLength = 250
        /// Our own ceiling whatever `reqq` says (libtorrent sends 2000): bounds memory.
        public var maximumDepth = 2000
        public var minimumTimeout: UInt64 = 20_000_000
        public var timeoutRoundTrips: UInt64 = 4
        public var snubTimeout: UInt64 = 60_000_000
        /// Rate samples are taken at most this often ...
        public var rateSampleInterval: UInt64 = 1_000_000
        /// ... and weigh in proportion to their length over this window.
        public var rateWindow: UInt64 = 5_000_000
        /// Released (timed-out, rejected, cancelled) requests remembered, so that a
        /// block answering one of them counts as late rather than unrequested.
        public var releasedMemory = 256
        /// Most requests to hold back for a batch (see `room`).
        public var maximumBatch = 32

        public init() {}
    }

    /// How an arriving block relates to our requests.
    public enum Arrival: Equatable, Sendable {
        /// Outstanding here: answered.
        case expected
        /// Answers a request we gave up on or cancelled: not the peer's fault.
        case late
        /// Never requested from this peer (or forgotten long ago): the caller may
        /// count it against the peer.
        case unrequested
    }

    public struct TickResult: Equatable, Sendable {
        /// Requests given up on: hand each to `PiecePicker.requestTimedOut`.
        public var timedOut: [BlockRequest] = []
        /// The peer just became snubbed (log it; its depth is now 1).
        public var becameSnubbed = false
    }

    public let configuration: Configuration
    /// The peer's BEP 10 `reqq`, if it sent one.
    public var peerQueueLength: Int?

    /// Outstanding requests in the order sent, with when.
    public var outstanding: ArraySlice<(block: BlockRequest, since: UInt64)> { queue[head...] }
    /// Requests outstanding.
    public var outstandingCount: Int { queue.count - head }
    /// `outstanding` from `head` on: blocks mostly arrive in the order asked, so the one
    /// answered is usually at `head` and leaves in O(1), without shifting thousands of
    /// entries per block.
    private var queue: [(block: BlockRequest, since: UInt64)] = []
    private var head = 0
    private var released: Set<BlockRequest> = []
    private var releasedOrder: [BlockRequest] = []
    private var releasedHead = 0

    public private(set) var isSnubbed = false
    public private(set) var inSlowStart = true
    private var slowStartDepth: Int
    /// Last block received, or when requests became outstanding after none were.
    private var lastProgress: UInt64
    /// A request timed out since the last block: re-requesting must not restart the
    /// snub clock, or a dead peer whose requests keep timing out is never snubbed.
    private var stalled = false

    /// Smoothed request-to-block time and its mean deviation (µs), as TCP's SRTT.
    public private(set) var smoothedLatency: UInt64?
    private var latencyDeviation: UInt64 = 0

    private var rate: Double = 0
    private var hasRateSample = false
    private var sampleStart: UInt64
    private var sampleBytes = 0
    /// Whether requests were outstanding through the current sample, so that a sample
    /// of an idle pipeline does not end slow start.
    private var sampleStarved = false

    public init(configuration: Configuration = Configuration(), peerQueueLength: Int? = nil, now: UInt64) {
        self.configuration = configuration
        self.peerQueueLength = peerQueueLength
        slowStartDepth = configuration.initialDepth
        lastProgress = now
        sampleStart = now
    }

    // MARK: - Queries

    /// Measured download rate of the peer, bytes per second.
    public var downloadRate: Int { Int(rate) }

    /// Requests to keep outstanding now.
    public var depth: Int {
        let cap = max(1, min(peerQueueLength ?? configuration.defaultPeerQueueLength, configuration.maximumDepth))
        if isSnubbed { return 1 }
        let seconds = Double(configuration.requestQueueTime) / 1_000_000
        var wanted = max(configuration.minimumDepth, Int(rate * seconds / Double(BlockLayout.blockLength)))
        if inSlowStart { wanted = max(wanted, slowStartDepth) }
        return min(wanted, cap)
    }

    /// How many more requests to send now: none until a batch of them is due (an
    /// eighth of the depth, at most `maximumBatch`), so that a deep pipeline is topped
    /// up by one pick and one write per batch instead of per block received. A shallow
    /// pipeline (depth under 16) is topped up per block.
    public var room: Int {
        let free = max(0, depth - outstandingCount)
        return free >= max(1, min(configuration.maximumBatch, depth / 8)) ? free : 0
    }

    /// How long a request may stay unanswered.
    public var requestTimeout: UInt64 {
        guard let smoothedLatency else { return configuration.minimumTimeout }
        let (scaled, overflow) = configuration.timeoutRoundTrips.multipliedReportingOverflow(by: smoothedLatency + latencyDeviation)
        return overflow ? UInt64.max : max(configuration.minimumTimeout, scaled)
    }

    public func isOutstanding(_ block: BlockRequest) -> Bool { index(of: block) != nil }

    private func index(of block: BlockRequest) -> Int? {
        if head < queue.count && queue[head].block == block { return head }
        var index = head
        while index < queue.count {
            if queue[index].block == block { return index }
            index += 1
        }
        return nil
    }

    /// Takes the request at `index` out of the queue; returns when it was sent.
    private mutating func take(at index: Int) -> UInt64 {
        let since = queue[index].since
        if index == head {
            head += 1
            if head == queue.count {
                queue.removeAll(keepingCapacity: true)
                head = 0
            } else if head >= 1024 && head * 2 >= queue.count {
                queue.removeFirst(head)
                head = 0
            }
        } else if index - head < queue.count - index {
            // A block a little out of order (a seed's disk reads finish out of order):
            // shift the few requests ahead of it up one, not the thousands behind it down.
            var slot = index
            while slot > head {
                queue[slot] = queue[slot - 1]
                slot -= 1
            }
            head += 1
        } else {
            queue.remove(at: index)
        }
        return since
    }

    // MARK: - Events

    /// The requests just sent.
    public mutating func requested(_ blocks: [BlockRequest], now: UInt64) {
        guard !blocks.isEmpty else { return }
        if outstandingCount == 0 && !stalled { lastProgress = now }
        for block in blocks {
            queue.append((block, now))
            forgetReleased(block)
        }
    }

    /// A block arrived. Updates rate, latency, slow start and the snub state.
    public mutating func received(_ block: BlockRequest, now: UInt64) -> Arrival {
        advanceRate(now: now)
        let arrival: Arrival
        if let index = index(of: block) {
            let since = take(at: index)
            sampleLatency(now >= since ? now - since : 0)
            arrival = .expected
            if inSlowStart { slowStartDepth = min(slowStartDepth + 1, configuration.maximumDepth) }
        } else if released.contains(block) {
            forgetReleased(block)
            arrival = .late
        } else {
            return .unrequested
        }
        lastProgress = now
        stalled = false
        isSnubbed = false
        sampleBytes += block.length
        return arrival
    }

    /// The request is settled without a block: rejected (BEP 6 reject_request) or
    /// cancelled by us (end game). False if it was not outstanding.
    @discardableResult
    public mutating func remove(_ block: BlockRequest) -> Bool {
        guard let index = index(of: block) else { return false }
        _ = take(at: index)
        remember(block)
        return true
    }

    /// Drops every outstanding request (a choke without the fast extension, or the
    /// peer left) and returns them.
    public mutating func removeAll() -> [BlockRequest] {
        let blocks = outstanding.map(\.block)
        queue.removeAll()
        head = 0
        for block in blocks { remember(block) }
        return blocks
    }

    /// Call every second or so: times out requests and detects snubbing.
    public mutating func tick(now: UInt64) -> TickResult {
        var result = TickResult()
        advanceRate(now: now)
        let timeout = requestTimeout
        var kept: [(block: BlockRequest, since: UInt64)] = []
        for request in queue[head...] {
            if now > request.since && now - request.since >= timeout {
                result.timedOut.append(request.block)
                remember(request.block)
            } else {
                kept.append(request)
            }
        }
        if !result.timedOut.isEmpty {
            queue = kept
            head = 0
            stalled = true
            // Something is wrong with this peer: stop growing its queue.
            inSlowStart = false
        }
        let waiting = outstandingCount > 0 || stalled
        if waiting && !isSnubbed && now > lastProgress && now - lastProgress >= configuration.snubTimeout {
            isSnubbed = true
            inSlowStart = false
            result.becameSnubbed = true
        }
        return result
    }

    // MARK: - Measurement

    private mutating func sampleLatency(_ sample: UInt64) {
        guard let smoothed = smoothedLatency else {
            smoothedLatency = sample
            latencyDeviation = sample / 2
            return
        }
        // RFC 6298 gains: 1/8 for the mean, 1/4 for the deviation.
        let difference = smoothed > sample ? smoothed - sample : sample - smoothed
        latencyDeviation = latencyDeviation - latencyDeviation / 4 + difference / 4
        smoothedLatency = smoothed - smoothed / 8 + sample / 8
    }

    private mutating func advanceRate(now: UInt64) {
        if outstandingCount == 0 { sampleStarved = true }
        guard now > sampleStart, now - sampleStart >= configuration.rateSampleInterval else { return }
        let elapsed = now - sampleStart
        let sample = Double(sampleBytes) * 1_000_000 / Double(elapsed)
        let previous = rate
        if hasRateSample {
            rate += (sample - rate) * min(1, Double(elapsed) / Double(max(1, configuration.rateWindow)))
        } else {
            rate = sample
        }
        if inSlowStart && hasRateSample && !sampleStarved && sample < previous * 1.1 {
            // The rate stopped growing with the queue: the queue is deep enough.
            inSlowStart = false
        }
        hasRateSample = hasRateSample || sampleBytes > 0
        sampleStart = now
        sampleBytes = 0
        sampleStarved = outstandingCount == 0
    }

    private mutating func remember(_ block: BlockRequest) {
        guard configuration.releasedMemory > 0, released.insert(block).inserted else { return }
        releasedOrder.append(block)
        // Oldest first out. A block forgotten and remembered again may appear twice in
        // the order and leave early: this memory is a courtesy, not bookkeeping.
        while releasedOrder.count - releasedHead > configuration.releasedMemory {
            released.remove(releasedOrder[releasedHead])
            releasedHead += 1
        }
        if releasedHead >= configuration.releasedMemory {
            releasedOrder.removeFirst(releasedHead)
            releasedHead = 0
        }
    }

    private mutating func forgetReleased(_ block: BlockRequest) {
        // Left in releasedOrder; removing a block not in `released` there is harmless.
        released.remove(block)
    }
}
