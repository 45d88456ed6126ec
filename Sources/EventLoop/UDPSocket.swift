import CLibevent
import Glibc

/// Hears what a `UDPSocket` receives. Called on the loop thread.
public protocol UDPSocketDelegate: AnyObject {
    /// One datagram. `bytes` is valid only during the call (it is the socket's receive
    /// buffer, reused by the next batch): copy what must outlive it.
    func udpSocket(_ socket: UDPSocket, received bytes: UnsafeRawBufferPointer, from source: SocketAddress)
    /// The datagrams of one readable event have all been delivered: the moment to send
    /// deferred acknowledgements and `flush()` (one ack per drained batch, not per
    /// packet: protocol-notes.md, uTP).
    func udpSocketDrained(_ socket: UDPSocket)
    /// The kernel refused one queued datagram for a reason other than a full buffer
    /// (EHOSTUNREACH, ENETUNREACH, EMSGSIZE, EACCES...): the datagram is dropped. A
    /// UDP tracker client reports its requests failed (`transportFailed`).
    func udpSocket(_ socket: UDPSocket, failedToSendTo destination: SocketAddress, errorCode: Int32)
}

extension UDPSocketDelegate {
    public func udpSocket(_ socket: UDPSocket, failedToSendTo destination: SocketAddress, errorCode: Int32) {}
}

/// One non-blocking UDP socket bound to one address, for uTP and the UDP tracker on the
/// same port number as TCP (peers connect uTP to the port we announce). One per address
/// family: the IPv6 one is IPV6_V6ONLY, so an IPv4 one can bind the same port and every
/// source address arrives in its plain form. Loop thread only.
///
/// - Receiving drains the socket with `recvmmsg`, `batchSize` datagrams a system call,
///   into slots of `maxDatagramSize` bytes allocated once. A datagram longer than its
///   slot (MSG_TRUNC) is dropped and counted: uTP packets are at most 1402 bytes and a
///   tracker reply to our `numwant` of 200 at most 3620 (200 IPv6 peers), so the default
///   4 KiB loses nothing legitimate at 256 KiB of buffer; 64 KiB slots would cost 4 MiB.
///   At most `maxBatchesPerWakeup` calls per readable event, so a flood cannot starve
///   the rest of the loop; libevent calls back again while data remains.
/// - Sending queues datagrams (`send`) and hands them to the kernel in `sendmmsg`
///   batches (`flush`, or automatically once `batchSize` are queued). When the socket
///   buffer is full (EAGAIN) the rest stays queued and goes out when the socket is
///   writable again; past `maxQueuedDatagrams` new datagrams are dropped, as a router
///   would.
/// - Buffers: `bufferSize` (8 MiB) is requested for SO_RCVBUF and SO_SNDBUF, with the
///   *FORCE variants first, which root may use past net.core.rmem_max/wmem_max. The
///   default 208 KiB drops datagrams on loopback under uTP load (DESIGN.md). What the
///   kernel granted is in `receiveBufferSize`/`sendBufferSize` for the caller to log.
public final class UDPSocket {
    public struct Options: Sendable {
        /// Bytes requested for each of SO_RCVBUF and SO_SNDBUF.
        public var bufferSize: Int = 8 << 20
        /// Datagrams a `recvmmsg`/`sendmmsg` call.
        public var batchSize: Int = 64
        /// Bytes of one receive slot; longer datagrams are dropped.
        public var maxDatagramSize: Int = 4096
        public var maxBatchesPerWakeup: Int = 16
        /// Datagrams queued for sending at most.
        public var maxQueuedDatagrams: Int = 16_384
        /// Send runs of equal-size datagrams to one destination as one UDP GSO message
        /// (UDP_SEGMENT): the kernel's per-datagram cost dominates uTP bulk sending, and
        /// one pass through the stack per run instead of per packet about halves it.
        /// Turned off by itself if the kernel refuses it.
        public var segmentationOffload = true

        public init() {}
    }

    public struct BindError: Error, CustomStringConvertible {
        public let description: String
        public init(description: String) { self.description = description }
    }

    /// Counters since the socket opened.
    public struct Statistics: Hashable, Sendable {
        public var receivedDatagrams = 0
        public var receivedBytes = 0
        /// Longer than `maxDatagramSize`: dropped.
        public var truncatedDatagrams = 0
        public var sentDatagrams = 0
        public var sentBytes = 0
        /// Refused by the kernel (reported to the delegate).
        public var sendErrors = 0
        /// Not queued: the queue was full, the socket closed, or the wrong family.
        public var droppedDatagrams = 0
        /// Times the socket buffer was full and sending waited for EV_WRITE.
        public var sendBlocked = 0
    }

    public weak var delegate: UDPSocketDelegate?
    /// The bound address, with the port the kernel chose for port 0.
    public let localAddress: SocketAddress
    public let options: Options
    /// SO_RCVBUF / SO_SNDBUF as the kernel reports them after our request. Linux counts
    /// its bookkeeping too and reports double the bytes it granted for data.
    public let receiveBufferSize: Int
    public let sendBufferSize: Int
    public private(set) var statistics = Statistics()

    private var fd: Int32
    private var readEvent: OpaquePointer?
    private var writeEvent: OpaquePointer?
    private var waitingForWritable = false

    // recvmmsg state, allocated once: `batchSize` headers, vectors, source addresses
    // and slots.
    private let receiveHeaders: UnsafeMutablePointer<seeder_mmsghdr>
    private let receiveVectors: UnsafeMutablePointer<iovec>
    private let receiveNames: UnsafeMutablePointer<sockaddr_storage>
    private let receiveBuffer: UnsafeMutableRawPointer
    // sendmmsg state for one batch.
    private let sendHeaders: UnsafeMutablePointer<seeder_mmsghdr>
    private let sendVectors: UnsafeMutablePointer<iovec>
    private let sendNames: UnsafeMutablePointer<sockaddr_storage>
    /// One UDP_SEGMENT control message per header (cmsghdr, then the u16 size, padded).
    private let sendControls: UnsafeMutableRawPointer
    /// Queued datagrams each sendmmsg header carries (more than one with GSO).
    private let sendRunLengths: UnsafeMutablePointer<Int>
    private var gsoEnabled: Bool
    private static let controlSpace = 24
    private static let maxSegments = 64
    private static let maxGSOBytes = 65_000

    /// Queued datagrams: bytes back to back in `queuedBytes`, `queued[queueHead...]`
    /// not yet sent.
    private struct Queued {
        let offset: Int
        let length: Int
        let destination: SocketAddress
        var name: sockaddr_storage
        let nameLength: socklen_t
    }
    private var queuedBytes: [UInt8] = []
    private var queued: [Queued] = []
    private var queueHead = 0

    /// Senders repeat: a uTP transfer or a tracker sends batch after batch from one
    /// address, so the last source is kept rather than built again per datagram.
    private var lastName = sockaddr_storage()
    private var lastNameLength: socklen_t = 0
    private var lastSource: SocketAddress?

    /// Opens, configures and binds the socket and starts reading.
    public init(loop: EventLoop, address: SocketAddress, options: Options = Options()) throws(BindError) {
        self.options = options
        let family = address.isIPv4 ? AF_INET : AF_INET6
        let fd = socket(family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw BindError(description: "cannot open a UDP socket for \(address): \(Self.describe(errno))") }
        if !address.isIPv4 { _ = seeder_set_int_option(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 1) }
        receiveBufferSize = Self.setBuffer(fd, force: SO_RCVBUFFORCE, plain: SO_RCVBUF, bytes: options.bufferSize)
        sendBufferSize = Self.setBuffer(fd, force: SO_SNDBUFFORCE, plain: SO_SNDBUF, bytes: options.bufferSize)
        guard address.withSockAddr({ bind(fd, $0, $1) }) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw BindError(description: "cannot bind UDP \(address): \(Self.describe(code))")
        }
        guard let bound = Self.boundAddress(fd) else {
            let code = errno
            Glibc.close(fd)
            throw BindError(description: "cannot read the bound UDP address for \(address): \(Self.describe(code))")
        }
        self.fd = fd
        localAddress = bound

        let batch = max(1, min(options.batchSize, 1024))
        receiveHeaders = .allocate(capacity: batch)
        receiveVectors = .allocate(capacity: batch)
        receiveNames = .allocate(capacity: batch)
        receiveBuffer = .allocate(byteCount: batch * max(1, options.maxDatagramSize), alignment: 16)
        sendHeaders = .allocate(capacity: batch)
        sendVectors = .allocate(capacity: batch)
        sendNames = .allocate(capacity: batch)
        sendControls = .allocate(byteCount: batch * Self.controlSpace, alignment: 8)
        sendRunLengths = .allocate(capacity: batch)
        gsoEnabled = options.segmentationOffload

        let context = Unmanaged.passUnretained(self).toOpaque()
        readEvent = event_new(loop.base, fd, Int16(EV_READ | EV_PERSIST), { _, _, context in
            Unmanaged<UDPSocket>.fromOpaque(context!).takeUnretainedValue().readable()
        }, context)
        writeEvent = event_new(loop.base, fd, Int16(EV_WRITE), { _, _, context in
            let this = Unmanaged<UDPSocket>.fromOpaque(context!).takeUnretainedValue()
            this.waitingForWritable = false
            this.flush()
        }, context)
        event_add(readEvent, nil)
    }

    deinit {
        close()
        receiveHeaders.deallocate()
        receiveVectors.deallocate()
        receiveNames.deallocate()
        receiveBuffer.deallocate()
        sendHeaders.deallocate()
        sendVectors.deallocate()
        sendNames.deallocate()
        sendControls.deallocate()
        sendRunLengths.deallocate()
    }

    public var isOpen: Bool { fd >= 0 }
    public var isIPv4: Bool { localAddress.isIPv4 }
    /// Datagrams queued and not yet handed to the kernel.
    public var queuedCount: Int { queued.count - queueHead }

    /// Stops reading and sending and closes the socket; queued datagrams are dropped.
    /// The delegate is not called again.
    public func close() {
        if let readEvent { event_free(readEvent) }
        if let writeEvent { event_free(writeEvent) }
        readEvent = nil
        writeEvent = nil
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
        statistics.droppedDatagrams += queuedCount
        queued.removeAll()
        queuedBytes.removeAll()
        queueHead = 0
    }

    // MARK: Sending

    /// Queues a datagram for `destination`, which must be of the socket's family.
    /// Returns false when it was dropped instead (closed socket, wrong family, too long
    /// for UDP, queue full). It goes out at the next `flush()`, or at once when
    /// `batchSize` datagrams are queued.
    @discardableResult
    public func send(_ bytes: UnsafeRawBufferPointer, to destination: SocketAddress) -> Bool {
        guard fd >= 0, destination.isIPv4 == isIPv4, bytes.count <= 65_507, queuedCount < options.maxQueuedDatagrams else {
            statistics.droppedDatagrams += 1
            return false
        }
        var name = sockaddr_storage()
        let nameLength = destination.withSockAddr { pointer, length in
            withUnsafeMutableBytes(of: &name) { $0.copyMemory(from: UnsafeRawBufferPointer(start: pointer, count: Int(length))) }
            return length
        }
        queued.append(Queued(offset: queuedBytes.count, length: bytes.count, destination: destination, name: name, nameLength: nameLength))
        queuedBytes.append(contentsOf: bytes)
        if queuedCount >= options.batchSize { flush() }
        return true
    }

    @discardableResult
    public func send(_ bytes: [UInt8], to destination: SocketAddress) -> Bool {
        bytes.withUnsafeBytes { send($0, to: destination) }
    }

    /// Sends consecutive datagrams to one destination straight from the caller's memory:
    /// `raw[start ..< ends[0]]`, `raw[ends[0] ..< ends[1]]`, ... With nothing queued
    /// ahead of them they go to the kernel at once, in `sendmmsg` calls of GSO runs,
    /// without being copied; only what the kernel does not take now (a full socket
    /// buffer) is copied into the queue, as `send` would. Returns how many were sent or
    /// queued (the rest were dropped, as by `send`).
    @discardableResult
    public func send(run raw: UnsafeRawBufferPointer, start: Int, ends: UnsafeBufferPointer<Int>,
                     to destination: SocketAddress) -> Int {
        guard !ends.isEmpty else { return 0 }
        guard fd >= 0, destination.isIPv4 == isIPv4 else {
            statistics.droppedDatagrams += ends.count
            return 0
        }
        var done = 0
        if queueHead == queued.count && !waitingForWritable, let base = raw.baseAddress {
            var name = sockaddr_storage()
            let nameLength = destination.withSockAddr { pointer, length in
                withUnsafeMutableBytes(of: &name) { $0.copyMemory(from: UnsafeRawBufferPointer(start: pointer, count: Int(length))) }
                return length
            }
            done = sendDirect(base, start: start, ends: ends, name: name, nameLength: nameLength, destination: destination)
        }
        var accepted = done
        var offset = done == 0 ? start : ends[done - 1]
        for index in done ..< ends.count {
            if send(UnsafeRawBufferPointer(rebasing: raw[offset ..< ends[index]]), to: destination) { accepted += 1 }
            offset = ends[index]
        }
        return accepted
    }

    /// The zero-copy half of `send(run:)`: returns how many datagrams the kernel took or
    /// refused for good (an error other than a full buffer drops them, as `flush` does).
    private func sendDirect(_ base: UnsafeRawPointer, start: Int, ends: UnsafeBufferPointer<Int>, name: sockaddr_storage,
                            nameLength: socklen_t, destination: SocketAddress) -> Int {
        let batch = max(1, min(options.batchSize, 1024))
        var next = 0
        while fd >= 0, next < ends.count {
            var messages = 0
            var index = next
            while messages < batch && index < ends.count {
                let first = index == 0 ? start : ends[index - 1]
                let size = ends[index] - first
                if size > 65_507 {
                    // Longer than UDP allows: dropped, as `send` would.
                    if messages == 0 {
                        statistics.droppedDatagrams += 1
                        index += 1
                        next = index
                        continue
                    }
                    break
                }
                var run = 1
                if gsoEnabled {
                    // Equal sizes, the last of a run may be shorter (UDP_SEGMENT's rule).
                    var total = size
                    var previous = size
                    while run < Self.maxSegments, index + run < ends.count {
                        let candidate = ends[index + run] - ends[index + run - 1]
                        guard previous == size, candidate <= size, total + candidate <= Self.maxGSOBytes else { break }
                        total += candidate
                        previous = candidate
                        run += 1
                    }
                }
                let length = ends[index + run - 1] - first
                sendNames[messages] = name
                sendVectors[messages] = iovec(iov_base: UnsafeMutableRawPointer(mutating: base + first), iov_len: length)
                sendHeaders[messages] = seeder_mmsghdr()
                sendHeaders[messages].msg_hdr.msg_name = UnsafeMutableRawPointer(sendNames + messages)
                sendHeaders[messages].msg_hdr.msg_namelen = nameLength
                sendHeaders[messages].msg_hdr.msg_iov = sendVectors + messages
                sendHeaders[messages].msg_hdr.msg_iovlen = 1
                if run > 1 { setSegmentSize(message: messages, size: size) }
                sendRunLengths[messages] = run
                messages += 1
                index += run
            }
            if messages == 0 { break }
            let result = seeder_sendmmsg(fd, sendHeaders, UInt32(messages), Int32(MSG_DONTWAIT))
            if result > 0 {
                for message in 0 ..< Int(result) {
                    let run = sendRunLengths[message]
                    let first = next == 0 ? start : ends[next - 1]
                    statistics.sentBytes += ends[next + run - 1] - first
                    statistics.sentDatagrams += run
                    next += run
                }
                continue
            }
            switch sendFailed() {
            case .retry: continue
            case .blocked: return next
            case .dropFirst(let code):
                next += sendRunLengths[0]
                delegate?.udpSocket(self, failedToSendTo: destination, errorCode: code)
            }
        }
        return next
    }

    private enum SendFailure {
        case retry
        /// The socket buffer is full: the rest goes when it is writable.
        case blocked
        /// sendmmsg reports the error of the first message only: drop it, go on.
        case dropFirst(errorCode: Int32)
    }

    /// What the failed sendmmsg (errno) means for the batch it was given.
    private func sendFailed() -> SendFailure {
        let code = errno
        if code == EINTR { return .retry }
        if code == EAGAIN || code == EWOULDBLOCK {
            statistics.sendBlocked += 1
            waitingForWritable = true
            event_add(writeEvent, nil)
            return .blocked
        }
        if sendRunLengths[0] > 1 && (code == EIO || code == EINVAL || code == ENOPROTOOPT || code == EOPNOTSUPP) {
            // No UDP GSO here (old kernel, or a device without checksum offload):
            // send datagram by datagram from now on.
            gsoEnabled = false
            return .retry
        }
        statistics.sendErrors += 1
        return .dropFirst(errorCode: code)
    }

    /// The UDP_SEGMENT control message of one sendmmsg header.
    private func setSegmentSize(message: Int, size: Int) {
        let control = sendControls + message * Self.controlSpace
        control.initializeMemory(as: UInt8.self, repeating: 0, count: Self.controlSpace)
        // struct cmsghdr { size_t len; int level; int type; } then the data:
        // CMSG_LEN(2) = 18, CMSG_SPACE(2) = 24 (the macros do not import).
        control.storeBytes(of: 18, as: Int.self)
        control.storeBytes(of: Int32(IPPROTO_UDP), toByteOffset: 8, as: Int32.self)
        control.storeBytes(of: Int32(103 /* UDP_SEGMENT */), toByteOffset: 12, as: Int32.self)
        control.storeBytes(of: UInt16(size), toByteOffset: 16, as: UInt16.self)
        sendHeaders[message].msg_hdr.msg_control = control
        sendHeaders[message].msg_hdr.msg_controllen = Self.controlSpace
    }

    /// Hands queued datagrams to the kernel, `batchSize` a system call, until the queue
    /// is empty or the socket buffer is full (then the rest goes when it is writable).
    public func flush() {
        let batch = max(1, min(options.batchSize, 1024))
        sending: while fd >= 0, !waitingForWritable, queueHead < queued.count {
            var messages = 0
            var next = queueHead
            let useGSO = gsoEnabled
            let result: Int32 = queuedBytes.withUnsafeMutableBytes { bytes in
                while messages < batch && next < queued.count {
                    let first = queued[next]
                    var run = 1
                    if useGSO {
                        // Consecutive datagrams to the same destination, all but the last of
                        // the first one's size, back to back in `queuedBytes`.
                        var total = first.length
                        while run < Self.maxSegments, next + run < queued.count {
                            let candidate = queued[next + run]
                            guard queued[next + run - 1].length == first.length, candidate.length <= first.length,
                                  total + candidate.length <= Self.maxGSOBytes,
                                  candidate.destination == first.destination else { break }
                            total += candidate.length
                            run += 1
                        }
                    }
                    let length = queued[next + run - 1].offset + queued[next + run - 1].length - first.offset
                    sendNames[messages] = first.name
                    sendVectors[messages] = iovec(iov_base: bytes.baseAddress.map { $0 + first.offset }, iov_len: length)
                    sendHeaders[messages] = seeder_mmsghdr()
                    sendHeaders[messages].msg_hdr.msg_name = UnsafeMutableRawPointer(sendNames + messages)
                    sendHeaders[messages].msg_hdr.msg_namelen = first.nameLength
                    sendHeaders[messages].msg_hdr.msg_iov = sendVectors + messages
                    sendHeaders[messages].msg_hdr.msg_iovlen = 1
                    if run > 1 { setSegmentSize(message: messages, size: first.length) }
                    sendRunLengths[messages] = run
                    messages += 1
                    next += run
                }
                return seeder_sendmmsg(fd, sendHeaders, UInt32(messages), Int32(MSG_DONTWAIT))
            }
            if result > 0 {
                for message in 0..<Int(result) {
                    let run = sendRunLengths[message]
                    for index in queueHead..<(queueHead + run) { statistics.sentBytes += queued[index].length }
                    statistics.sentDatagrams += run
                    queueHead += run
                }
                continue
            }
            switch sendFailed() {
            case .retry: continue
            case .blocked: break sending
            case .dropFirst(let code):
                let failed = queued[queueHead]
                queueHead += sendRunLengths[0]
                delegate?.udpSocket(self, failedToSendTo: failed.destination, errorCode: code)
            }
        }
        if queueHead == queued.count {
            queued.removeAll(keepingCapacity: queued.capacity <= 4096)
            queuedBytes.removeAll(keepingCapacity: queuedBytes.capacity <= 1 << 20)
            queueHead = 0
        }
    }

    // MARK: Receiving

    private func readable() {
        let batch = max(1, min(options.batchSize, 1024))
        let slot = max(1, options.maxDatagramSize)
        var calls = 0
        while fd >= 0, calls < options.maxBatchesPerWakeup {
            calls += 1
            for index in 0..<batch {
                receiveVectors[index] = iovec(iov_base: receiveBuffer + index * slot, iov_len: slot)
                receiveHeaders[index] = seeder_mmsghdr()
                receiveHeaders[index].msg_hdr.msg_name = UnsafeMutableRawPointer(receiveNames + index)
                receiveHeaders[index].msg_hdr.msg_namelen = socklen_t(MemoryLayout<sockaddr_storage>.size)
                receiveHeaders[index].msg_hdr.msg_iov = receiveVectors + index
                receiveHeaders[index].msg_hdr.msg_iovlen = 1
            }
            let received = seeder_recvmmsg(fd, receiveHeaders, UInt32(batch), Int32(MSG_DONTWAIT))
            if received < 0 {
                if errno == EINTR { continue }
                // EAGAIN: drained. Anything else (a queued ICMP error) is not ours to
                // act on per datagram; the next event reads on.
                break
            }
            for index in 0..<Int(received) {
                let header = receiveHeaders[index]
                if header.msg_hdr.msg_flags & Int32(MSG_TRUNC) != 0 {
                    statistics.truncatedDatagrams += 1
                    continue
                }
                guard let source = source(receiveNames + index, length: header.msg_hdr.msg_namelen) else { continue }
                let length = Int(header.msg_len)
                statistics.receivedDatagrams += 1
                statistics.receivedBytes += length
                delegate?.udpSocket(self, received: UnsafeRawBufferPointer(start: receiveBuffer + index * slot, count: length), from: source)
                if fd < 0 { return }  // closed by the delegate
            }
            if Int(received) < batch { break }
        }
        if fd >= 0 { delegate?.udpSocketDrained(self) }
    }

    private func source(_ name: UnsafeMutablePointer<sockaddr_storage>, length: socklen_t) -> SocketAddress? {
        let size = min(Int(length), MemoryLayout<sockaddr_storage>.size)
        if let lastSource, size == Int(lastNameLength),
           withUnsafeBytes(of: &lastName, { memcmp($0.baseAddress!, name, size) == 0 }) {
            return lastSource
        }
        let address = UnsafeRawPointer(name).withMemoryRebound(to: sockaddr.self, capacity: 1) { SocketAddress($0) }
        lastName = name.pointee
        lastNameLength = socklen_t(size)
        lastSource = address
        return address
    }

    // MARK: Setup helpers

    private static func setBuffer(_ fd: Int32, force: Int32, plain: Int32, bytes: Int) -> Int {
        let value = Int32(clamping: bytes)
        if seeder_set_int_option(fd, SOL_SOCKET, force, value) != 0 {
            // Not root: the kernel caps this at net.core.rmem_max / wmem_max.
            _ = seeder_set_int_option(fd, SOL_SOCKET, plain, value)
        }
        return Int(seeder_get_int_option(fd, SOL_SOCKET, plain))
    }

    private static func boundAddress(_ fd: Int32) -> SocketAddress? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        return withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                getsockname(fd, pointer, &length) == 0 ? SocketAddress(pointer) : nil
            }
        }
    }

    static func describe(_ code: Int32) -> String {
        String(cString: strerror(code))
    }
}
