import EventLoop
import UTP

/// A `PeerTransport` over one uTP connection, so the peer wire runs over uTP unchanged.
/// The multiplexer's send buffer is bounded: what it does not take waits here and is
/// pushed when it reports `.writable`. Reading is pull-based: while reading is off,
/// nothing is taken, the receive buffer fills, and the advertised window closes (the
/// download limit's brake). Loop-owned; its `UTPService` drives it.
final class UTPStream: PeerTransport {
    let id: UTPConnectionID
    let remote: SocketAddress
    weak var delegate: PeerTransportDelegate?
    private unowned let service: UTPService
    /// Bytes the multiplexer did not take yet: `pending[pendingHead...]`.
    private var pending: [UInt8] = []
    private var pendingHead = 0
    private(set) var reading = true
    /// Still attached to the service (not closed by either side).
    private(set) var isOpen = true
    /// The peer connection saw a full pipe and stopped filling it: tell it when there
    /// is room again (the multiplexer only reports room after a short write).
    var wantsRoom = false
    /// Work deferred to the service's next pass, so delegate calls never re-enter the
    /// peer connection from inside its own call.
    var pendingReadable = false
    var pendingEndOfStream = false
    let outgoing: Bool
    /// The connection's counters as it ended, for the closing log line.
    var finalStats: UTPConnectionStats?
    /// Incoming streams are connected from the start; outgoing ones once the SYN-ACK came.
    var everConnected: Bool

    /// Under this much output (queued plus unsent), a peer connection that stopped for
    /// back-pressure hears `transportWritable`: a 256 KiB disk batch fits under its
    /// 1 MiB high watermark again, the same point as TCP's low watermark.
    static let lowWatermark = 768 << 10

    init(id: UTPConnectionID, remote: SocketAddress, service: UTPService, outgoing: Bool) {
        self.id = id
        self.remote = remote
        self.service = service
        self.outgoing = outgoing
        everConnected = !outgoing
    }

    var kind: PeerTransportKind { .utp }

    var queuedBytes: Int { pending.count - pendingHead }

    /// Queued here plus written to uTP and not yet sent: bytes in flight are the
    /// network's, as they would be in a TCP socket buffer.
    var outputLength: Int { queuedBytes + service.unsentBytes(id) }

    func write(_ bytes: UnsafeRawBufferPointer) {
        guard isOpen, bytes.count > 0 else { return }
        var offset = 0
        if queuedBytes == 0 {
            offset = service.write(id, bytes)
        }
        if offset < bytes.count {
            pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[offset...]))
        }
        noteOutput()
    }

    /// The disk thread's buffer is copied into the send buffer (uTP must keep bytes
    /// until they are acknowledged anyway), then dropped.
    func write(_ buffer: OutgoingBuffer) {
        write(UnsafeRawBufferPointer(buffer.bytes))
    }

    func readAvailable(_ body: (UnsafeRawBufferPointer) -> Void) {
        guard isOpen, reading else { return }
        service.read(id) { body($0) }
        if service.isAtEndOfStream(id) {
            pendingEndOfStream = true
            service.scheduleSoon(self)
        }
    }

    func setReading(_ enabled: Bool) {
        guard enabled != reading else { return }
        reading = enabled
        if enabled && isOpen && (service.readableBytes(id) > 0 || service.isAtEndOfStream(id)) {
            pendingReadable = true
            service.scheduleSoon(self)
        }
    }

    func close() {
        guard isOpen else { return }
        isOpen = false
        pending = []
        pendingHead = 0
        service.streamClosed(self)
    }

    // MARK: From the service

    /// Hands queued bytes to the multiplexer as far as it takes them.
    func pushPending() {
        guard isOpen, queuedBytes > 0 else { return }
        let taken = pending.withUnsafeBytes { raw in
            service.write(id, UnsafeRawBufferPointer(rebasing: raw[pendingHead...]))
        }
        pendingHead += taken
        if pendingHead == pending.count {
            pending.removeAll(keepingCapacity: pending.capacity <= 1 << 20)
            pendingHead = 0
        } else if pendingHead >= 1 << 20 {
            pending.removeFirst(pendingHead)
            pendingHead = 0
        }
    }

    /// The connection ended on the peer's side or the network's; the delegate hears it once.
    func detach() {
        isOpen = false
        pending = []
        pendingHead = 0
    }

    private func noteOutput() {
        if !wantsRoom && outputLength >= Self.lowWatermark {
            wantsRoom = true
            service.watchRoom(self)
        }
    }
}
