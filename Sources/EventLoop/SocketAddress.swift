import Glibc

/// An IPv4 or IPv6 address with a port. IPv4-mapped IPv6 addresses are stored as
/// IPv4, so a peer is the same peer whichever socket it came in on.
public struct SocketAddress: Hashable, Sendable, CustomStringConvertible {
    /// 4 bytes for IPv4, 16 for IPv6.
    public let ip: [UInt8]
    public let port: UInt16

    public init?(ip: [UInt8], port: UInt16) {
        if ip.count == 16 && ip[0..<10].allSatisfy({ $0 == 0 }) && ip[10] == 0xFF && ip[11] == 0xFF {
            self.ip = Array(ip[12..<16])
        } else {
            guard ip.count == 4 || ip.count == 16 else { return nil }
            self.ip = ip
        }
        self.port = port
    }

    public init?(ip text: String, port: UInt16) {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self.init(ip: withUnsafeBytes(of: &v4) { Array($0) }, port: port)
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            self.init(ip: withUnsafeBytes(of: &v6) { Array($0) }, port: port)
            return
        }
        return nil
    }

    init?(_ address: UnsafePointer<sockaddr>) {
        switch Int32(address.pointee.sa_family) {
        case AF_INET:
            let v4 = UnsafeRawPointer(address).load(as: sockaddr_in.self)
            var raw = v4.sin_addr
            self.init(ip: withUnsafeBytes(of: &raw) { Array($0) }, port: UInt16(bigEndian: v4.sin_port))
        case AF_INET6:
            let v6 = UnsafeRawPointer(address).load(as: sockaddr_in6.self)
            var raw = v6.sin6_addr
            self.init(ip: withUnsafeBytes(of: &raw) { Array($0) }, port: UInt16(bigEndian: v6.sin6_port))
        default:
            return nil
        }
    }

    public var isIPv4: Bool { ip.count == 4 }

    public var ipString: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        var raw = ip
        _ = raw.withUnsafeMutableBytes { inet_ntop(isIPv4 ? AF_INET : AF_INET6, $0.baseAddress, &buffer, socklen_t(buffer.count)) }
        return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    public var description: String { isIPv4 ? "\(ipString):\(port)" : "[\(ipString)]:\(port)" }

    /// The same address with another port.
    public func with(port: UInt16) -> SocketAddress { SocketAddress(ip: ip, port: port)! }

    func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        if isIPv4 {
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &address.sin_addr) { $0.copyBytes(from: ip) }
            return withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        var address = sockaddr_in6()
        address.sin6_family = sa_family_t(AF_INET6)
        address.sin6_port = port.bigEndian
        withUnsafeMutableBytes(of: &address.sin6_addr) { $0.copyBytes(from: ip) }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
        }
    }
}
