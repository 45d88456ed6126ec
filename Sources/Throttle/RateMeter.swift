/// Bytes per second over a sliding window, for status output.
///
/// The window is a ring of fixed slots; the current slot is partial, so the rate is the
/// sum of the slots divided by the time they actually cover. That makes a meter read
/// 40 ms into a slot neither spike nor dip, and a meter younger than its window report
/// the rate since it started rather than a diluted one.
public struct RateMeter: Sendable {
    private var slots: [Int64]
    private let slotMicros: UInt64
    /// Index (in slot units since time 0) of the slot `now` last fell into.
    private var currentSlot: UInt64
    private let startedAt: UInt64
    public private(set) var totalBytes: Int64 = 0

    public init(window: UInt64, slots count: Int, now: UInt64) {
        precondition(count > 0 && window >= UInt64(count))
        slots = Array(repeating: 0, count: count)
        slotMicros = window / UInt64(count)
        currentSlot = now / slotMicros
        startedAt = now
    }

    /// One second in 100 ms slots.
    public static func shortTerm(now: UInt64) -> RateMeter { RateMeter(window: 1_000_000, slots: 10, now: now) }
    /// Ten seconds in one-second slots.
    public static func longTerm(now: UInt64) -> RateMeter { RateMeter(window: 10_000_000, slots: 10, now: now) }

    public var window: UInt64 { slotMicros * UInt64(slots.count) }

    /// Adds (or, for returned grants, subtracts) bytes at `now`.
    public mutating func record(_ bytes: Int64, now: UInt64) {
        advance(to: now)
        let index = Int(currentSlot % UInt64(slots.count))
        slots[index] = max(slots[index] + bytes, 0)
        totalBytes = max(totalBytes + bytes, 0)
    }

    public mutating func bytesPerSecond(now: UInt64) -> Int64 {
        advance(to: now)
        let sum = slots.reduce(0, +)
        let slotStart = currentSlot * slotMicros
        var covered = window - slotMicros + (max(now, slotStart) - slotStart)
        covered = min(covered, max(now, startedAt) - startedAt)
        guard covered > 0 else { return 0 }
        let (scaled, overflow) = sum.multipliedReportingOverflow(by: 1_000_000)
        return overflow ? sum / Int64(covered) * 1_000_000 : scaled / Int64(covered)
    }

    private mutating func advance(to now: UInt64) {
        let slot = now / slotMicros
        guard slot > currentSlot else { return }
        let skipped = slot - currentSlot
        if skipped >= UInt64(slots.count) {
            for index in slots.indices { slots[index] = 0 }
        } else {
            for step in 1...skipped {
                slots[Int((currentSlot + step) % UInt64(slots.count))] = 0
            }
        }
        currentSlot = slot
    }
}
