import BitTorrent

/// What we tell a tracker in one announce (BEP 3; the same fields go into a BEP 15
/// UDP announce).
///
/// The announcer state machine decides *where* and *with which event*; the caller fills
/// in the transfer counters from the torrent when it builds one of these.
public struct AnnounceRequest: Hashable, Sendable {
    public var infoHash: InfoHash
    /// Our 20-byte peer id.
    public var peerID: [UInt8]
    /// The TCP (and uTP) port peers should connect to.
    public var port: UInt16
    public var uploaded: Int64
    public var downloaded: Int64
    /// Bytes still missing; 0 tells the tracker we are a seed.
    public var left: Int64
    public var event: AnnounceEvent
    /// How many peers we want back. Sent as `numwant`; negative values are sent as 0
    /// over HTTP (BEP 15's -1 "default" has no HTTP spelling).
    public var numWant: Int
    /// A random number that stays the same for the session, so a tracker can tell us
    /// apart from another client behind the same address (and accept us after our IP
    /// changes).
    public var key: UInt32
    /// The `tracker id` the tracker gave us last time, echoed back (BEP 3 addendum).
    public var trackerID: String?

    public init(
        infoHash: InfoHash, peerID: [UInt8], port: UInt16,
        uploaded: Int64, downloaded: Int64, left: Int64,
        event: AnnounceEvent, numWant: Int, key: UInt32, trackerID: String? = nil
    ) {
        precondition(peerID.count == 20, "a peer id is 20 bytes")
        self.infoHash = infoHash
        self.peerID = peerID
        self.port = port
        self.uploaded = uploaded
        self.downloaded = downloaded
        self.left = left
        self.event = event
        self.numWant = numWant
        self.key = key
        self.trackerID = trackerID
    }
}
