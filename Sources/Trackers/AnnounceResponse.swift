/// What a tracker answered to an announce, already bounded to values the announcer can
/// act on without further checks.
///
/// Whatever protocol it came over (HTTP here, BEP 15 UDP through the caller), the
/// response passes through `init`, which is where the bounds live:
///
/// - `interval` is clamped to 60 s ... 24 h, and a missing, zero or negative interval
///   becomes 1800 s. A tracker saying "every second" would have a thousand torrents
///   hammering it; one saying "every ten years" (or a garbage number) would silently
///   drop us from its swarms, since trackers forget peers after about two intervals.
///   1800 s is what opentracker and most public trackers send.
/// - `minInterval` is clamped to 0 ... 24 h; negative is dropped.
/// - Negative seeder and leecher counts are dropped.
/// - Peers with port 0 or the unspecified address (0.0.0.0, ::) are dropped, since
///   nothing can be reached there; duplicates are dropped; at most `maxPeers` are kept.
public struct AnnounceResponse: Hashable, Sendable {
    public static let defaultInterval = 1800
    public static let minimumInterval = 60
    public static let maximumInterval = 86_400
    /// More peers than any tracker hands out for a `numwant` we would send
    /// (opentracker caps at 200, libtorrent asks for 200); past it a response is
    /// hostile or broken, and a bounded list keeps the connection queue bounded.
    public static let maxPeers = 2000

    /// Seconds until the next regular announce.
    public let interval: Int
    /// Seconds that must pass before announcing again early, if the tracker said.
    public let minInterval: Int?
    /// To be echoed back as `trackerid` in later announces to this tracker.
    public let trackerID: String?
    /// `warning message`: the announce worked but the tracker has something to say.
    public let warning: String?
    /// `complete`: peers with the whole torrent.
    public let seeders: Int?
    /// `incomplete`: peers still downloading.
    public let leechers: Int?
    public let peers: [PeerAddress]

    public init(
        interval: Int?, minInterval: Int? = nil, trackerID: String? = nil, warning: String? = nil,
        seeders: Int? = nil, leechers: Int? = nil, peers: [PeerAddress] = []
    ) {
        self.interval = Self.clampInterval(interval)
        self.minInterval = minInterval.flatMap { $0 < 0 ? nil : min($0, Self.maximumInterval) }
        self.trackerID = trackerID
        self.warning = warning
        self.seeders = seeders.flatMap { $0 < 0 ? nil : $0 }
        self.leechers = leechers.flatMap { $0 < 0 ? nil : $0 }
        var seen = Set<PeerAddress>()
        var kept: [PeerAddress] = []
        for peer in peers where peer.port != 0 && !peer.ip.isUnspecified {
            guard kept.count < Self.maxPeers else { break }
            if seen.insert(peer).inserted { kept.append(peer) }
        }
        self.peers = kept
    }

    /// See the type's documentation for why these bounds.
    public static func clampInterval(_ seconds: Int?) -> Int {
        guard let seconds, seconds > 0 else { return defaultInterval }
        return min(max(seconds, minimumInterval), maximumInterval)
    }
}
