import Testing
@testable import Throttle
import SeededRandom

let KiB: Int64 = 1024
let MiB: Int64 = 1024 * 1024
let second: UInt64 = 1_000_000
let millisecond: UInt64 = 1_000


/// How the simulated event loop reacts to the `pollAt` it is given.
enum PollPattern: Sendable, CustomStringConvertible {
    /// Its timer fires exactly when asked.
    case onDeadline
    /// Its timer fires late by up to the given microseconds (loop busy, timer slack).
    case jittered(UInt64)
    /// It ignores deadlines and polls on a fixed tick.
    case tick(UInt64)

    var description: String {
        switch self {
        case .onDeadline: "on deadline"
        case .jittered(let late): "jittered \(late) us"
        case .tick(let period): "tick \(period) us"
        }
    }
}

/// A simulated caller: peers that keep a request outstanding, and a loop that polls.
struct Simulation {
    struct Peer {
        var id: BandwidthHierarchy.PeerID
        var torrent: Int
        /// Bytes asked for at a time (a 16 KiB block, or small reads).
        var chunk: Int64
        /// Bytes per second the peer itself can take (a slow peer); nil = always ready.
        var ownRate: Int64?
        /// Requests kept in flight: a peer connection with pipelined block requests asks
        /// for the next block while the current one is still being granted.
        var depth: Int64 = 1
        var nextRequestAt: UInt64 = 0
        var waiting = false
        var granted: Int64 = 0
    }

    struct Event {
        var time: UInt64
        var peer: Int
        var bytes: Int64
    }

    var throttle: BandwidthHierarchy
    var torrents: [BandwidthHierarchy.TorrentID] = []
    var peers: [Peer] = []
    var slotToPeer: [BandwidthHierarchy.PeerID: Int] = [:]
    var events: [Event] = []
    var now: UInt64 = 0
    /// The last `pollAt` the throttle returned. Setting it to a time not after `now`
    /// means "poll at once": a real caller does that in the same loop turn, so it is not
    /// subject to timer jitter.
    var pollAt: UInt64? {
        didSet { pollNow = pollAt.map { $0 <= now } ?? false }
    }
    var pollNow = false
    var pattern: PollPattern
    var random = SplitMix64(seed: 42)
    /// Polls on a timer, and polls made at once because `pollAt` was already due.
    var polls = 0
    var immediatePolls = 0

    init(globalRate: Int64, pattern: PollPattern = .onDeadline) {
        throttle = BandwidthHierarchy(globalRate: globalRate, now: 0)
        self.pattern = pattern
    }

    @discardableResult
    mutating func addTorrent(rate: Int64) -> Int {
        torrents.append(throttle.addTorrent(rate: rate, now: now))
        return torrents.count - 1
    }

    @discardableResult
    mutating func addPeer(torrent: Int, chunk: Int64 = 16 * KiB, ownRate: Int64? = nil, peerRate: Int64 = 0, depth: Int64 = 1) -> Int {
        let id = throttle.addPeer(to: torrents[torrent], rate: peerRate, now: now)!
        peers.append(Peer(id: id, torrent: torrent, chunk: chunk, ownRate: ownRate, depth: depth, nextRequestAt: now))
        slotToPeer[id] = peers.count - 1
        return peers.count - 1
    }

    private mutating func record(_ peer: Int, _ bytes: Int64) {
        guard bytes > 0 else { return }
        events.append(Event(time: now, peer: peer, bytes: bytes))
        peers[peer].granted += bytes
        if peers[peer].waiting && throttle.pendingDemand(of: peers[peer].id) <= peers[peer].chunk * (peers[peer].depth - 1) {
            peers[peer].waiting = false
            let own = peers[peer].ownRate.map { UInt64(peers[peer].chunk) * second / UInt64($0) } ?? 0
            peers[peer].nextRequestAt = max(peers[peer].nextRequestAt + own, now)
        }
    }

    private mutating func issueRequests() {
        for index in peers.indices where !peers[index].waiting && peers[index].nextRequestAt <= now {
            peers[index].waiting = true
            let result = throttle.request(peers[index].id, bytes: peers[index].chunk, now: now)
            pollAt = result.pollAt
            record(index, result.granted)
            if throttle.pendingDemand(of: peers[index].id) <= peers[index].chunk * (peers[index].depth - 1) {
                peers[index].waiting = false
            }
        }
    }

    /// When the simulated timer actually fires for a requested `deadline`.
    private mutating func fireTime(_ deadline: UInt64) -> UInt64 {
        if pollNow { return now }
        switch pattern {
        case .onDeadline:
            return deadline
        case .tick(let period):
            return (deadline + period - 1) / period * period
        case .jittered(let late):
            if jitterDeadline != deadline {
                jitterDeadline = deadline
                jitter = random.next() % (late + 1)
            }
            return deadline + jitter
        }
    }

    var jitterDeadline: UInt64?
    var jitter: UInt64 = 0

    /// Runs the loop until `end`.
    mutating func run(until end: UInt64) {
        while now < end {
            issueRequests()
            if let deadline = pollAt, fireTime(deadline) <= now {
                if pollNow { immediatePolls += 1 } else { polls += 1 }
                let result = throttle.poll(now: now)
                pollAt = result.pollAt
                for grant in result.grants { record(slotToPeer[grant.peer]!, grant.bytes) }
                if result.grants.isEmpty, let again = pollAt, again <= now {
                    Issue.record("polls at \(now) grant nothing yet ask to be polled again at \(String(describing: pollAt))")
                    return
                }
                continue
            }
            var next = end
            if let deadline = pollAt { next = min(next, fireTime(deadline)) }
            for peer in peers where !peer.waiting { next = min(next, peer.nextRequestAt) }
            now = max(next, now + 1)
        }
    }

    // MARK: Measurements

    func granted(from start: UInt64 = 0, to end: UInt64 = .max, peer: Int? = nil, torrent: Int? = nil) -> Int64 {
        events.reduce(0) { sum, event in
            guard event.time >= start && event.time < end else { return sum }
            if let peer, event.peer != peer { return sum }
            if let torrent, peers[event.peer].torrent != torrent { return sum }
            return sum + event.bytes
        }
    }

    /// Largest excess over `burst + rate * T` across all windows [t_i, t_j] of grant
    /// times, in bytes (<= 0 means the bound holds everywhere). Integer and O(n): with
    /// S the cumulative sum, the bound is S_j - rate*t_j <= burst + min_i (S_{i-1} - rate*t_i).
    func worstBurstExcess(rate: Int64, burst: Int64, from start: UInt64 = 0, torrent: Int? = nil) -> Int64 {
        var cumulative: Int64 = 0
        var lowest = Int64.max
        var worst = Int64.min
        for event in events where event.time >= start {
            if let torrent, peers[event.peer].torrent != torrent { continue }
            let scaledTime = Int64(event.time) * rate
            lowest = min(lowest, cumulative * 1_000_000 - scaledTime)
            cumulative += event.bytes
            worst = max(worst, cumulative * 1_000_000 - scaledTime - lowest - burst * 1_000_000)
        }
        return worst == .min ? 0 : worst / 1_000_000
    }

    /// The most bytes granted in any window of `length` starting at a grant.
    func maxWindow(length: UInt64, from start: UInt64 = 0) -> Int64 {
        let list = events.filter { $0.time >= start }
        var best: Int64 = 0
        var sum: Int64 = 0
        var tail = 0
        for head in list.indices {
            sum += list[head].bytes
            while list[head].time - list[tail].time >= length {
                sum -= list[tail].bytes
                tail += 1
            }
            best = max(best, sum)
        }
        return best
    }
}

func relativeError(_ actual: Int64, _ expected: Int64) -> Double {
    abs(Double(actual) - Double(expected)) / Double(expected)
}

extension Simulation {
    /// A config reload in the middle of a run: the caller re-arms its timer from the
    /// returned `pollAt` like from any other event.
    mutating func setGlobalRate(_ rate: Int64) -> UInt64? {
        pollAt = throttle.setGlobalRate(rate, now: now)
        return pollAt
    }

    mutating func setTorrentRate(_ torrent: Int, _ rate: Int64) -> UInt64? {
        pollAt = throttle.setRate(of: torrents[torrent], to: rate, now: now)
        return pollAt
    }
}
