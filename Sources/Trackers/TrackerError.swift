import BitTorrent

/// Why an announce did not give us a usable response.
///
/// The announcer only needs to know that it failed (to fail over to the next tracker,
/// BEP 12); the cases and their text are for the operator, who sees the last error per
/// tracker on the status endpoint and in the log.
public enum TrackerError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The tracker answered with `failure reason` (BEP 3), or a BEP 15 error packet.
    case failure(reason: String)
    /// The tracker answered with something we could not read.
    case invalidResponse(ResponseProblem)
    /// An HTTP status other than 200, reported by the caller.
    case httpStatus(Int)
    /// Connection refused, DNS failure, timeout, TLS error...: reported by the caller,
    /// which owns the sockets.
    case transport(String)

    public enum ResponseProblem: Equatable, Sendable {
        case empty
        /// `preview` is the first bytes of the body as text, so an HTML error page or
        /// a proxy's login form is recognisable in the log.
        case notBencode(BencodeError, preview: String)
        case notADictionary(found: String)
        /// A dictionary with none of `interval`, `peers`, `peers6` (and no
        /// `failure reason`): not an announce response.
        case noIntervalOrPeers
        case wrongType(key: String, found: String, expected: String)
        /// A compact peer string whose length is not a multiple of 6 (`peers`) or
        /// 18 (`peers6`).
        case truncatedCompactPeers(key: String, length: Int, stride: Int)
    }

    public var description: String {
        switch self {
        case .failure(let reason):
            return "tracker refused the announce: \(reason.isEmpty ? "(no reason given)" : reason)"
        case .httpStatus(let code):
            return "tracker answered HTTP \(code)"
        case .transport(let message):
            return message
        case .invalidResponse(let problem):
            let what: String
            switch problem {
            case .empty:
                what = "the body is empty"
            case .notBencode(let error, let preview):
                what = "it is not bencode (\(error)); it starts with \"\(preview)\""
            case .notADictionary(let found):
                what = "it is a bencoded \(found), not a dictionary"
            case .noIntervalOrPeers:
                what = "it has no `interval`, `peers` or `peers6` and no `failure reason`"
            case .wrongType(let key, let found, let expected):
                what = "`\(key)` is a \(found), expected \(expected)"
            case .truncatedCompactPeers(let key, let length, let stride):
                what = "`\(key)` is \(length) bytes, not a multiple of \(stride)"
            }
            return "invalid tracker response: \(what)"
        }
    }
}

/// Text that came from a tracker, made safe to log and show: lossy UTF-8, control
/// characters (newlines included, so one tracker cannot forge log lines) turned into
/// spaces, trailing NULs and blanks cut (opentracker ends its errors with a NUL), and
/// at most `limit` characters.
enum TrackerText {
    static func sanitize(_ bytes: [UInt8], limit: Int = 512) -> String {
        var text = String(decoding: bytes, as: UTF8.self)
        text = String(String.UnicodeScalarView(text.unicodeScalars.map { scalar in
            scalar.value < 0x20 || scalar.value == 0x7F || (0x80..<0xA0).contains(scalar.value) ? " " : scalar
        }))
        while text.last == " " { text.removeLast() }
        if text.count > limit { text = String(text.prefix(limit)) + "…" }
        return text
    }
}
