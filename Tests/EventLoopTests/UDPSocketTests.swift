import Glibc
import Testing
@testable import EventLoop

/// Runs the loop until `stop()` or `limit` microseconds, whichever comes first; returns
/// false when the limit ended it.
func runLoop(_ loop: EventLoop, limit: Int64) -> Bool {
    var timedOut = false
    let guardTimer = Timer(loop: loop, after: limit) {
        timedOut = true
        loop.stop()
    }
    loop.run()
    guardTimer.cancel()
    return !timedOut
}

/// A delegate that hands each datagram and each drained batch to closures.
final class UDPRecorder: UDPSocketDelegate {
    var onDatagram: (UDPSocket, [UInt8], SocketAddress) -> Void = { _, _, _ in }
    var onDrained: (UDPSocket) -> Void = { _ in }
    var failures: [(SocketAddress, Int32)] = []
    var datagrams = 0
    var batches = 0
    var largestBatch = 0
    private var currentBatch = 0

    func udpSocket(_ socket: UDPSocket, received bytes: UnsafeRawBufferPointer, from source: SocketAddress) {
        datagrams += 1
        currentBatch += 1
        onDatagram(socket, Array(bytes), source)
    }

    func udpSocketDrained(_ socket: UDPSocket) {
        batches += 1
        largestBatch = max(largestBatch, currentBatch)
        currentBatch = 0
        onDrained(socket)
    }

    func udpSocket(_ socket: UDPSocket, failedToSendTo destination: SocketAddress, errorCode: Int32) {
        failures.append((destination, errorCode))
    }
}

/// Datagram `sequence`: its number, then a pattern derived from it; 1...1400 bytes.
func datagram(_ sequence: Int) -> [UInt8] {
    let length = 4 + (sequence * 7919) % 1397
    var bytes = withUnsafeBytes(of: UInt32(sequence).bigEndian) { Array($0) }
    for index in 4..<length { bytes.append(UInt8(truncatingIfNeeded: sequence &* 31 &+ index)) }
    return bytes
}

@Suite struct UDPSocketTests {
    @Test(arguments: ["127.0.0.1", "::1"])
    func tenThousandDatagramsEchoedInBatches(host: String) throws {
        let loop = EventLoop()
        let sender = try UDPSocket(loop: loop, address: SocketAddress(ip: host, port: 0)!)
        let echoer = try UDPSocket(loop: loop, address: SocketAddress(ip: host, port: 0)!)
        let total = 10_000
        let window = 1000
        var sent = 0
        var sentBytes = 0
        var echoed = 0
        var echoedBytes = 0
        var corrupt = 0
        var seen = Set<Int>()

        let echo = UDPRecorder()
        echo.onDatagram = { socket, bytes, source in
            let sequence = Int(bytes.prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
            if source != sender.localAddress || bytes != datagram(sequence) { corrupt += 1 }
            socket.send(bytes, to: source)
        }
        echo.onDrained = { $0.flush() }  // answers go out once per drained batch
        echoer.delegate = echo

        func refill(_ socket: UDPSocket) {
            while sent < total && sent - echoed < window {
                let bytes = datagram(sent)
                #expect(socket.send(bytes, to: echoer.localAddress))
                sentBytes += bytes.count
                sent += 1
            }
            socket.flush()
        }
        let back = UDPRecorder()
        back.onDatagram = { _, bytes, source in
            let sequence = Int(bytes.prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
            if source != echoer.localAddress || bytes != datagram(sequence) || !seen.insert(sequence).inserted { corrupt += 1 }
            echoed += 1
            echoedBytes += bytes.count
        }
        back.onDrained = { socket in
            if echoed == total { loop.stop() } else { refill(socket) }
        }
        sender.delegate = back
        refill(sender)

        #expect(runLoop(loop, limit: 20_000_000), "stalled at \(echoed) of \(total) echoes")
        #expect(corrupt == 0)
        #expect(echoed == total && echoedBytes == sentBytes)
        #expect(echo.datagrams == total)
        #expect(sender.statistics.sentDatagrams == total && sender.statistics.sentBytes == sentBytes)
        #expect(echoer.statistics.receivedDatagrams == total && echoer.statistics.receivedBytes == sentBytes)
        #expect(echoer.statistics.sentDatagrams == total && sender.statistics.receivedBytes == sentBytes)
        #expect(sender.statistics.truncatedDatagrams == 0 && sender.statistics.droppedDatagrams == 0)
        // Batched: fewer readable events than datagrams, some with many datagrams each.
        #expect(echo.batches < total / 4 && echo.largestBatch > 32)
    }

    /// `send(run:)` hands a run straight to the kernel (GSO runs of equal sizes, a
    /// shorter last one, sizes that break runs), in order and unaltered; with datagrams
    /// already queued it queues behind them instead, so order still holds.
    @Test(arguments: ["127.0.0.1", "::1"])
    func runsGoOutInOrderWithoutTheQueue(host: String) throws {
        let loop = EventLoop()
        let sender = try UDPSocket(loop: loop, address: SocketAddress(ip: host, port: 0)!)
        let receiver = try UDPSocket(loop: loop, address: SocketAddress(ip: host, port: 0)!)
        // 150 full-size datagrams (more than one GSO message and one sendmmsg batch), a
        // short one, full ones again, sizes that vary, then a second run after a queued one.
        var sizes = Array(repeating: 1402, count: 150) + [300] + Array(repeating: 1402, count: 70)
        sizes += (0..<40).map { 20 + ($0 * 37) % 1300 }
        var expected: [[UInt8]] = []
        var raw: [UInt8] = [9, 9, 9]  // the run starts past unrelated bytes
        var ends: [Int] = []
        for (index, size) in sizes.enumerated() {
            var bytes = withUnsafeBytes(of: UInt32(index).bigEndian) { Array($0) }
            for k in 4..<size { bytes.append(UInt8(truncatingIfNeeded: index &* 13 &+ k)) }
            expected.append(bytes)
            raw += bytes
            ends.append(raw.count)
        }
        var received: [[UInt8]] = []
        let recorder = UDPRecorder()
        recorder.onDatagram = { _, bytes, _ in
            received.append(bytes)
            if received.count == expected.count + 3 { loop.stop() }
        }
        receiver.delegate = recorder
        let sent = raw.withUnsafeBytes { raw in
            ends.withUnsafeBufferPointer { sender.send(run: raw, start: 3, ends: $0, to: receiver.localAddress) }
        }
        #expect(sent == sizes.count)
        #expect(sender.queuedCount == 0)  // nothing was queued: it all went to the kernel
        // Queued first, then a run: the run waits behind the queued datagram.
        sender.send([1, 1], to: receiver.localAddress)
        let tail: [UInt8] = [2, 2, 3, 3, 3]
        let second = tail.withUnsafeBytes { raw in
            [2, 5].withUnsafeBufferPointer { sender.send(run: raw, start: 0, ends: $0, to: receiver.localAddress) }
        }
        #expect(second == 2 && sender.queuedCount == 3)
        sender.flush()
        #expect(runLoop(loop, limit: 10_000_000), "received \(received.count) of \(expected.count + 3)")
        #expect(received.prefix(expected.count).elementsEqual(expected))
        #expect(received.suffix(3) == [[1, 1], [2, 2], [3, 3, 3]])
        #expect(sender.statistics.sentDatagrams == expected.count + 3)
        #expect(sender.statistics.sentBytes == raw.count - 3 + 7)
        #expect(sender.statistics.droppedDatagrams == 0 && sender.statistics.sendErrors == 0)
    }

    @Test func buffersAreLarge() throws {
        let loop = EventLoop()
        let socket = try UDPSocket(loop: loop, address: SocketAddress(ip: "127.0.0.1", port: 0)!)
        // Linux reports double the granted bytes. Root gets the 8 MiB asked for through
        // SO_RCVBUFFORCE; others get net.core.rmem_max, far above the 208 KiB default.
        let minimum = geteuid() == 0 ? 8 << 20 : 1 << 20
        #expect(socket.receiveBufferSize >= minimum)
        #expect(socket.sendBufferSize >= minimum)
    }

    @Test func ipv4AndIPv6ShareAPortNumber() throws {
        let loop = EventLoop()
        let v6 = try UDPSocket(loop: loop, address: SocketAddress(ip: "::", port: 0)!)
        let v4 = try UDPSocket(loop: loop, address: SocketAddress(ip: "0.0.0.0", port: v6.localAddress.port)!)
        #expect(v4.localAddress.port == v6.localAddress.port)
        #expect(v4.isIPv4 && !v6.isIPv4)
        // The same family twice on one port is refused: no SO_REUSEADDR sharing.
        #expect(throws: UDPSocket.BindError.self) {
            try UDPSocket(loop: loop, address: SocketAddress(ip: "0.0.0.0", port: v6.localAddress.port)!)
        }
    }

    @Test func oversizedDatagramsAreDroppedAndCounted() throws {
        let loop = EventLoop()
        let sender = try UDPSocket(loop: loop, address: SocketAddress(ip: "127.0.0.1", port: 0)!)
        let receiver = try UDPSocket(loop: loop, address: SocketAddress(ip: "127.0.0.1", port: 0)!)
        let recorder = UDPRecorder()
        var sizes: [Int] = []
        recorder.onDatagram = { _, bytes, _ in
            sizes.append(bytes.count)
            if bytes.count == 3 { loop.stop() }
        }
        receiver.delegate = recorder
        sender.send([UInt8](repeating: 7, count: 5000), to: receiver.localAddress)
        sender.send([UInt8](repeating: 1, count: 4096), to: receiver.localAddress)
        sender.send([], to: receiver.localAddress)
        sender.send([1, 2, 3], to: receiver.localAddress)
        sender.flush()
        #expect(runLoop(loop, limit: 5_000_000))
        #expect(sizes == [4096, 0, 3])
        #expect(receiver.statistics.truncatedDatagrams == 1)
    }

    @Test func refusedSendsAreReportedAndWrongFamiliesRefused() throws {
        let loop = EventLoop()
        let socket = try UDPSocket(loop: loop, address: SocketAddress(ip: "127.0.0.1", port: 0)!)
        let recorder = UDPRecorder()
        socket.delegate = recorder
        #expect(!socket.send([1], to: SocketAddress(ip: "::1", port: 9)!))
        #expect(socket.statistics.droppedDatagrams == 1)
        // Port 0 is not a destination: the kernel refuses that one datagram, the next go.
        let peer = try UDPSocket(loop: loop, address: SocketAddress(ip: "127.0.0.1", port: 0)!)
        let peerRecorder = UDPRecorder()
        peerRecorder.onDatagram = { _, _, _ in loop.stop() }
        peer.delegate = peerRecorder
        socket.send([1], to: SocketAddress(ip: "127.0.0.1", port: 0)!)
        socket.send([2], to: peer.localAddress)
        socket.flush()
        #expect(runLoop(loop, limit: 5_000_000))
        #expect(recorder.failures.count == 1 && socket.statistics.sendErrors == 1)
        #expect(peerRecorder.datagrams == 1)
        socket.close()
        #expect(!socket.send([3], to: peer.localAddress))
    }

    @Test func closingFromTheDelegateStopsDelivery() throws {
        let loop = EventLoop()
        let sender = try UDPSocket(loop: loop, address: SocketAddress(ip: "127.0.0.1", port: 0)!)
        let receiver = try UDPSocket(loop: loop, address: SocketAddress(ip: "127.0.0.1", port: 0)!)
        let recorder = UDPRecorder()
        recorder.onDatagram = { socket, _, _ in socket.close() }
        receiver.delegate = recorder
        for index in 0..<10 { sender.send([UInt8(index)], to: receiver.localAddress) }
        sender.flush()
        let stopper = Timer(loop: loop, after: 300_000) { loop.stop() }
        _ = runLoop(loop, limit: 5_000_000)
        stopper.cancel()
        #expect(recorder.datagrams == 1 && recorder.batches == 0)
        #expect(!receiver.isOpen)
    }
}
