/// BEP 41 announce options: the extension that lets a UDP tracker see the path and query
/// of its URL, which BEP 15 alone drops. Private trackers put a passkey there
/// (`udp://tracker.example:6969/announce?passkey=...`), and trackers that serve several
/// sites on one port tell them apart by the path.
///
/// Options follow the 98 bytes of an announce request, each one a type byte:
///
/// - 0, EndOfOptions: one byte, no length; parsing stops.
/// - 1, NOP: one byte, no length; skipped.
/// - 2, URLData: a length byte and that many bytes of the URL's `path?query`. One option
///   carries at most 255 bytes, so a longer string is sent as several URLData options in a
///   row, which the tracker concatenates.
///
/// Parsing also stops at the end of the packet, so we send URLData options only and no
/// EndOfOptions, as libtorrent does (one byte less, same meaning). Unknown option types
/// have a length byte in BEP 41 and are skipped by it.
public enum URLData {
    public static let endOfOptions: UInt8 = 0
    public static let nop: UInt8 = 1
    public static let urlData: UInt8 = 2
    /// The most a single option carries: its length is one byte.
    public static let maxChunk = 255

    /// Bytes the options for `count` bytes of URL data take: two header bytes per chunk.
    public static func encodedLength(_ count: Int) -> Int {
        count + 2 * ((count + maxChunk - 1) / maxChunk)
    }

    /// The options for `data` (a URL's `path?query`), in chunks of at most 255 bytes;
    /// nothing for empty data.
    public static func encode(_ data: some Collection<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        appendOptions(data, to: &out)
        return out
    }

    static func appendOptions(_ data: some Collection<UInt8>, to out: inout [UInt8]) {
        var rest = data[...]
        while !rest.isEmpty {
            let chunk = rest.prefix(maxChunk)
            out.append(urlData)
            out.append(UInt8(chunk.count))
            out.append(contentsOf: chunk)
            rest = rest.dropFirst(chunk.count)
        }
    }

    /// The URL data in the options of an announce request (the bytes after its first
    /// 98), as a tracker reads them: URLData chunks concatenated, NOPs skipped, other
    /// types skipped by their length, stopping at EndOfOptions or the end. Nil when an
    /// option runs past the end of the packet. For tests and the fuzzer; a client never
    /// receives options.
    public static func decode(_ options: some Collection<UInt8>) -> [UInt8]? {
        let bytes = Array(options)
        var result: [UInt8] = []
        var index = 0
        while index < bytes.count {
            let type = bytes[index]
            index += 1
            switch type {
            case endOfOptions:
                return result
            case nop:
                continue
            default:
                guard index < bytes.count else { return nil }
                let length = Int(bytes[index])
                index += 1
                guard length <= bytes.count - index else { return nil }
                if type == urlData { result.append(contentsOf: bytes[index..<(index + length)]) }
                index += length
            }
        }
        return result
    }
}

/// A `udp://host:port/path?query` tracker URL, split into what the caller needs to
/// reach the tracker (host to resolve, port) and what goes into BEP 41 URL data.
///
/// - The scheme is `udp`, in any case. The port is required: BEP 15 has no default.
/// - The host is a name, a dotted IPv4 address, or an IPv6 address in brackets
///   (`udp://[2001:db8::1]:6969`); brackets are removed. User info (`user@`) is dropped.
/// - `urlData` is everything from the first `/` or `?` after the authority up to a
///   fragment (`#...`), which is never sent: `/announce?passkey=abc`. Empty when the URL
///   has neither.
public struct UDPTrackerURL: Hashable, Sendable {
    public var host: String
    public var port: UInt16
    public var urlData: String

    public init(host: String, port: UInt16, urlData: String = "") {
        self.host = host
        self.port = port
        self.urlData = urlData
    }

    public init?(_ url: String) {
        var rest = Substring(url)
        guard rest.count > 6, rest.prefix(6).lowercased() == "udp://" else { return nil }
        rest = rest.dropFirst(6)
        if let hash = rest.firstIndex(of: "#") { rest = rest[..<hash] }
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
        var authority = rest[..<authorityEnd]
        urlData = String(rest[authorityEnd...])
        if let at = authority.lastIndex(of: "@") { authority = authority[authority.index(after: at)...] }
        let portText: Substring
        if authority.first == "[" {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let afterHost = authority[authority.index(after: close)...]
            guard afterHost.first == ":" else { return nil }
            portText = afterHost.dropFirst()
        } else {
            guard let colon = authority.lastIndex(of: ":") else { return nil }
            host = String(authority[..<colon])
            // An IPv6 address needs its brackets, or its colons read as a port.
            guard !host.contains(":") else { return nil }
            portText = authority[authority.index(after: colon)...]
        }
        guard !host.isEmpty, !host.contains(where: { $0 == "[" || $0 == "]" || $0 == " " }) else { return nil }
        guard !portText.isEmpty, portText.count <= 5, portText.allSatisfy({ $0.isASCII && $0.isNumber }),
              let port = UInt16(portText), port != 0 else { return nil }
        self.port = port
    }
}
