import CLibevent
import Glibc
import Synchronization

public protocol TCPConnectionDelegate: AnyObject {
    /// An outgoing connection was established.
    func connectionEstablished(_ connection: TCPConnection)
    /// The socket is readable: take the bytes with `receive` or `readAvailable` before
    /// returning, or stop reading (the socket stays readable, so this is called again).
    /// An end of stream found by reading is reported after this returns.
    func connectionReadable(_ connection: TCPConnection)
    /// The output buffer drained to the low watermark: room for more.
    func connectionWritable(_ connection: TCPConnection)
    /// The connection ended (EOF, error, or failed to connect). Not called after `close()`.
    func connectionClosed(_ connection: TCPConnection, reason: String)
}

/// A TCP connection: output through a libevent bufferevent, input read by us. Loop
/// thread only.
///
/// Input does not go through the bufferevent: its `evbuffer_read` asks the kernel how
/// much is waiting (an `ioctl(FIONREAD)`) before every read and copies into its own
/// chunks, from which the peer wire's decoder copied again. Downloading, a read comes
/// every few KiB, so that was a system call and a copy of every byte too many: `receive`
/// reads with one `recv` straight into the caller's buffer.
public final class TCPConnection {
    private var bev: OpaquePointer?
    /// Our EV_READ event on the socket, added while connected and reading is wanted.
    private var readEvent: OpaquePointer?
    private var wantsReading = true
    private var readEventAdded = false
    /// How a `recv` ended the stream, reported once the read callback returns.
    private var endOfInput: String?
    private var inReadCallback = false
    public weak var delegate: TCPConnectionDelegate?
    public let remote: SocketAddress
    public private(set) var isConnected: Bool

    /// Output is "low" at or below this many bytes: `connectionWritable` fires then.
    public static let writeLowWatermark = 512 << 10
    /// Most bytes one write (writev) call hands the kernel. libevent's default is 16 KiB,
    /// one system call and one loop turn per block when seeding; the socket buffer
    /// (autotuned to megabytes) takes far more than that.
    public static let maxSingleWrite = 1 << 20
    /// Most bytes to read per read callback: when the loop falls behind a fast
    /// downloading peer, one `recv` takes up to this much of what gathered.
    public static let maxSingleRead = 256 << 10

    /// Wraps an accepted socket.
    public init(loop: EventLoop, acceptedSocket fd: Int32, remote: SocketAddress) {
        self.remote = remote
        isConnected = true
        _ = seeder_set_int_option(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
        bev = bufferevent_socket_new(loop.base, fd, Int32(BEV_OPT_CLOSE_ON_FREE.rawValue))
        install(loop: loop, fd: fd)
        updateReadEvent()
    }

    /// Starts connecting to `remote`; the delegate hears `connectionEstablished` or
    /// `connectionClosed`.
    public init(loop: EventLoop, connectingTo remote: SocketAddress, bindTo local: SocketAddress? = nil) {
        self.remote = remote
        isConnected = false
        var fd = socket(remote.isIPv4 ? AF_INET : AF_INET6, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd >= 0, let local, local.isIPv4 == remote.isIPv4 {
            let bound = local.withSockAddr { bind(fd, $0, $1) }
            if bound != 0 { Glibc.close(fd); fd = -1 }
        }
        if fd >= 0 { _ = seeder_set_int_option(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1) }
        bev = fd >= 0 ? bufferevent_socket_new(loop.base, fd, Int32(BEV_OPT_CLOSE_ON_FREE.rawValue)) : nil
        install(loop: loop, fd: fd)
        if let bev {
            let started = remote.withSockAddr { bufferevent_socket_connect(bev, UnsafeMutablePointer(mutating: $0), Int32($1)) }
            if started != 0 { failLater(loop: loop, "connect failed: \(String(cString: strerror(errno)))") }
        } else {
            failLater(loop: loop, "socket failed: \(String(cString: strerror(errno)))")
        }
    }

    private var failTimer: Timer?

    private func failLater(loop: EventLoop, _ reason: String) {
        // Report on the next loop turn, after the caller has set the delegate.
        failTimer = Timer(loop: loop, after: 0) { [unowned self] in
            self.failTimer = nil
            self.closeAndNotify(reason)
        }
    }

    private func install(loop: EventLoop, fd: Int32) {
        guard let bev else { return }
        let context = Unmanaged.passUnretained(self).toOpaque()
        readEvent = event_new(loop.base, fd, Int16(EV_READ | EV_PERSIST), { _, _, context in
            let this = Unmanaged<TCPConnection>.fromOpaque(context!).takeUnretainedValue()
            this.readable()
        }, context)
        bufferevent_setcb(bev, nil, { _, context in
            let this = Unmanaged<TCPConnection>.fromOpaque(context!).takeUnretainedValue()
            this.delegate?.connectionWritable(this)
        }, { _, events, context in
            let this = Unmanaged<TCPConnection>.fromOpaque(context!).takeUnretainedValue()
            this.handle(events: events)
        }, context)
        bufferevent_setwatermark(bev, Int16(EV_WRITE), Self.writeLowWatermark, 0)
        _ = bufferevent_set_max_single_write(bev, Self.maxSingleWrite)
        bufferevent_disable(bev, Int16(EV_READ))
        bufferevent_enable(bev, Int16(EV_WRITE))
    }

    /// Adds or removes the read event to match what is wanted: reading starts once the
    /// connection is established.
    private func updateReadEvent() {
        guard let readEvent else { return }
        let want = wantsReading && isConnected && bev != nil
        guard want != readEventAdded else { return }
        if want { event_add(readEvent, nil) } else { event_del(readEvent) }
        readEventAdded = want
    }

    private func readable() {
        guard bev != nil else { return }
        guard let delegate else {
            // Nobody to take the bytes: stop, rather than be woken for them forever.
            setReading(false)
            return
        }
        endOfInput = nil
        inReadCallback = true
        delegate.connectionReadable(self)
        inReadCallback = false
        let reason = endOfInput
        endOfInput = nil
        // Unless the delegate closed the connection itself meanwhile.
        if let reason, bev != nil { closeAndNotify(reason) }
    }

    /// Reads what the socket holds, up to `buffer.count` bytes, into `buffer`; the count
    /// read (0 when nothing was waiting, or when the stream ended). Call from
    /// `connectionReadable`.
    public func receive(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        guard let bev, endOfInput == nil, buffer.count > 0 else { return 0 }
        let fd = bufferevent_getfd(bev)
        while true {
            let count = recv(fd, buffer.baseAddress, buffer.count, 0)
            if count > 0 { return count }
            if count == 0 {
                endInput("closed by peer")
                return 0
            }
            let code = errno
            if code == EINTR { continue }
            if code != EAGAIN && code != EWOULDBLOCK { endInput(String(cString: strerror(code))) }
            return 0
        }
    }

    private func endInput(_ reason: String) {
        if inReadCallback {
            // The caller may be in the middle of its own state (its decoder): it hears of
            // the end once it returns from `connectionReadable`.
            endOfInput = reason
            setReading(false)
        } else {
            closeAndNotify(reason)
        }
    }

    private func handle(events: Int16) {
        let flags = Int32(events)
        if flags & Int32(BEV_EVENT_CONNECTED) != 0 {
            isConnected = true
            updateReadEvent()
            delegate?.connectionEstablished(self)
            return
        }
        if flags & Int32(BEV_EVENT_EOF) != 0 {
            closeAndNotify("closed by peer")
        } else if flags & Int32(BEV_EVENT_ERROR) != 0 {
            let code = errno
            closeAndNotify(code != 0 ? String(cString: strerror(code)) : "socket error")
        } else if flags & Int32(BEV_EVENT_TIMEOUT) != 0 {
            closeAndNotify("timed out")
        }
    }

    private func closeAndNotify(_ reason: String) {
        guard bev != nil || failTimer == nil else { return }
        close()
        delegate?.connectionClosed(self, reason: reason)
    }

    /// Bytes waiting to be sent.
    public var outputLength: Int {
        guard let bev else { return 0 }
        return evbuffer_get_length(bufferevent_get_output(bev))
    }

    /// Reads what the socket holds (one `recv` of up to `maxSingleRead` bytes) and hands
    /// it to `body`. Call from `connectionReadable`.
    public func readAvailable(_ body: (UnsafeRawBufferPointer) -> Void) {
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.maxSingleRead, alignment: 16)
        defer { scratch.deallocate() }
        let count = receive(into: scratch)
        if count > 0 { body(UnsafeRawBufferPointer(rebasing: scratch[0..<count])) }
    }

    public func write(_ bytes: UnsafeRawBufferPointer) {
        guard let bev, bytes.count > 0 else { return }
        bufferevent_write(bev, bytes.baseAddress, bytes.count)
    }

    public func write(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { write($0) }
    }

    /// Queues all of `buffer` without copying it: the output references the memory and
    /// frees it once sent (or when the connection closes). `buffer` is empty afterwards.
    public func write(_ buffer: OutgoingBuffer) {
        guard let bev, let base = buffer.take() else { return }
        // The pool (if any) stays alive until libevent is done with the memory.
        let pool = buffer.pool.map { Unmanaged.passRetained($0).toOpaque() }
        let added = evbuffer_add_reference(bufferevent_get_output(bev), base, buffer.count, { data, _, extra in
            let pool = extra.map { Unmanaged<BufferPool>.fromOpaque($0).takeRetainedValue() }
            OutgoingBuffer.release(UnsafeMutableRawPointer(mutating: data!), to: pool)
        }, pool)
        if added != 0 {
            OutgoingBuffer.release(base, to: buffer.pool)
            if let pool { Unmanaged<BufferPool>.fromOpaque(pool).release() }
        }
    }

    /// Queues a copy of part of `buffer`; the buffer keeps its memory.
    public func write(_ buffer: OutgoingBuffer, range: Range<Int>) {
        guard let base = buffer.base, range.lowerBound >= 0, range.upperBound <= buffer.count else { return }
        write(UnsafeRawBufferPointer(start: base + range.lowerBound, count: range.count))
    }

    /// Stops or resumes reading from the socket (download limits, back-pressure).
    public func setReading(_ enabled: Bool) {
        wantsReading = enabled
        updateReadEvent()
    }

    /// Closes at once, dropping unsent output. The delegate is not called.
    public func close() {
        failTimer?.cancel()
        failTimer = nil
        if let readEvent {
            // Before the bufferevent closes the socket.
            event_free(readEvent)
            self.readEvent = nil
            readEventAdded = false
        }
        if let bev {
            bufferevent_setcb(bev, nil, nil, nil, nil)
            bufferevent_free(bev)
        }
        bev = nil
    }

    public var isOpen: Bool { bev != nil }

    deinit { close() }
}

/// Bytes prepared off the loop (a disk thread writes blocks straight into it) and then
/// handed to a connection without another copy. Owns its memory until a connection
/// takes it; gives it back otherwise. One thread at a time.
public final class OutgoingBuffer: @unchecked Sendable {
    public private(set) var base: UnsafeMutableRawPointer?
    public let count: Int
    /// Where the memory goes back to; nil when it came from malloc.
    fileprivate let pool: BufferPool?

    /// Uninitialised memory of `count` bytes: from `pool` when it fits there.
    public init(count: Int, pool: BufferPool? = nil) {
        self.count = count
        if let pool, count <= pool.bufferSize, let memory = pool.take() {
            self.pool = pool
            base = memory
        } else {
            self.pool = nil
            base = malloc(max(count, 1))
        }
    }

    public var bytes: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: base, count: base == nil ? 0 : count)
    }

    fileprivate func take() -> UnsafeMutableRawPointer? {
        defer { base = nil }
        return base
    }

    fileprivate static func release(_ memory: UnsafeMutableRawPointer, to pool: BufferPool?) {
        if let pool { pool.give(memory) } else { free(memory) }
    }

    deinit {
        if let base { Self.release(base, to: pool) }
    }
}

/// Fixed-size buffers kept for reuse. Buffers of a few hundred KiB are past malloc's
/// mmap threshold or get trimmed back to the kernel when freed, so allocating one per
/// disk read costs page faults and zeroed pages on every block batch; keeping a few
/// costs `maxFree * bufferSize` bytes at most. Any thread.
public final class BufferPool: Sendable {
    public let bufferSize: Int
    public let maxFree: Int
    private let free = Mutex<[UInt]>([])

    public init(bufferSize: Int, maxFree: Int) {
        self.bufferSize = bufferSize
        self.maxFree = maxFree
    }

    func take() -> UnsafeMutableRawPointer? {
        if let address = free.withLock({ $0.popLast() }) { return UnsafeMutableRawPointer(bitPattern: address) }
        return malloc(bufferSize)
    }

    func give(_ memory: UnsafeMutableRawPointer) {
        let kept = free.withLock { list in
            guard list.count < maxFree else { return false }
            list.append(UInt(bitPattern: memory))
            return true
        }
        if !kept { Glibc.free(memory) }
    }

    deinit {
        for address in free.withLock({ $0 }) { Glibc.free(UnsafeMutableRawPointer(bitPattern: address)) }
    }
}
