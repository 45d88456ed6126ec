/// A peer's IP address and port, as trackers hand them out.
///
/// Trackers give peers three ways: BEP 23 compact strings (4 address bytes and a
/// big-endian port), BEP 7 `peers6` (16 address bytes and a port), and BEP 3 lists of
/// dictionaries with the address as text. All three end up here, so the rest of the
/// server deals with one value that hashes, compares and prints the same way whichever
/// route it came by.
public struct PeerAddress: Hashable, Sendable, CustomStringConvertible {
    /// An IPv4 or IPv6 address, stored as a number in network byte order (the first
    /// byte on the wire is the most significant), so it hashes and compares without
    /// a heap allocation.
    public enum IP: Hashable, Sendable, CustomStringConvertible {
        case v4(UInt32)
        case v6(UInt128)

        /// 4 bytes for IPv4, 16 for IPv6; any other length is nil.
        public init?(bytes: some Collection<UInt8>) {
            switch bytes.count {
            case 4: self = .v4(bytes.reduce(0) { $0 << 8 | UInt32($1) })
            case 16: self = .v6(bytes.reduce(0) { $0 << 8 | UInt128($1) })
            default: return nil
            }
        }

        /// Parses a dotted IPv4 address (`1.2.3.4`) or IPv6 text (`::1`,
        /// `2001:db8::1`, `::ffff:1.2.3.4`). Host names are refused: resolving them is
        /// I/O, and a tracker that sends names instead of addresses gets those peers
        /// skipped rather than a DNS lookup per peer.
        public init?(_ text: String) {
            let utf8 = Array(text.utf8)
            if let value = IPText.parseIPv4(utf8[...]) {
                self = .v4(value)
            } else if let value = IPText.parseIPv6(utf8) {
                self = .v6(value)
            } else {
                return nil
            }
        }

        public var bytes: [UInt8] {
            switch self {
            case .v4(let value): return (0..<4).map { UInt8(truncatingIfNeeded: value >> (24 - 8 * $0)) }
            case .v6(let value): return (0..<16).map { UInt8(truncatingIfNeeded: value >> (120 - 8 * $0)) }
            }
        }

        /// 0.0.0.0 or ::, which no peer can be reached at.
        public var isUnspecified: Bool {
            switch self {
            case .v4(let value): return value == 0
            case .v6(let value): return value == 0
            }
        }

        /// Dotted quad for IPv4; RFC 5952 canonical text for IPv6 (lower case, the
        /// longest run of zero groups shortened to `::`, IPv4-mapped addresses with a
        /// dotted tail).
        public var description: String {
            switch self {
            case .v4(let value): return IPText.formatIPv4(value)
            case .v6(let value): return IPText.formatIPv6(value)
            }
        }
    }

    public let ip: IP
    public let port: UInt16

    public init(ip: IP, port: UInt16) {
        self.ip = ip
        self.port = port
    }

    /// A compact peer: 6 bytes (BEP 23) or 18 bytes (BEP 7), address then big-endian
    /// port. Any other length is nil.
    public init?(compact bytes: some Collection<UInt8>) {
        guard bytes.count == 6 || bytes.count == 18 else { return nil }
        let addressEnd = bytes.index(bytes.startIndex, offsetBy: bytes.count - 2)
        guard let ip = IP(bytes: bytes[bytes.startIndex..<addressEnd]) else { return nil }
        let high = bytes[addressEnd]
        let low = bytes[bytes.index(after: addressEnd)]
        self.init(ip: ip, port: UInt16(high) << 8 | UInt16(low))
    }

    /// The compact form: 6 bytes for IPv4, 18 for IPv6.
    public var compact: [UInt8] {
        ip.bytes + [UInt8(port >> 8), UInt8(port & 0xFF)]
    }

    /// Splits a compact peer string into peers of `stride` bytes (6 or 18). Nil when
    /// the length is not a multiple of the stride: a truncated list means the tracker
    /// sent something we do not understand, and guessing where peers start would
    /// hand out wrong addresses.
    public static func parseCompactList(_ bytes: [UInt8], stride: Int) -> [PeerAddress]? {
        precondition(stride == 6 || stride == 18, "compact peers are 6 or 18 bytes")
        guard bytes.count % stride == 0 else { return nil }
        var peers: [PeerAddress] = []
        peers.reserveCapacity(bytes.count / stride)
        var offset = 0
        while offset < bytes.count {
            if let peer = PeerAddress(compact: bytes[offset..<(offset + stride)]) { peers.append(peer) }
            offset += stride
        }
        return peers
    }

    /// `1.2.3.4:6881` or `[::1]:6881`.
    public var description: String {
        switch ip {
        case .v4: return "\(ip):\(port)"
        case .v6: return "[\(ip)]:\(port)"
        }
    }
}

/// Text forms of IP addresses, written here rather than taken from `inet_pton` so the
/// module stays pure (no Glibc) and behaves the same on every platform.
enum IPText {
    /// Four decimal parts of 0...255. Leading zeros are refused: `010` is octal to
    /// some parsers and decimal to others, and glibc's `inet_pton` refuses it too.
    static func parseIPv4(_ text: ArraySlice<UInt8>) -> UInt32? {
        var value: UInt32 = 0
        var parts = 0
        var part: UInt32 = 0
        var digits = 0
        var leadingZero = false
        for byte in text {
            if byte == UInt8(ascii: ".") {
                guard digits > 0, parts < 3 else { return nil }
                value = value << 8 | part
                parts += 1
                part = 0
                digits = 0
                leadingZero = false
            } else if byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") {
                guard !leadingZero else { return nil }
                if digits == 0 && byte == UInt8(ascii: "0") { leadingZero = true }
                part = part * 10 + UInt32(byte - UInt8(ascii: "0"))
                digits += 1
                guard part <= 255 else { return nil }
            } else {
                return nil
            }
        }
        guard digits > 0, parts == 3 else { return nil }
        return value << 8 | part
    }

    /// RFC 4291 section 2.2 text: eight groups of up to four hex digits, at most one
    /// `::` standing for one or more zero groups, optionally a dotted IPv4 tail in
    /// place of the last two groups. Zone ids (`%eth0`) and brackets are refused.
    static func parseIPv6(_ text: [UInt8]) -> UInt128? {
        guard text.count >= 2, text.count <= 45 else { return nil }
        var gap: Int?
        for index in 0..<(text.count - 1) where text[index] == UInt8(ascii: ":") && text[index + 1] == UInt8(ascii: ":") {
            gap = index
            break
        }
        let head: [UInt16]
        let tail: [UInt16]
        if let gap {
            guard let left = groups(text[0..<gap], allowIPv4Tail: false),
                  let right = groups(text[(gap + 2)...], allowIPv4Tail: true) else { return nil }
            guard left.count + right.count <= 7 else { return nil }
            head = left
            tail = right
        } else {
            guard let all = groups(text[...], allowIPv4Tail: true), all.count == 8 else { return nil }
            head = all
            tail = []
        }
        var value: UInt128 = 0
        for group in head { value = value << 16 | UInt128(group) }
        for _ in 0..<(8 - head.count - tail.count) { value <<= 16 }
        for group in tail { value = value << 16 | UInt128(group) }
        return value
    }

    /// Colon-separated hex groups; an empty slice is zero groups. A dotted IPv4 last
    /// part counts as two groups.
    private static func groups(_ text: ArraySlice<UInt8>, allowIPv4Tail: Bool) -> [UInt16]? {
        if text.isEmpty { return [] }
        let parts = text.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
        var result: [UInt16] = []
        for (index, part) in parts.enumerated() {
            if index == parts.count - 1 && allowIPv4Tail && part.contains(UInt8(ascii: ".")) {
                guard let v4 = parseIPv4(part) else { return nil }
                result.append(UInt16(truncatingIfNeeded: v4 >> 16))
                result.append(UInt16(truncatingIfNeeded: v4))
                continue
            }
            guard (1...4).contains(part.count) else { return nil }
            var group: UInt16 = 0
            for byte in part {
                guard let digit = hexValue(byte) else { return nil }
                group = group << 4 | UInt16(digit)
            }
            result.append(group)
        }
        return result
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    static func formatIPv4(_ value: UInt32) -> String {
        "\(value >> 24).\(value >> 16 & 0xFF).\(value >> 8 & 0xFF).\(value & 0xFF)"
    }

    static func formatIPv6(_ value: UInt128) -> String {
        let groups = (0..<8).map { UInt16(truncatingIfNeeded: value >> (112 - 16 * $0)) }
        // ::ffff:a.b.c.d, the form RFC 5952 section 5 recommends for mapped addresses.
        if value >> 32 == 0xFFFF {
            return "::ffff:" + formatIPv4(UInt32(truncatingIfNeeded: value))
        }
        // The longest run of two or more zero groups, the first one on a tie.
        var bestStart = -1
        var bestLength = 1
        var index = 0
        while index < 8 {
            if groups[index] == 0 {
                var end = index
                while end < 8 && groups[end] == 0 { end += 1 }
                if end - index > bestLength {
                    bestStart = index
                    bestLength = end - index
                }
                index = end
            } else {
                index += 1
            }
        }
        func hex(_ range: Range<Int>) -> String {
            groups[range].map { String($0, radix: 16) }.joined(separator: ":")
        }
        guard bestStart >= 0 else { return hex(0..<8) }
        return hex(0..<bestStart) + "::" + hex((bestStart + bestLength)..<8)
    }
}
