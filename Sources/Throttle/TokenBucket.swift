/// A token bucket with exact integer accounting.
///
/// Tokens are kept in byte-microseconds (bytes x 1_000_000). Refilling over `elapsed`
/// microseconds at `rate` bytes per second then adds exactly `rate * elapsed` units: no
/// division, no remainder to carry, nothing lost to rounding however the refills are
/// sliced. Over an hour at any rate the bucket has handed out exactly `rate * 3600`
/// bytes plus at most its burst, which floating point cannot promise.
///
/// The level may go negative: bytes that arrived before we could refuse them (download
/// over uTP, or a TCP read that returned more than granted) are charged as debt, and
/// the bucket grants nothing until the debt is paid off at `rate`.
public struct TokenBucket: Sendable, Equatable {
    /// Bytes per second; 0 means unlimited.
    public private(set) var rate: Int64
    /// The most bytes that may be taken at one instant after an idle period.
    public private(set) var burst: Int64
    /// Byte-microseconds; may be negative (debt).
    private var level: Int64
    private var lastRefill: UInt64

    static let scale: Int64 = 1_000_000
    /// Keeps `rate * elapsed` and `burst * scale` far from Int64 overflow: 1 TB/s and a
    /// 1 TB burst are beyond anything a seedbox sees.
    public static let maximumRate: Int64 = 1_000_000_000_000
    private static let maximumDebt: Int64 = Int64.max / 4

    /// A bucket that starts empty: a freshly started or reloaded limit earns its first
    /// bytes at `rate`, so even the first second from a cold start stays within the limit.
    public init(rate: Int64, burst: Int64? = nil, now: UInt64) {
        self.rate = Self.clampRate(rate)
        self.burst = Self.effectiveBurst(rate: self.rate, requested: burst)
        self.level = 0
        self.lastRefill = now
    }

    public var isUnlimited: Bool { rate == 0 }

    /// The default burst: 50 ms of rate, so an event loop whose timer fires up to 50 ms
    /// late loses no throughput (tokens that overflow the bucket are gone for good, which
    /// is how limiters end up far below their limit). At low rates it is raised towards
    /// one 16 KiB block so an idle peer can send a block without a stall, but never above
    /// 100 ms of rate, which keeps every one-second window within 110 % of the limit.
    public static func defaultBurst(rate: Int64) -> Int64 {
        guard rate > 0 else { return 0 }
        return max(rate / 20, min(rate / 10, 16 * 1024), 1)
    }

    /// The largest single grant when this bucket limits a transfer: 2 ms of rate, at least
    /// 1 KiB and at most one 16 KiB block, and never more than the burst. Two
    /// milliseconds keeps the output smooth (no tick-sized bursts, a waiting peer is
    /// served within a few ms); the 1 KiB floor stops the per-grant cost (a write, a
    /// packet) from dominating at low rates; the block ceiling means one grant never puts
    /// more than a block on the wire at line speed.
    public static func quantum(rate: Int64, burst: Int64) -> Int64 {
        guard rate > 0 else { return 16 * 1024 }
        let wanted = min(max(rate / 500, 1024), 16 * 1024)
        return max(min(wanted, burst), 1)
    }

    public var quantum: Int64 { Self.quantum(rate: rate, burst: burst) }

    /// Whole bytes available at `now` (negative while in debt). Unlimited buckets report
    /// `Int64.max`.
    public mutating func available(now: UInt64) -> Int64 {
        guard rate > 0 else { return Int64.max }
        refill(now: now)
        return level >= 0 ? level / Self.scale : -((-level + Self.scale - 1) / Self.scale)
    }

    /// Takes up to `bytes`, returning how many were granted (possibly 0).
    public mutating func take(upTo bytes: Int64, now: UInt64) -> Int64 {
        guard bytes > 0 else { return 0 }
        guard rate > 0 else { return bytes }
        let granted = min(bytes, max(available(now: now), 0))
        level -= granted * Self.scale
        return granted
    }

    /// Charges bytes that were already transferred, going into debt if need be.
    public mutating func consume(_ bytes: Int64, now: UInt64) {
        guard bytes > 0, rate > 0 else { return }
        refill(now: now)
        let charge = min(bytes, Self.maximumDebt / Self.scale)
        level = max(level - charge * Self.scale, -Self.maximumDebt)
    }

    /// Returns granted bytes that were not used. The level stays capped at the burst so a
    /// return can never let more than `burst` out at once.
    public mutating func giveBack(_ bytes: Int64, now: UInt64) {
        guard bytes > 0, rate > 0 else { return }
        refill(now: now)
        let credit = min(bytes, burst)
        level = min(level + credit * Self.scale, burst * Self.scale)
    }

    /// Microseconds until `bytes` are available (0 if they are now). `bytes` above the
    /// burst can never be available at once; the answer is then the time to a full bucket.
    public mutating func timeUntilAvailable(_ bytes: Int64, now: UInt64) -> UInt64 {
        guard rate > 0 else { return 0 }
        refill(now: now)
        let target = min(bytes, burst) * Self.scale
        guard level < target else { return 0 }
        let missing = target - level
        return UInt64((missing + rate - 1) / rate)
    }

    /// Changes the limit live (config reload). Tokens earned so far at the old rate are
    /// kept only up to the new burst, so lowering a limit cannot release a burst sized for
    /// the old one. Going from unlimited to limited starts from empty for the same reason.
    public mutating func setRate(_ newRate: Int64, burst newBurst: Int64? = nil, now: UInt64) {
        refill(now: now)
        let wasUnlimited = rate == 0
        rate = Self.clampRate(newRate)
        burst = Self.effectiveBurst(rate: rate, requested: newBurst)
        if rate == 0 || wasUnlimited {
            level = 0
        } else {
            level = min(level, burst * Self.scale)
        }
        lastRefill = now
    }

    private mutating func refill(now: UInt64) {
        guard now > lastRefill else { return }
        let elapsed = now - lastRefill
        lastRefill = now
        guard rate > 0 else { return }
        let cap = burst * Self.scale
        guard level < cap else { return }
        let missing = UInt64(cap - level)
        // Compare in time rather than multiplying, so a long idle period cannot overflow.
        if elapsed >= missing / UInt64(rate) + 1 {
            level = cap
        } else {
            level = min(level + Int64(elapsed) * rate, cap)
        }
    }

    private static func clampRate(_ rate: Int64) -> Int64 {
        min(max(rate, 0), maximumRate)
    }

    private static func effectiveBurst(rate: Int64, requested: Int64?) -> Int64 {
        guard rate > 0 else { return 0 }
        guard let requested, requested > 0 else { return defaultBurst(rate: rate) }
        return min(requested, maximumRate)
    }
}
