import EventLoop
import Logging

/// The UDP side of the listening port: one socket per address family, on the same
/// number as TCP (peers connect uTP to the port we announce), shared by uTP and the UDP
/// tracker client. Datagrams are told apart by their first byte (protocol-notes.md):
/// uTP headers start with type << 4 | version 1, tracker replies with 0 (the high byte
/// of an action number from 0 to 3). Anything else (DHT's 'd', noise) is dropped.
/// Loop-owned.
final class UDPPort: UDPSocketDelegate {
    private var sockets: [UDPSocket] = []
    private let logger: Logger
    var onTrackerReply: (UnsafeRawBufferPointer, SocketAddress) -> Void = { _, _ in }
    var onUTP: (UnsafeRawBufferPointer, SocketAddress) -> Void = { _, _ in }
    /// After each drained receive batch: the moment for deferred acks and a flush.
    var onDrained: () -> Void = {}
    var onSendFailed: (SocketAddress, Int32) -> Void = { _, _ in }
    private(set) var droppedUnknown = 0

    /// Binds every address; fails only when none could be bound.
    init(loop: EventLoop, addresses: [SocketAddress], logger: Logger) throws(UDPSocket.BindError) {
        self.logger = logger
        var failures: [String] = []
        for address in addresses {
            do {
                let socket = try UDPSocket(loop: loop, address: address)
                socket.delegate = self
                sockets.append(socket)
                logger.info("listening for peers and tracker replies on \(address) (UDP)", metadata: [
                    "receive_buffer": "\(ByteUnits.format(Int64(socket.receiveBufferSize)))",
                    "send_buffer": "\(ByteUnits.format(Int64(socket.sendBufferSize)))",
                ])
            } catch {
                failures.append(error.description)
            }
        }
        for failure in failures { logger.error("\(failure)") }
        if sockets.isEmpty { throw UDPSocket.BindError(description: failures.first ?? "no address to listen on over UDP") }
    }

    var hasIPv4: Bool { sockets.contains { $0.isIPv4 } }
    var hasIPv6: Bool { sockets.contains { !$0.isIPv4 } }

    /// Queues a datagram on the socket of the destination's family; false when there is
    /// none or its queue is full.
    @discardableResult
    func send(_ bytes: [UInt8], to destination: SocketAddress) -> Bool {
        guard let socket = sockets.first(where: { $0.isIPv4 == destination.isIPv4 }) else { return false }
        return socket.send(bytes, to: destination)
    }

    @discardableResult
    func send(_ bytes: UnsafeRawBufferPointer, to destination: SocketAddress) -> Bool {
        guard let socket = sockets.first(where: { $0.isIPv4 == destination.isIPv4 }) else { return false }
        return socket.send(bytes, to: destination)
    }

    /// Sends consecutive datagrams to one destination without copying them (see
    /// `UDPSocket.send(run:start:ends:to:)`).
    func send(run raw: UnsafeRawBufferPointer, start: Int, ends: UnsafeBufferPointer<Int>, to destination: SocketAddress) {
        guard let socket = sockets.first(where: { $0.isIPv4 == destination.isIPv4 }) else { return }
        socket.send(run: raw, start: start, ends: ends, to: destination)
    }

    func flush() {
        for socket in sockets { socket.flush() }
    }

    func close() {
        for socket in sockets { socket.close() }
        sockets.removeAll()
    }

    // MARK: UDPSocketDelegate

    func udpSocket(_ socket: UDPSocket, received bytes: UnsafeRawBufferPointer, from source: SocketAddress) {
        guard let first = bytes.first else { return }
        if first == 0 {
            onTrackerReply(bytes, source)
        } else if first & 0x0F == 1 && first >> 4 <= 4 {
            onUTP(bytes, source)
        } else {
            droppedUnknown += 1
        }
    }

    func udpSocketDrained(_ socket: UDPSocket) {
        onDrained()
        socket.flush()
    }

    func udpSocket(_ socket: UDPSocket, failedToSendTo destination: SocketAddress, errorCode: Int32) {
        onSendFailed(destination, errorCode)
    }
}
