import Logging

/// Everything an operator can set. The defaults here are the embedded default config,
/// and Config/seeder.toml lists the same keys with the same values (a test keeps the
/// two in step).
public struct SeederConfig: Equatable, Sendable {
    public struct TorrentEntry: Equatable, Sendable {
        /// Path of the .torrent file.
        public var file: String
        /// Save path for this torrent; nil means the global data directory.
        public var dataDirectory: String?
        /// Bytes per second for this torrent; nil means `torrent_upload_limit` /
        /// `torrent_download_limit`.
        public var uploadLimit: Int64?
        public var downloadLimit: Int64?

        public init(file: String, dataDirectory: String? = nil, uploadLimit: Int64? = nil, downloadLimit: Int64? = nil) {
            self.file = file
            self.dataDirectory = dataDirectory
            self.uploadLimit = uploadLimit
            self.downloadLimit = downloadLimit
        }
    }

    // [network]
    /// TCP port for peers; the UDP port (uTP, UDP trackers) uses the same number.
    public var listenPort = 6881
    /// IPv4 address to listen on; empty disables IPv4.
    public var bindIPv4 = "0.0.0.0"
    /// IPv6 address to listen on; empty disables IPv6.
    public var bindIPv6 = "::"
    /// uTP (BEP 29) on the UDP port, incoming and outgoing; false leaves TCP only.
    public var utpEnabled = true
    /// Which transport outgoing peer connections use.
    public var outgoing: OutgoingTransport = .preferUTP

    /// How we dial peers.
    public enum OutgoingTransport: String, Equatable, Sendable, CaseIterable {
        /// uTP first; TCP when uTP does not connect within its connect timeout.
        case preferUTP = "prefer_utp"
        /// TCP first; uTP when TCP does not connect.
        case preferTCP = "prefer_tcp"
        case tcpOnly = "tcp_only"
        case utpOnly = "utp_only"
    }

    // [storage]
    public var dataDirectory: String
    public var torrentsDirectory: String
    public var stateDirectory: String
    public var diskThreads = 0
    public var maxOpenFiles = 512
    /// Seconds between resume-data saves while a torrent downloads (also saved at
    /// completion and at shutdown).
    public var resumeInterval = 30
    /// Reserve each file's full length (posix_fallocate) before its first write,
    /// instead of growing sparse files.
    public var preallocate = false

    // [limits]
    /// Bytes per second; 0 is unlimited.
    public var uploadLimit: Int64 = 0
    public var downloadLimit: Int64 = 0
    /// Limits for each torrent that sets none of its own; 0 is unlimited.
    public var torrentUploadLimit: Int64 = 0
    public var torrentDownloadLimit: Int64 = 0
    /// Bytes a limit may let through at once after a quiet spell; 0 picks one from the
    /// rate (a twentieth of a second's worth, at least 16 KiB where the rate allows).
    public var burst: Int64 = 0
    /// Count BitTorrent message headers against the limits as well as piece data.
    public var countOverhead = false
    public var maxConnections = 500
    public var maxConnectionsPerTorrent = 100
    public var maxConnectionsPerIP = 4
    public var maxHalfOpen = 64
    /// Peers unchoked at once per torrent, rotated; 0 unchokes every interested peer.
    public var uploadSlots = 0
    /// Failed pieces an address may contribute to before it is banned for the session.
    public var invalidThreshold = 3

    // [trackers]
    /// Seconds an announce may take before it counts as failed.
    public var announceTimeout = 30
    /// Seconds shutdown waits for `stopped` announces, for all torrents together.
    public var stopTimeout = 5
    /// Announces in flight at once, across all torrents.
    public var maxConcurrentAnnounces = 8
    /// Seconds over which the first announces of torrents loaded together are spread.
    public var announceJitter = 5
    /// Peers asked for in each announce.
    public var numWant = 200
    /// UDP tracker retransmissions (BEP 15: 15 s, then doubling) before the tracker
    /// counts as failed and its tier moves on.
    public var udpTrackerRetries = 2

    // [status]
    /// Where the status endpoint (/status, /metrics) listens; nil turns it off.
    public var statusAddress: ListenAddress? = ListenAddress("127.0.0.1:9180")

    // [log]
    public var logLevel: Logger.Level = .info

    // [[torrent]]
    public var torrents: [TorrentEntry] = []

    /// The paths under `root` that a fresh install uses: /var/lib/seeder for the
    /// system service.
    public init(root: String = SeederConfig.defaultRoot) {
        dataDirectory = root + "/data"
        torrentsDirectory = root + "/torrents"
        stateDirectory = root + "/state"
    }

    /// /var/lib/seeder when running as root (the systemd service), otherwise
    /// $XDG_DATA_HOME/seeder or ~/.local/share/seeder, so a user can try it without
    /// write access to /var.
    public static var defaultRoot: String {
        if getuid() == 0 { return "/var/lib/seeder" }
        if let xdg = environment("XDG_DATA_HOME"), !xdg.isEmpty { return xdg + "/seeder" }
        if let home = environment("HOME"), !home.isEmpty { return home + "/.local/share/seeder" }
        return "/var/lib/seeder"
    }

    private static func environment(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        return String(cString: value)
    }
}

#if canImport(Glibc)
import Glibc
#endif
