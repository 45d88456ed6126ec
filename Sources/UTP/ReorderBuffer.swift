/// Packets received ahead of a gap, keyed by sequence number. Slots are indexed by
/// `seq & mask`; admission is limited to `capacity` sequence numbers past the last
/// in-order one, so a slot can never hold two live packets. Payload arrays are
/// recycled to keep loss recovery from allocating per packet.
struct ReorderBuffer {
    /// Allocated at the first out-of-order packet, so idle connections stay small.
    private var slots: [[UInt8]?] = []
    private let mask: Int
    private var pool: [[UInt8]] = []
    /// Largest array kept for reuse: a normal packet's payload with room to spare. A
    /// peer may send datagrams of up to 64 KiB; recycling those arrays for small packets
    /// would keep their capacity alive beyond what `bytes` (and so the receive window)
    /// accounts for.
    static let poolableCapacity = 4096
    private(set) var count = 0
    private(set) var bytes = 0
    /// The highest buffered sequence number; meaningful when `count > 0`.
    private(set) var highest: UInt16 = 0
    /// A FIN received out of order.
    var finSeq: UInt16?

    /// `capacity` must be a power of two.
    init(capacity: Int) {
        precondition(capacity > 0 && capacity & (capacity - 1) == 0)
        mask = capacity - 1
    }

    var capacity: Int { mask + 1 }

    func contains(_ seq: UInt16) -> Bool { count > 0 && slots[Int(seq) & mask] != nil }

    mutating func insert(_ seq: UInt16, payload: UnsafeRawBufferPointer) {
        if slots.isEmpty { slots = Array(repeating: nil, count: capacity) }
        let index = Int(seq) & mask
        guard slots[index] == nil else { return }
        var buffer = pool.popLast() ?? []
        buffer.removeAll(keepingCapacity: true)
        buffer.append(contentsOf: payload.assumingMemoryBound(to: UInt8.self))
        slots[index] = buffer
        if count == 0 || Seq.less(highest, seq) { highest = seq }
        count += 1
        bytes += payload.count
    }

    /// Removes the packet `seq` and hands its payload to `body`.
    mutating func remove(_ seq: UInt16, _ body: (UnsafeRawBufferPointer) -> Void) -> Bool {
        guard count > 0 else { return false }
        let index = Int(seq) & mask
        guard let buffer = slots[index] else { return false }
        slots[index] = nil
        count -= 1
        bytes -= buffer.count
        buffer.withUnsafeBytes(body)
        if pool.count < 64 && buffer.capacity <= Self.poolableCapacity { pool.append(buffer) }
        return true
    }

    /// Capacity held by the recycled arrays, which `bytes` does not count.
    var pooledCapacity: Int { pool.reduce(0) { $0 + $1.capacity } }

    /// Selective-ack bitmask relative to `ackNr`: bit k covers `ackNr + 2 + k`.
    /// Lengths are multiples of 4 (BEP 29), at most `maxBytes`; empty when nothing is buffered.
    func selectiveAck(ackNr: UInt16, maxBytes: Int, into out: inout [UInt8]) {
        out.removeAll(keepingCapacity: true)
        guard count > 0 else { return }
        let span = Seq.distance(from: ackNr &+ 2, to: highest) + 1
        guard span > 0, span < 0x8000 else { return }
        let bits = min(span, maxBytes * 8)
        let length = min((bits + 31) / 32 * 4, maxBytes)
        out.append(contentsOf: repeatElement(0, count: length))
        for k in 0 ..< bits where slots[Int(ackNr &+ 2 &+ UInt16(truncatingIfNeeded: k)) & mask] != nil {
            out[k >> 3] |= 1 << UInt8(k & 7)
        }
    }
}
