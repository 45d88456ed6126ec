/// One sent-but-unacknowledged packet. Its payload stays in the send buffer: it is the
/// stream range `streamEnd - length ..< streamEnd`, so nothing is copied per packet
/// except into the datagram itself.
struct OutgoingPacket {
    var streamEnd: UInt64 = 0
    var sentAt: UInt64 = 0
    var length: Int32 = 0
    var transmissions: UInt16 = 0
    var needResend = false
    var sacked = false
    var isFin = false
}

/// The packets from the oldest unacknowledged one to the newest sent, in a ring indexed
/// by `seq & mask`. It grows (by doubling) only as the window does.
struct OutgoingWindow {
    private var entries: [OutgoingPacket]
    private var mask: Int

    init(initialCapacity: Int = 32) {
        var capacity = 1
        while capacity < initialCapacity { capacity <<= 1 }
        entries = Array(repeating: OutgoingPacket(), count: capacity)
        mask = capacity - 1
    }

    var capacity: Int { mask + 1 }

    subscript(seq: UInt16) -> OutgoingPacket {
        @inline(__always) get { entries[Int(seq) & mask] }
        @inline(__always) set { entries[Int(seq) & mask] = newValue }
    }

    /// Makes room for `span` consecutive sequence numbers starting at `first`.
    mutating func reserve(span: Int, first: UInt16) {
        guard span > capacity else { return }
        var capacity = self.capacity
        while capacity < span { capacity <<= 1 }
        var grown = Array(repeating: OutgoingPacket(), count: capacity)
        for i in 0 ..< self.capacity {
            let seq = first &+ UInt16(truncatingIfNeeded: i)
            grown[Int(seq) & (capacity - 1)] = self[seq]
        }
        entries = grown
        mask = capacity - 1
    }

    mutating func clear(_ seq: UInt16) { entries[Int(seq) & mask] = OutgoingPacket() }
}
