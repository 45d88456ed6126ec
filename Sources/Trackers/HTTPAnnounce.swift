import BitTorrent

/// The HTTP tracker protocol (BEP 3, with BEP 7 `peers6`, BEP 23 compact peers and BEP 48
/// scrape URLs): building the request URL and reading the response body. The HTTP
/// client itself lives with the event loop; this is bytes in, values out.
public enum HTTPAnnounce {
    /// The announce URL with the request's query appended:
    ///
    /// `?info_hash=..&peer_id=..&port=..&uploaded=..&downloaded=..&left=..&key=<8 hex digits>`
    /// `&event=..&numwant=..&compact=1&no_peer_id=1[&trackerid=..]`
    ///
    /// - Every byte of `info_hash` and `peer_id` except `A-Za-z0-9-_.~` is
    ///   percent-encoded: trackers compare the decoded bytes, and some (opentracker)
    ///   refuse a hash that does not decode to exactly 20 bytes.
    /// - `key` is 8 upper-case hex digits, as libtorrent sends it.
    /// - `event` is left out for a regular announce (BEP 3).
    /// - Negative counters and `numwant` are sent as 0; no tracker reads a negative.
    /// - `compact=1` because opentracker refuses anything else; `no_peer_id=1` for
    ///   the trackers that still send dictionary peers.
    /// - When the announce URL already has a query (private trackers put a passkey
    ///   there) ours is appended with `&`. A fragment is dropped: it is never sent to
    ///   a server, and the query must come before it.
    public static func url(announceURL: String, request: AnnounceRequest) -> String {
        var base = Substring(announceURL)
        if let hash = base.firstIndex(of: "#") { base = base[..<hash] }
        var url = String(base)
        if !base.contains("?") {
            url += "?"
        } else if base.last != "?" && base.last != "&" {
            url += "&"
        }
        url += "info_hash=" + PercentEncoding.encode(request.infoHash.bytes)
        url += "&peer_id=" + PercentEncoding.encode(request.peerID)
        url += "&port=\(request.port)"
        url += "&uploaded=\(max(0, request.uploaded))"
        url += "&downloaded=\(max(0, request.downloaded))"
        url += "&left=\(max(0, request.left))"
        url += "&key=" + hex8(request.key)
        if let event = request.event.queryValue { url += "&event=" + event }
        url += "&numwant=\(max(0, request.numWant))"
        url += "&compact=1&no_peer_id=1"
        if let trackerID = request.trackerID {
            url += "&trackerid=" + PercentEncoding.encode(Array(trackerID.utf8))
        }
        return url
    }

    /// The scrape URL for an announce URL (BEP 48): the last path component must start
    /// with `announce`, and that word becomes `scrape` (`/announce.php?x=1` becomes
    /// `/scrape.php?x=1`). Nil when the tracker has no scrape convention to follow.
    /// For HTTP(S) trackers only: a BEP 15 UDP tracker scrapes at its announce address.
    public static func scrapeURL(announceURL: String) -> String? {
        let pathEnd = announceURL.firstIndex { $0 == "?" || $0 == "#" } ?? announceURL.endIndex
        let path = announceURL[..<pathEnd]
        // The authority's slashes (`http://`) are not a path: need a slash after them.
        let afterScheme = path.firstRange(of: "://").map(\.upperBound) ?? path.startIndex
        guard let slash = path[afterScheme...].lastIndex(of: "/") else { return nil }
        let component = path[path.index(after: slash)...]
        guard component.hasPrefix("announce") else { return nil }
        let wordEnd = path.index(component.startIndex, offsetBy: "announce".count)
        return String(announceURL[..<component.startIndex]) + "scrape" + String(announceURL[wordEnd...])
    }

    /// Reads an HTTP tracker's announce response body.
    ///
    /// `failure reason` wins over everything else (BEP 3). Otherwise the body must be a
    /// bencoded dictionary with at least one of `interval`, `peers`, `peers6`. Numeric
    /// fields of the wrong type are treated as absent (as libtorrent does); a `peers`
    /// of the wrong type or a compact peer string of the wrong length is an error,
    /// since the peers are what we asked for. Dictionary peers with a host name, a bad
    /// address or a port outside 1...65535 are skipped. Trailing white space after the
    /// dictionary is accepted (some PHP trackers end with a newline). The decoder's
    /// network-message limits bound size (1 MiB), depth and item count.
    public static func parseResponse(_ body: [UInt8]) -> Result<AnnounceResponse, TrackerError> {
        guard !body.isEmpty else { return .failure(.invalidResponse(.empty)) }
        let value: Bencode
        do throws(BencodeError) {
            let (decoded, end) = try BencodeDecoder.decodePrefix(body, limits: .message)
            guard body[end...].allSatisfy(isWhiteSpace) else { throw BencodeError(.trailingData, at: end) }
            value = decoded
        } catch {
            return .failure(.invalidResponse(.notBencode(error, preview: TrackerText.sanitize(Array(body.prefix(40)), limit: 40))))
        }
        guard let dictionary = value.dictionaryValue else {
            return .failure(.invalidResponse(.notADictionary(found: value.typeName)))
        }
        if let reason = dictionary["failure reason"] {
            return .failure(.failure(reason: reason.bytesValue.map { TrackerText.sanitize($0) } ?? "(`failure reason` is a \(reason.typeName))"))
        }
        guard dictionary["interval"] != nil || dictionary["peers"] != nil || dictionary["peers6"] != nil else {
            return .failure(.invalidResponse(.noIntervalOrPeers))
        }

        var peers: [PeerAddress] = []
        switch dictionary["peers"] {
        case nil:
            break
        case .bytes(let compact)?:
            guard let list = PeerAddress.parseCompactList(compact, stride: 6) else {
                return .failure(.invalidResponse(.truncatedCompactPeers(key: "peers", length: compact.count, stride: 6)))
            }
            peers += list
        case .list(let entries)?:
            peers += entries.compactMap(dictionaryPeer)
        case let other?:
            return .failure(.invalidResponse(.wrongType(key: "peers", found: other.typeName, expected: "a byte string or a list")))
        }
        switch dictionary["peers6"] {
        case nil:
            break
        case .bytes(let compact)?:
            guard let list = PeerAddress.parseCompactList(compact, stride: 18) else {
                return .failure(.invalidResponse(.truncatedCompactPeers(key: "peers6", length: compact.count, stride: 18)))
            }
            peers += list
        case let other?:
            return .failure(.invalidResponse(.wrongType(key: "peers6", found: other.typeName, expected: "a byte string")))
        }

        func integer(_ key: String) -> Int? {
            dictionary[key]?.integerValue.map { Int(clamping: $0) }
        }
        let trackerID = dictionary["tracker id"]?.stringValue.flatMap { $0.isEmpty || $0.utf8.count > 256 ? nil : $0 }
        return .success(AnnounceResponse(
            interval: integer("interval"),
            minInterval: integer("min interval"),
            trackerID: trackerID,
            warning: dictionary["warning message"]?.bytesValue.map { TrackerText.sanitize($0) },
            seeders: integer("complete"),
            leechers: integer("incomplete"),
            peers: peers
        ))
    }

    /// `{ip: "1.2.3.4" or "::1", port: 6881}`; nil for anything else.
    private static func dictionaryPeer(_ entry: Bencode) -> PeerAddress? {
        guard let entry = entry.dictionaryValue,
              let text = entry["ip"]?.stringValue, let ip = PeerAddress.IP(text),
              let port = entry["port"]?.integerValue, (1...65535).contains(port) else { return nil }
        return PeerAddress(ip: ip, port: UInt16(port))
    }

    private static func isWhiteSpace(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r") || byte == UInt8(ascii: "\t")
    }

    private static func hex8(_ value: UInt32) -> String {
        let digits = Array("0123456789ABCDEF".utf8)
        return String(decoding: (0..<8).map { digits[Int(value >> (28 - 4 * UInt32($0)) & 0xF)] }, as: UTF8.self)
    }
}
