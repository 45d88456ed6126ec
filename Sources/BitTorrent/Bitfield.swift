/// A set of piece indices, stored the way the peer wire sends it (BEP 3): the high bit
/// of the first byte is piece 0, and spare bits at the end are zero.
public struct Bitfield: Equatable, Sendable {
    public let count: Int
    public private(set) var bytes: [UInt8]
    public private(set) var setCount: Int

    public init(count: Int) {
        precondition(count >= 0)
        self.count = count
        bytes = [UInt8](repeating: 0, count: (count + 7) / 8)
        setCount = 0
    }

    /// Takes a received bitfield; nil unless it is exactly ceil(count / 8) bytes with
    /// the spare bits clear, which is what libtorrent and Transmission insist on too.
    public init?(count: Int, bytes: [UInt8]) {
        guard bytes.count == (count + 7) / 8 else { return nil }
        let spare = bytes.count * 8 - count
        if spare > 0, let last = bytes.last, last & UInt8((1 << spare) - 1) != 0 { return nil }
        self.count = count
        self.bytes = bytes
        setCount = bytes.reduce(0) { $0 + $1.nonzeroBitCount }
    }

    public subscript(index: Int) -> Bool {
        get {
            precondition(index >= 0 && index < count, "piece index out of range")
            return bytes[index >> 3] & (0x80 >> UInt8(index & 7)) != 0
        }
        set {
            precondition(index >= 0 && index < count, "piece index out of range")
            let mask: UInt8 = 0x80 >> UInt8(index & 7)
            let old = bytes[index >> 3] & mask != 0
            guard old != newValue else { return }
            if newValue { bytes[index >> 3] |= mask; setCount += 1 } else { bytes[index >> 3] &= ~mask; setCount -= 1 }
        }
    }

    public var isComplete: Bool { setCount == count }
    public var isEmpty: Bool { setCount == 0 }

    public mutating func setAll() {
        for index in bytes.indices { bytes[index] = 0xFF }
        let spare = bytes.count * 8 - count
        if spare > 0 { bytes[bytes.count - 1] &= ~UInt8((1 << spare) - 1) }
        setCount = count
    }
}
