import CLibevent
import Glibc

/// Accepts TCP connections on one address. Loop thread only.
public final class TCPListener {
    private var listener: OpaquePointer?
    private let onAccept: (Int32, SocketAddress) -> Void
    private let onError: (String) -> Void
    private var pausedTimer: Timer?
    private unowned let loop: EventLoop
    public let address: SocketAddress

    public struct BindError: Error, CustomStringConvertible {
        public let description: String
        public init(description: String) { self.description = description }
    }

    /// Binds and listens. An IPv6 listener is IPv6-only, so an IPv4 one can share the
    /// port. `onAccept` gets the new socket, which it owns from then on.
    public init(loop: EventLoop, address: SocketAddress, backlog: Int32 = 1024,
                onAccept: @escaping (Int32, SocketAddress) -> Void, onError: @escaping (String) -> Void) throws(BindError) {
        self.loop = loop
        self.address = address
        self.onAccept = onAccept
        self.onError = onError
        var flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC
        if !address.isIPv4 { flags |= LEV_OPT_BIND_IPV6ONLY }
        let context = Unmanaged.passUnretained(self).toOpaque()
        listener = address.withSockAddr { pointer, length in
            evconnlistener_new_bind(loop.base, { _, fd, address, _, context in
                let listener = Unmanaged<TCPListener>.fromOpaque(context!).takeUnretainedValue()
                guard let address, let peer = SocketAddress(address) else { Glibc.close(fd); return }
                listener.onAccept(fd, peer)
            }, context, UInt32(flags), backlog, pointer, Int32(length))
        }
        guard listener != nil else {
            throw BindError(description: "cannot listen on \(address): \(String(cString: strerror(errno)))")
        }
        evconnlistener_set_error_cb(listener, { listener, context in
            let this = Unmanaged<TCPListener>.fromOpaque(context!).takeUnretainedValue()
            this.acceptFailed(errno)
        })
    }

    /// The port actually bound (for port 0 in tests).
    public var boundPort: UInt16 {
        guard let listener else { return 0 }
        let fd = evconnlistener_get_fd(listener)
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let ok = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) == 0 }
        }
        guard ok else { return 0 }
        return withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { SocketAddress($0)?.port ?? 0 }
        }
    }

    /// Out of descriptors: stop accepting for a second rather than spin on the error.
    private func acceptFailed(_ code: Int32) {
        onError("accept on \(address) failed: \(String(cString: strerror(code)))")
        guard code == EMFILE || code == ENFILE || code == ENOBUFS || code == ENOMEM, let listener else { return }
        evconnlistener_disable(listener)
        pausedTimer = Timer(loop: loop, after: 1_000_000) { [unowned self] in
            if let listener = self.listener { evconnlistener_enable(listener) }
            self.pausedTimer = nil
        }
    }

    public func close() {
        pausedTimer?.cancel()
        if let listener { evconnlistener_free(listener) }
        listener = nil
    }

    deinit { close() }
}
