/// BEP 29 uTP as a pure state machine: bytes, time and randomness in; datagrams and
/// events out. No sockets, clock, threads or Foundation.
///
/// The pieces, one concern per file:
/// - `UTPPacket.swift`: header codec and extension chain (`UTPPacketView` for the hot
///   path, `UTPPacket` for tests and tools).
/// - `SequenceNumber.swift`: 16-bit wrapping order.
/// - `ReorderBuffer.swift`: out-of-order packets and the selective-ack bitmask we send.
/// - `OutgoingWindow.swift`: packets in flight, indexed by seq_nr.
/// - `ByteRing.swift`: send and receive buffers.
/// - `RTTEstimator.swift`, `LEDBAT.swift`: timing and congestion control.
/// - `UTPConnection.swift`: one connection's state machine.
/// - `UTPMultiplexer.swift`: all connections of a UDP socket; the API the server uses.
///
/// Driving it from an event loop (`Endpoint` is the caller's address type):
/// ```swift
/// var mux = UTPMultiplexer<SocketAddress>(packetSize: { $0.isIPv4 ? 1402 : 1232 })
/// // per datagram of a recvmmsg batch:
/// mux.receive(bytes, from: source, now: now, rng: &rng)
/// // when the batch is drained (deferred acks go out once per batch):
/// mux.endOfBatch(now: now)
/// // after any call: send what is queued, handle events, re-arm the timer
/// mux.takeDatagrams(into: &spare)
/// spare.forEach { to, bytes in port.send(bytes, to: to) }   // or forEachRun: a run per destination
/// for event in mux.takeEvents() { ... }   // accepted, connected, readable, writable, closed
/// timer.arm(at: mux.nextDeadline)          // then mux.tick(now:)
/// // application side:
/// let id = mux.connect(to: peer, now: now, rng: &rng)
/// let taken = mux.write(id, bytes, now: now)                  // rest waits for .writable
/// let n = mux.read(id, maxBytes: budget, into: &buffer, now: now) // the download throttle
/// mux.close(id, now: now)   // FIN after the buffered data; mux.abort(id, now:) sends RESET
/// ```
public enum UTP {
    /// Whether a datagram's first byte can start a uTP packet (version 1, type 0...4):
    /// 0x01, 0x11, 0x21, 0x31, 0x41. UDP tracker replies start with 0x00, DHT with 'd'.
    @inlinable
    public static func isUTP(firstByte: UInt8) -> Bool {
        firstByte & 0x0F == 1 && firstByte >> 4 <= 4
    }
}
