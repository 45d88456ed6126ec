/// What `GET /status` returns and `seeder status` prints: the server and each torrent
/// at one instant. Field names are the JSON keys, snake_case for scripts (jq, Python).
public struct StatusSnapshot: Codable, Sendable {
    public struct Transfer: Codable, Sendable {
        /// Bytes per second, averaged over the last 10 s.
        public var uploadRate: Int64
        public var downloadRate: Int64
        /// Payload bytes since the server started.
        public var uploaded: Int64
        public var downloaded: Int64

        enum CodingKeys: String, CodingKey {
            case uploadRate = "upload_rate", downloadRate = "download_rate", uploaded, downloaded
        }
    }

    public struct Peers: Codable, Sendable {
        public var tcp: Int
        public var utp: Int
        public var total: Int { tcp + utp }
    }

    public struct Tracker: Codable, Sendable {
        public var url: String
        public var tier: Int
        /// `announcing`, `working` (the last announce succeeded), `failing`, or
        /// `not contacted`.
        public var status: String
        public var lastError: String?
        public var warning: String?
        public var seeders: Int?
        public var leechers: Int?
        /// Seconds until the next announce to this tracker, when one is scheduled.
        public var nextAnnounceIn: Int?
        public var lastSuccessAgo: Int?

        enum CodingKeys: String, CodingKey {
            case url, tier, status, warning, seeders, leechers
            case lastError = "last_error", nextAnnounceIn = "next_announce_in", lastSuccessAgo = "last_success_ago"
        }
    }

    public struct Torrent: Codable, Sendable {
        public var name: String
        public var infoHash: String
        /// `queued`, `checking`, `seeding`, `error` or `stopped`.
        public var state: String
        public var error: String?
        /// Share of pieces held and verified, 0 ... 1.
        public var progress: Double
        public var size: Int64
        public var piecesHave: Int
        public var pieces: Int
        public var transfer: Transfer
        public var peers: Peers
        public var trackers: [Tracker]

        enum CodingKeys: String, CodingKey {
            case name, state, error, progress, size, pieces, transfer, peers, trackers
            case infoHash = "info_hash", piecesHave = "pieces_have"
        }
    }

    public struct Counters: Codable, Sendable {
        public var blocksServed: Int64
        public var hashFailures: Int64
        public var peerFaults: Int64
        public var announcesSucceeded: Int64
        public var announcesFailed: Int64
        public var utpRetransmits: Int64
        public var utpSocket = UTPSocket()

        enum CodingKeys: String, CodingKey {
            case blocksServed = "blocks_served", hashFailures = "hash_failures", peerFaults = "peer_faults"
            case announcesSucceeded = "announces_succeeded", announcesFailed = "announces_failed"
            case utpRetransmits = "utp_retransmits", utpSocket = "utp_socket"
        }
    }

    /// What reached the uTP socket that was not a healthy connection's traffic: the
    /// numbers that show a scan, a SYN flood or a broken peer stack from outside.
    public struct UTPSocket: Codable, Sendable, Equatable {
        public var datagramsReceived: Int64 = 0
        /// Not uTP at all: bad version, truncated header, overrunning extensions.
        public var malformed: Int64 = 0
        /// For no connection of ours; answered with a rate-limited RESET.
        public var stray: Int64 = 0
        public var synsReceived: Int64 = 0
        /// SYNs answered with RESET because the connection table was full.
        public var refused: Int64 = 0
        /// Half-open connections pushed out by newer SYNs, or that never completed.
        public var halfOpenEvicted: Int64 = 0
        public var halfOpenExpired: Int64 = 0
        /// Connections whose half-open entry was gone, proved by their SYN cookie.
        public var cookiesAccepted: Int64 = 0

        enum CodingKeys: String, CodingKey {
            case datagramsReceived = "datagrams_received", malformed, stray, synsReceived = "syns_received", refused
            case halfOpenEvicted = "half_open_evicted", halfOpenExpired = "half_open_expired"
            case cookiesAccepted = "cookies_accepted"
        }
    }

    public var version: String
    public var uptime: Int
    public var listenPort: Int
    public var transfer: Transfer
    /// Bytes by transport since start, for the metrics.
    public var uploadedByTransport: [String: Int64]
    public var downloadedByTransport: [String: Int64]
    public var peers: Peers
    public var counters: Counters
    public var uploadLimit: Int64
    public var downloadLimit: Int64
    public var torrents: [Torrent]

    enum CodingKeys: String, CodingKey {
        case version, uptime, transfer, peers, counters, torrents
        case listenPort = "listen_port", uploadedByTransport = "uploaded_by_transport"
        case downloadedByTransport = "downloaded_by_transport"
        case uploadLimit = "upload_limit", downloadLimit = "download_limit"
    }
}
