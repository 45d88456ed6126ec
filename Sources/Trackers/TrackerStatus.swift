/// What we know about one tracker of a torrent, for the status endpoint and the log.
///
/// Times are the announcer's monotonic microseconds; the caller converts them for
/// display. The last error stays after a later success (with its time), so an operator
/// can see a tracker that flaps; `consecutiveFailures` says whether it is failing now.
public struct TrackerStatus: Hashable, Sendable {
    public let url: String
    /// BEP 12 tier, 0 first.
    public var tier: Int
    /// A `started` announce to this tracker succeeded in this session, so it lists us.
    public var started: Bool
    public var lastSuccess: UInt64?
    public var lastFailure: UInt64?
    /// The text of the last failure: the tracker's `failure reason`, an HTTP status, a
    /// transport error, or what was wrong with the response.
    public var lastError: String?
    public var consecutiveFailures: Int
    /// From the last successful response; nil when that response did not say.
    public var seeders: Int?
    public var leechers: Int?
    public var warning: String?
    /// Seconds, as bounded by `AnnounceResponse`.
    public var interval: Int?
    public var minInterval: Int?
    /// The last `tracker id` this tracker gave us; sent back as `trackerid`.
    public var trackerID: String?
    /// When this tracker is due next; nil when it is not the next to be announced to
    /// or no announce is scheduled.
    public var nextAnnounce: UInt64?
    /// An announce to this tracker is in flight.
    public var isAnnouncing: Bool

    public init(url: String, tier: Int) {
        self.url = url
        self.tier = tier
        started = false
        consecutiveFailures = 0
        isAnnouncing = false
    }
}
