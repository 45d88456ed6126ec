/// BEP 29 sequence and ack numbers are 16-bit and wrap. Ordering is only meaningful
/// between numbers less than half the space apart, which the window limits guarantee.
@usableFromInline
enum Seq {
    /// `a` comes before `b` in wrapping 16-bit order.
    @inlinable @inline(__always)
    static func less(_ a: UInt16, _ b: UInt16) -> Bool { Int16(bitPattern: a &- b) < 0 }

    @inlinable @inline(__always)
    static func lessOrEqual(_ a: UInt16, _ b: UInt16) -> Bool { Int16(bitPattern: a &- b) <= 0 }

    /// Forward distance from `a` to `b` (how many increments take `a` to `b`).
    @inlinable @inline(__always)
    static func distance(from a: UInt16, to b: UInt16) -> Int { Int(b &- a) }
}

/// Timestamps are microseconds mod 2^32; delay samples compare with the same wrapping rule.
@usableFromInline
enum Wrap32 {
    @inlinable @inline(__always)
    static func less(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) < 0 }
}
