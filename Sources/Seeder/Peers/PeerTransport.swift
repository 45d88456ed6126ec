import BitTorrent
import EventLoop

enum PeerTransportKind: String, Sendable {
    case tcp
    case utp
}

/// What a transport tells its peer connection. Loop thread only.
protocol PeerTransportDelegate: AnyObject {
    /// An outgoing connection was established.
    func transportConnected(_ transport: PeerTransport)
    /// Bytes arrived; take them with `readAvailable`.
    func transportReadable(_ transport: PeerTransport)
    /// Queued output drained below the transport's low watermark: room for more.
    func transportWritable(_ transport: PeerTransport)
    /// The connection ended (EOF, reset, time-out, failed to connect). Not called after
    /// `close()`.
    func transportClosed(_ transport: PeerTransport, reason: String)
}

/// A byte stream to a peer over TCP or uTP: all a `PeerConnection` needs, so the peer
/// wire runs unchanged over either. Loop thread only.
protocol PeerTransport: AnyObject {
    var remote: SocketAddress { get }
    var kind: PeerTransportKind { get }
    var delegate: PeerTransportDelegate? { get set }
    /// Bytes accepted by `write` and not yet handed to the network.
    var outputLength: Int { get }
    func write(_ bytes: UnsafeRawBufferPointer)
    /// Queues all of `buffer`, taking its memory where the transport can send from it.
    func write(_ buffer: OutgoingBuffer)
    /// Hands every buffered input chunk to `body` and drains them.
    func readAvailable(_ body: (UnsafeRawBufferPointer) -> Void)
    /// Moves available input into `decoder`, about `limit` bytes at most where the
    /// transport reads on demand; the bytes moved.
    func read(into decoder: inout PeerMessageDecoder, limit: Int) -> Int
    /// Stops or resumes taking input (download limits).
    func setReading(_ enabled: Bool)
    /// Closes at once, dropping unsent output; the delegate is not called.
    func close()
}

extension PeerTransport {
    /// uTP's input is already in memory, held back by its receive window instead.
    func read(into decoder: inout PeerMessageDecoder, limit: Int) -> Int {
        var received = 0
        readAvailable { bytes in
            decoder.append(bytes)
            received += bytes.count
        }
        return received
    }

    func write(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { write($0) }
    }

    /// Queues a copy of part of `buffer`; the buffer keeps its memory.
    func write(_ buffer: OutgoingBuffer, range: Range<Int>) {
        guard let base = buffer.base, range.lowerBound >= 0, range.upperBound <= buffer.count else { return }
        write(UnsafeRawBufferPointer(start: base + range.lowerBound, count: range.count))
    }
}

/// TCP through a libevent bufferevent.
final class TCPTransport: PeerTransport, TCPConnectionDelegate {
    private let connection: TCPConnection
    weak var delegate: PeerTransportDelegate?

    init(_ connection: TCPConnection) {
        self.connection = connection
        connection.delegate = self
    }

    var remote: SocketAddress { connection.remote }
    var kind: PeerTransportKind { .tcp }
    var outputLength: Int { connection.outputLength }
    func write(_ bytes: UnsafeRawBufferPointer) { connection.write(bytes) }
    func write(_ buffer: OutgoingBuffer) { connection.write(buffer) }
    func readAvailable(_ body: (UnsafeRawBufferPointer) -> Void) { connection.readAvailable(body) }
    /// Reads the socket straight into the decoder's buffer: no copy on the way in.
    func read(into decoder: inout PeerMessageDecoder, limit: Int) -> Int {
        let count = decoder.fill(capacity: min(readCapacity, max(limit, 1))) { connection.receive(into: $0) }
        // The decoder keeps room for a read of this size, so it follows what reads
        // bring: a peer sending only requests and haves (most peers of a seedbox) keeps
        // a small buffer, and one sending blocks as fast as we take them a large one.
        if count == readCapacity {
            readCapacity = min(readCapacity * 2, TCPConnection.maxSingleRead)
        } else if count < readCapacity / 8 {
            readCapacity = max(readCapacity / 2, Self.minReadCapacity)
        }
        return count
    }

    private var readCapacity = TCPTransport.minReadCapacity
    /// A leecher's requests and haves fit in a few KiB a read; the decoder holds twice
    /// this per idle peer (8 KiB), which is what a seedbox with thousands of peers pays.
    static let minReadCapacity = 4 << 10
    func setReading(_ enabled: Bool) { connection.setReading(enabled) }
    func close() { connection.close() }

    func connectionEstablished(_ connection: TCPConnection) { delegate?.transportConnected(self) }
    func connectionReadable(_ connection: TCPConnection) { delegate?.transportReadable(self) }
    func connectionWritable(_ connection: TCPConnection) { delegate?.transportWritable(self) }
    func connectionClosed(_ connection: TCPConnection, reason: String) { delegate?.transportClosed(self, reason: reason) }
}
