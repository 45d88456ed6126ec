import BitTorrent
import Trackers

/// The BEP 15 UDP tracker protocol on the wire: building requests and reading replies.
/// Bytes in, values out; the client state machine decides what to send when.
///
/// Every field is big-endian. Requests (what we send):
///
/// - connect, 16 bytes: `[0] u64 0x41727101980 (the protocol magic) [8] u32 action 0
///   [12] u32 transaction id`.
/// - announce, 98 bytes plus BEP 41 options: `[0] u64 connection id [8] u32 action 1
///   [12] u32 transaction id [16] info-hash [36] peer id [56] u64 downloaded [64] u64 left
///   [72] u64 uploaded [80] u32 event (0 none, 1 completed, 2 started, 3 stopped)
///   [84] u32 ip (0: the source address) [88] u32 key [92] i32 num_want (-1: the
///   tracker's default) [96] u16 port [98] options`.
/// - scrape, 16 + 20 n bytes: `[0] u64 connection id [8] u32 action 2
///   [12] u32 transaction id [16 + 20 i] info-hash i`.
///
/// Replies (what trackers send), each starting `[0] u32 action [4] u32 transaction id`:
///
/// - connect (action 0): `[8] u64 connection id`, 16 bytes.
/// - announce (action 1): `[8] i32 interval [12] i32 leechers [16] i32 seeders
///   [20] peers`, 6 bytes a peer (4 address bytes, port) when the reply came over IPv4 and
///   18 (16 address bytes, port) over IPv6: the format follows the address family of the
///   packet, not anything in it, so the caller must say which it was.
/// - scrape (action 2): `[8 + 12 i] i32 seeders, i32 completed, i32 leechers` per
///   requested info-hash, in request order.
/// - error (action 3): `[8] message`, any length, for any request.
///
/// Replies may be longer than the fields we read (BEP 15: "clients should accept
/// longer packets"); a peer list that does not end on a peer boundary has its partial
/// last peer dropped, as libtorrent does. Shorter than the fields we need is an invalid
/// reply.
public enum UDPTrackerMessage {
    /// BEP 15's protocol id, the first 8 bytes of a connect request. opentracker
    /// ignores a connect without exactly this value.
    public static let protocolMagic: UInt64 = 0x417_2710_1980

    /// BEP 15 actions, the first word of every reply and the second of every request.
    public enum Action: UInt32, Sendable {
        case connect = 0
        case announce = 1
        case scrape = 2
        case error = 3
    }

    /// The size of an announce request without BEP 41 options.
    public static let announceLength = 98
    /// The smallest announce reply that carries the fields we read (interval, leechers,
    /// seeders), with no peers.
    public static let announceReplyHeaderLength = 20
    /// The most info-hashes one scrape request carries. BEP 15 says "about 74", which is
    /// what fits a 1500-byte Ethernet frame minus headers (16 + 74 * 20 = 1496 bytes of
    /// UDP payload for the request, 8 + 74 * 12 = 896 for the reply); opentracker's
    /// limit is the same.
    public static let maxScrapeHashes = 74

    // MARK: Requests

    public static func connectRequest(transactionID: UInt32) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(16)
        out.appendBigEndian(protocolMagic)
        out.appendBigEndian(Action.connect.rawValue)
        out.appendBigEndian(transactionID)
        return out
    }

    /// An announce request. `urlData` is the path and query of the tracker URL, sent as
    /// BEP 41 options (see `URLData`); empty sends none (a plain 98-byte announce).
    ///
    /// Counters below zero are sent as 0 (no tracker reads a negative), and any negative
    /// `numWant` as -1, BEP 15's "the tracker's default"; a `numWant` beyond `Int32` is
    /// capped. The `ip` field is always 0 (use the packet's source address): a tracker
    /// honours another value only from a trusted proxy, and we are not one.
    public static func announceRequest(
        connectionID: UInt64, transactionID: UInt32, request: AnnounceRequest, urlData: some Collection<UInt8> = [UInt8]()
    ) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(announceLength + URLData.encodedLength(urlData.count))
        out.appendBigEndian(connectionID)
        out.appendBigEndian(Action.announce.rawValue)
        out.appendBigEndian(transactionID)
        out.append(contentsOf: request.infoHash.bytes)
        // `peerID` is a var: keep the layout whatever it was set to.
        out.append(contentsOf: request.peerID.prefix(20))
        out.append(contentsOf: repeatElement(0, count: max(0, 20 - request.peerID.count)))
        out.appendBigEndian(UInt64(max(0, request.downloaded)))
        out.appendBigEndian(UInt64(max(0, request.left)))
        out.appendBigEndian(UInt64(max(0, request.uploaded)))
        out.appendBigEndian(request.event.udpValue)
        out.appendBigEndian(UInt32(0))
        out.appendBigEndian(request.key)
        let numWant: Int32 = request.numWant < 0 ? -1 : Int32(min(request.numWant, Int(Int32.max)))
        out.appendBigEndian(UInt32(bitPattern: numWant))
        out.appendBigEndian(request.port)
        URLData.appendOptions(urlData, to: &out)
        return out
    }

    /// A scrape request for at most `maxScrapeHashes` info-hashes (the caller splits
    /// longer lists; see `UDPTrackerClient`).
    public static func scrapeRequest(connectionID: UInt64, transactionID: UInt32, infoHashes: some Collection<InfoHash>) -> [UInt8] {
        precondition(infoHashes.count <= maxScrapeHashes, "at most \(maxScrapeHashes) info-hashes a scrape")
        var out: [UInt8] = []
        out.reserveCapacity(16 + 20 * infoHashes.count)
        out.appendBigEndian(connectionID)
        out.appendBigEndian(Action.scrape.rawValue)
        out.appendBigEndian(transactionID)
        for hash in infoHashes { out.append(contentsOf: hash.bytes) }
        return out
    }

    // MARK: Replies

    /// The first 8 bytes every reply starts with. Nil for a datagram under 8 bytes,
    /// which is not a tracker reply at all (the caller ignores it). The action is raw:
    /// an unknown action is the client's to judge, against what it asked.
    public static func replyHeader(_ bytes: UnsafeRawBufferPointer) -> (action: UInt32, transactionID: UInt32)? {
        guard bytes.count >= 8 else { return nil }
        return (bytes.loadBigEndianUInt32(at: 0), bytes.loadBigEndianUInt32(at: 4))
    }

    /// The connection id of a connect reply, or why it is unusable.
    public static func parseConnectReply(_ bytes: UnsafeRawBufferPointer) -> Result<UInt64, TrackerError> {
        guard bytes.count >= 16 else { return .failure(invalid("connect reply of \(bytes.count) bytes, expected 16")) }
        return .success(bytes.loadBigEndianUInt64(at: 8))
    }

    /// An announce reply as an `AnnounceResponse` (which bounds the interval, drops
    /// negative counts, unreachable and duplicate peers).
    ///
    /// An 8-byte reply (header only) is opentracker's answer to an info-hash that is not
    /// on its whitelist: a refusal, reported as `.failure`, so the announcer moves on
    /// instead of retransmitting to a tracker that will never list the torrent. Any
    /// other reply shorter than 20 bytes is invalid.
    public static func parseAnnounceReply(_ bytes: UnsafeRawBufferPointer, ipv6: Bool) -> Result<AnnounceResponse, TrackerError> {
        if bytes.count == 8 {
            return .failure(.failure(reason: "empty announce reply (opentracker sends this for an info-hash not on its whitelist)"))
        }
        guard bytes.count >= announceReplyHeaderLength else {
            return .failure(invalid("announce reply of \(bytes.count) bytes, expected at least \(announceReplyHeaderLength)"))
        }
        let interval = Int(Int32(bitPattern: bytes.loadBigEndianUInt32(at: 8)))
        let leechers = Int(Int32(bitPattern: bytes.loadBigEndianUInt32(at: 12)))
        let seeders = Int(Int32(bitPattern: bytes.loadBigEndianUInt32(at: 16)))
        let stride = ipv6 ? 18 : 6
        let count = (bytes.count - announceReplyHeaderLength) / stride
        var peers: [PeerAddress] = []
        peers.reserveCapacity(min(count, AnnounceResponse.maxPeers))
        var offset = announceReplyHeaderLength
        // AnnounceResponse keeps at most maxPeers distinct usable peers; reading a few
        // past it leaves room for the duplicates and unusable ones it drops.
        for _ in 0..<min(count, 2 * AnnounceResponse.maxPeers) {
            if let peer = PeerAddress(compact: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + stride)])) {
                peers.append(peer)
            }
            offset += stride
        }
        return .success(AnnounceResponse(interval: interval, seeders: seeders, leechers: leechers, peers: peers))
    }

    /// The scrape counts for `infoHashes`, the hashes of the request this replies to,
    /// in order. Fewer entries than hashes is invalid; more are ignored.
    public static func parseScrapeReply(_ bytes: UnsafeRawBufferPointer, infoHashes: [InfoHash]) -> Result<[UDPScrapeResult], TrackerError> {
        let needed = 8 + 12 * infoHashes.count
        guard bytes.count >= needed else {
            return .failure(invalid("scrape reply of \(bytes.count) bytes for \(infoHashes.count) info-hashes, expected \(needed)"))
        }
        var results: [UDPScrapeResult] = []
        results.reserveCapacity(infoHashes.count)
        for (index, hash) in infoHashes.enumerated() {
            let offset = 8 + 12 * index
            results.append(UDPScrapeResult(
                infoHash: hash,
                seeders: count(bytes.loadBigEndianUInt32(at: offset)),
                completed: count(bytes.loadBigEndianUInt32(at: offset + 4)),
                leechers: count(bytes.loadBigEndianUInt32(at: offset + 8))
            ))
        }
        return .success(results)
    }

    /// The message of an error reply (action 3), made safe to log: see `UDPTrackerText`.
    public static func parseErrorReply(_ bytes: UnsafeRawBufferPointer) -> String {
        guard bytes.count > 8 else { return "" }
        return UDPTrackerText.sanitize(UnsafeRawBufferPointer(rebasing: bytes[8...]))
    }

    /// A reply we could not read. `TrackerError.ResponseProblem` describes HTTP bodies
    /// (bencode), so a malformed datagram is reported with its own words.
    static func invalid(_ what: String) -> TrackerError {
        .transport("invalid UDP tracker reply: \(what)")
    }

    /// A count as trackers send it: i32 on the wire, where a negative is garbage.
    private static func count(_ raw: UInt32) -> Int {
        max(0, Int(Int32(bitPattern: raw)))
    }
}

/// One info-hash's counts from a scrape reply.
public struct UDPScrapeResult: Hashable, Sendable {
    public var infoHash: InfoHash
    /// Peers with the whole torrent.
    public var seeders: Int
    /// Times the tracker saw `completed`.
    public var completed: Int
    /// Peers still downloading.
    public var leechers: Int

    public init(infoHash: InfoHash, seeders: Int, completed: Int, leechers: Int) {
        self.infoHash = infoHash
        self.seeders = seeders
        self.completed = completed
        self.leechers = leechers
    }
}

/// Text a tracker sent, made safe to log and show (the Trackers module keeps its own
/// copy internal): lossy UTF-8; control characters, newlines included, turned into
/// spaces so a tracker cannot forge log lines; trailing NULs and blanks cut
/// (opentracker ends its error text with a NUL); at most `limit` characters.
enum UDPTrackerText {
    static func sanitize(_ bytes: UnsafeRawBufferPointer, limit: Int = 512) -> String {
        // No more input than `limit` characters can need (4 bytes each), so a 64 KiB
        // hostile message costs no more than a short one.
        let text = String(decoding: bytes.prefix(4 * limit + 4), as: UTF8.self)
        var scalars = String.UnicodeScalarView()
        var kept = 0
        var truncated = false
        for scalar in text.unicodeScalars {
            if kept == limit {
                truncated = true
                break
            }
            let control = scalar.value < 0x20 || scalar.value == 0x7F || (0x80..<0xA0).contains(scalar.value)
            scalars.append(control ? " " : scalar)
            kept += 1
        }
        var result = String(scalars)
        while result.last == " " { result.removeLast() }
        if truncated || bytes.count > 4 * limit + 4 { result += "…" }
        return result
    }
}

extension [UInt8] {
    mutating func appendBigEndian<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.bigEndian) { append(contentsOf: $0) }
    }
}

extension UnsafeRawBufferPointer {
    /// Callers check the length first; unaligned loads because datagram fields are not
    /// aligned to anything.
    func loadBigEndianUInt32(at offset: Int) -> UInt32 {
        UInt32(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    func loadBigEndianUInt64(at offset: Int) -> UInt64 {
        UInt64(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }
}
