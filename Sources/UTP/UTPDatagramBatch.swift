/// Outgoing datagrams packed back to back in one reusable byte buffer, so a batch of
/// packets costs no allocation once the buffers have grown, and maps directly onto
/// sendmmsg's iovecs.
public struct UTPDatagramBatch<Endpoint: Hashable & Sendable> {
    /// All datagram bytes, back to back.
    public private(set) var bytes: [UInt8] = []
    /// End offset of each datagram in `bytes`.
    public private(set) var ends: [Int] = []
    public private(set) var endpoints: [Endpoint] = []

    public init() {}

    public var count: Int { ends.count }
    public var isEmpty: Bool { ends.isEmpty }

    public func range(at index: Int) -> Range<Int> {
        (index == 0 ? 0 : ends[index - 1]) ..< ends[index]
    }

    /// The datagram at `index`, copied out (tests and logging; prefer `withUnsafeBytes`).
    public subscript(index: Int) -> (endpoint: Endpoint, bytes: [UInt8]) {
        (endpoints[index], Array(bytes[range(at: index)]))
    }

    /// Lends the contiguous storage; slice it with `range(at:)`.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try bytes.withUnsafeBytes(body)
    }

    /// Calls `body` with each datagram's destination and bytes, in order, without copying.
    public func forEach(_ body: (Endpoint, UnsafeRawBufferPointer) throws -> Void) rethrows {
        try bytes.withUnsafeBytes { raw in
            for i in 0 ..< ends.count {
                try body(endpoints[i], UnsafeRawBufferPointer(rebasing: raw[range(at: i)]))
            }
        }
    }

    public mutating func removeAll() {
        bytes.removeAll(keepingCapacity: true)
        ends.removeAll(keepingCapacity: true)
        endpoints.removeAll(keepingCapacity: true)
    }

    // The connection writes into `bytes` through a non-generic writer; the
    // multiplexer then stamps the endpoint on each new datagram. Moving the arrays out
    // and back keeps them uniquely referenced, so nothing is copied.
    @inline(__always)
    mutating func takeWriter() -> UTPPacketWriter {
        let writer = UTPPacketWriter(bytes: bytes, ends: ends)
        bytes = []
        ends = []
        return writer
    }

    @inline(__always)
    mutating func restore(_ writer: consuming UTPPacketWriter, endpoint: Endpoint) {
        bytes = writer.bytes
        ends = writer.ends
        while endpoints.count < ends.count { endpoints.append(endpoint) }
    }
}

/// The non-generic half of a batch, so the connection state machine is not generic.
struct UTPPacketWriter {
    var bytes: [UInt8]
    var ends: [Int]

    @inline(__always)
    mutating func commit() { ends.append(bytes.count) }
}
