/// Per-connection counters for logs and metrics. Times are microseconds.
public struct UTPConnectionStats: Sendable, Equatable {
    public var rtt: UInt64 = 0
    public var rttVar: UInt64 = 0
    public var rto: UInt64 = 0
    public var cwnd = 0
    public var peerWindow = 0
    public var bytesInFlight = 0
    public var packetsInFlight = 0
    /// Current LEDBAT queueing-delay estimate, nil before the first sample.
    public var queueingDelay: UInt32?
    public var slowStart = true
    public var packetsSent = 0
    public var packetsReceived = 0
    public var retransmits = 0
    public var fastRetransmits = 0
    /// Retransmissions whose original turned out to have arrived (reordering).
    public var spuriousRetransmits = 0
    /// Extra time a packet may be overtaken before counting as lost, learnt from
    /// spurious retransmissions.
    public var reorderWindow: UInt64 = 0
    public var timeouts = 0
    public var duplicateAcks = 0
    public var duplicatePackets = 0
    public var droppedInvalidAck = 0
    public var bytesSent: UInt64 = 0
    public var bytesReceived: UInt64 = 0

    public init() {}
}

/// Why a connection ended.
public enum UTPCloseReason: Sendable, Equatable {
    /// FINs exchanged (or our FIN acknowledged).
    case finished
    /// The peer sent RESET.
    case reset
    /// No answer: too many consecutive retransmission timeouts, or no SYN-ACK.
    case timedOut
    /// The application aborted it; a RESET went out.
    case aborted
    /// A half-open connection pushed out by newer SYNs or expired before its first DATA.
    case evicted
}
