/// Outgoing datagrams packed back to back in one reusable byte buffer, so a batch of
/// packets costs no allocation once the buffers have grown, and maps directly onto
/// sendmmsg's iovecs. Destinations are kept per run of consecutive datagrams to one
/// endpoint (a connection's output is one run), not per datagram: an endpoint may hold
/// references (an address's byte array), and copying one per datagram cost reference
/// counting on every packet.
public struct UTPDatagramBatch<Endpoint: Hashable & Sendable> {
    /// All datagram bytes, back to back.
    public private(set) var bytes: [UInt8] = []
    /// End offset of each datagram in `bytes`.
    public private(set) var ends: [Int] = []
    /// Runs of datagrams to one destination: run r covers datagrams
    /// `runEnds[r - 1] ..< runEnds[r]` (from 0 for the first).
    private var runEnds: [Int] = []
    private var runEndpoints: [Endpoint] = []

    public init() {}

    public var count: Int { ends.count }
    public var isEmpty: Bool { ends.isEmpty }

    public func range(at index: Int) -> Range<Int> {
        (index == 0 ? 0 : ends[index - 1]) ..< ends[index]
    }

    /// The destination of the datagram at `index`.
    public func endpoint(at index: Int) -> Endpoint {
        var run = 0
        while runEnds[run] <= index { run += 1 }
        return runEndpoints[run]
    }

    /// Each datagram's destination, in order (tests and logging).
    public var endpoints: [Endpoint] { (0 ..< count).map { endpoint(at: $0) } }

    /// The datagram at `index`, copied out (tests and logging; prefer `withUnsafeBytes`).
    public subscript(index: Int) -> (endpoint: Endpoint, bytes: [UInt8]) {
        (endpoint(at: index), Array(bytes[range(at: index)]))
    }

    /// Lends the contiguous storage; slice it with `range(at:)`.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try bytes.withUnsafeBytes(body)
    }

    /// Calls `body` with each datagram's destination and bytes, in order, without copying.
    public func forEach(_ body: (Endpoint, UnsafeRawBufferPointer) throws -> Void) rethrows {
        try bytes.withUnsafeBytes { raw in
            var first = 0
            for run in 0 ..< runEnds.count {
                let endpoint = runEndpoints[run]
                for i in first ..< runEnds[run] {
                    try body(endpoint, UnsafeRawBufferPointer(rebasing: raw[range(at: i)]))
                }
                first = runEnds[run]
            }
        }
    }

    /// Calls `body` once per run of consecutive datagrams to one destination, without
    /// copying: `raw` is the whole batch, and the run's datagrams are
    /// `raw[start ..< ends[0]]`, `raw[ends[0] ..< ends[1]]`, ... (offsets into `raw`).
    /// For senders that hand a run to the kernel in one call (sendmmsg, UDP GSO).
    public func forEachRun(_ body: (_ endpoint: Endpoint, _ raw: UnsafeRawBufferPointer, _ start: Int,
                                    _ ends: UnsafeBufferPointer<Int>) throws -> Void) rethrows {
        try bytes.withUnsafeBytes { raw in
            try ends.withUnsafeBufferPointer { allEnds in
                var first = 0
                for run in 0 ..< runEnds.count {
                    let last = runEnds[run]
                    let start = first == 0 ? 0 : allEnds[first - 1]
                    try body(runEndpoints[run], raw, start, UnsafeBufferPointer(rebasing: allEnds[first ..< last]))
                    first = last
                }
            }
        }
    }

    public mutating func removeAll() {
        bytes.removeAll(keepingCapacity: true)
        ends.removeAll(keepingCapacity: true)
        runEnds.removeAll(keepingCapacity: true)
        runEndpoints.removeAll(keepingCapacity: true)
    }

    // The connection writes into `bytes` through a non-generic writer; the
    // multiplexer then stamps the endpoint on the new datagrams. Moving the arrays out
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
        let covered = runEnds.last ?? 0
        guard ends.count > covered else { return }
        if let last = runEndpoints.last, last == endpoint {
            runEnds[runEnds.count - 1] = ends.count
        } else {
            runEnds.append(ends.count)
            runEndpoints.append(endpoint)
        }
    }
}

/// The non-generic half of a batch, so the connection state machine is not generic.
struct UTPPacketWriter {
    var bytes: [UInt8]
    var ends: [Int]

    @inline(__always)
    mutating func commit() { ends.append(bytes.count) }
}
