import Glibc

extension SocketAddress {
    /// The address a socket is bound to (the kernel's pick for port 0).
    static func local(of fd: Int32) -> SocketAddress? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        return withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                getsockname(fd, pointer, &length) == 0 ? SocketAddress(pointer) : nil
            }
        }
    }
}
