/// Counts connections so that limits hold globally, per torrent and per IP. Pure
/// bookkeeping; the server asks before accepting or dialing and reports closes.
public struct ConnectionLimits {
    public var maxConnections: Int
    public var maxPerTorrent: Int
    public var maxPerIP: Int
    public var maxHalfOpen: Int

    public private(set) var total = 0
    public private(set) var halfOpen = 0
    private var perIP: [[UInt8]: Int] = [:]
    private var perTorrent: [Int: Int] = [:]

    public init(maxConnections: Int, maxPerTorrent: Int, maxPerIP: Int, maxHalfOpen: Int) {
        self.maxConnections = maxConnections
        self.maxPerTorrent = maxPerTorrent
        self.maxPerIP = maxPerIP
        self.maxHalfOpen = maxHalfOpen
    }

    public func canAdd(ip: [UInt8]) -> Bool {
        total < maxConnections && perIP[ip, default: 0] < maxPerIP
    }

    public func canDial(ip: [UInt8]) -> Bool {
        canAdd(ip: ip) && halfOpen < maxHalfOpen
    }

    public func hasRoom(torrent: Int) -> Bool {
        perTorrent[torrent, default: 0] < maxPerTorrent
    }

    public func count(ip: [UInt8]) -> Int { perIP[ip, default: 0] }
    public func count(torrent: Int) -> Int { perTorrent[torrent, default: 0] }

    public mutating func added(ip: [UInt8], dialing: Bool) {
        total += 1
        perIP[ip, default: 0] += 1
        if dialing { halfOpen += 1 }
    }

    public mutating func dialFinished() {
        halfOpen -= 1
    }

    public mutating func attached(torrent: Int) {
        perTorrent[torrent, default: 0] += 1
    }

    public mutating func removed(ip: [UInt8], torrent: Int?) {
        total -= 1
        let remaining = perIP[ip, default: 1] - 1
        perIP[ip] = remaining > 0 ? remaining : nil
        if let torrent {
            let left = perTorrent[torrent, default: 1] - 1
            perTorrent[torrent] = left > 0 ? left : nil
        }
    }
}
