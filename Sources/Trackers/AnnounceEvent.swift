/// Why an announce is sent, as BEP 3 names it in the `event` query parameter and BEP 15
/// numbers it in the UDP announce.
///
/// Trackers count swarms from these: `started` adds us, `stopped` removes us at once
/// rather than after the peer times out, and `completed` bumps the download count (so
/// it must be sent once, and never by a torrent that was already complete when it
/// started).
public enum AnnounceEvent: Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// A regular announce: BEP 3 leaves `event` out, BEP 15 sends 0.
    case none
    case started
    case completed
    case stopped

    /// The BEP 3 `event=` value; nil for `.none`, whose parameter is left out.
    public var queryValue: String? {
        switch self {
        case .none: return nil
        case .started: return "started"
        case .completed: return "completed"
        case .stopped: return "stopped"
        }
    }

    /// The BEP 15 number: 0 none, 1 completed, 2 started, 3 stopped.
    public var udpValue: UInt32 {
        switch self {
        case .none: return 0
        case .completed: return 1
        case .started: return 2
        case .stopped: return 3
        }
    }

    public init?(udpValue: UInt32) {
        switch udpValue {
        case 0: self = .none
        case 1: self = .completed
        case 2: self = .started
        case 3: self = .stopped
        default: return nil
        }
    }

    public var description: String { queryValue ?? "none" }
}
