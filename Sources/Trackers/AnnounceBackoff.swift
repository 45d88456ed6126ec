/// How long a torrent waits after a whole round of its trackers failed (BEP 12 tiers:
/// every tracker of every tier), before trying the first tier again.
///
/// Exponential, so a dead tracker is not hammered by every torrent that lists it:
/// round n waits `base * 2^(n-1)`, capped. With the defaults that is 15 s, 30 s, 1 min,
/// 2 min, 4 min, 8 min, 16 min, then 30 min for every later round, until a success
/// resets it. (BEP 15 retransmits a single UDP request on a similar 15 * 2^n s
/// schedule.)
///
/// The jitter takes up to a quarter off each delay, so the wait is in
/// `[0.75 * nominal, nominal]`: torrents that failed together (a tracker outage, or a
/// thousand torrents started at once against a dead tracker) spread out instead of
/// retrying in lock step, and the cap stays a real upper bound.
public struct AnnounceBackoff: Hashable, Sendable {
    /// Microseconds before the second round.
    public var base: UInt64
    /// Microseconds; no wait is longer.
    public var cap: UInt64

    public init(base: UInt64 = 15_000_000, cap: UInt64 = 1_800_000_000) {
        self.base = base
        self.cap = max(cap, base)
    }

    /// The schedule without jitter, for `failedRounds` >= 1 (0 is treated as 1).
    public func nominalDelay(afterFailedRounds failedRounds: Int) -> UInt64 {
        let doublings = max(failedRounds, 1) - 1
        // 2^40 times any sane base is past any sane cap; stop shifting before overflow.
        guard doublings < 40, base <= cap >> UInt64(doublings) else { return cap }
        return base << UInt64(doublings)
    }

    /// The wait, jitter included: in `[0.75, 1] * nominalDelay`.
    public func delay(afterFailedRounds failedRounds: Int, using rng: inout some RandomNumberGenerator) -> UInt64 {
        let nominal = nominalDelay(afterFailedRounds: failedRounds)
        return nominal - UInt64.random(in: 0...(nominal / 4), using: &rng)
    }
}
