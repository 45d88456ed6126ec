/// Round-trip time and retransmission timeout (BEP 29, after RFC 6298):
/// rtt += (sample - rtt) / 8, rtt_var += (|rtt - sample| - rtt_var) / 4,
/// RTO = max(rtt + 4 * rtt_var, floor). BEP 29 and Transmission 3.00 floor it at 500 ms;
/// before the first sample the timeout is `initial`.
public struct RTTEstimator: Sendable {
    public private(set) var rtt: UInt64 = 0
    public private(set) var rttVar: UInt64 = 0
    public private(set) var hasSample = false
    /// The smallest sample seen: the path's delay without queueing, for telling a
    /// too-early ack (of the original, not the retransmission) from a real one.
    public private(set) var minimum: UInt64 = .max
    public let minimumRTO: UInt64
    public let initialRTO: UInt64

    public init(minimumRTO: UInt64 = 500_000, initialRTO: UInt64 = 1_000_000) {
        self.minimumRTO = minimumRTO
        self.initialRTO = initialRTO
    }

    public var rto: UInt64 {
        hasSample ? max(rtt + 4 * rttVar, minimumRTO) : initialRTO
    }

    public mutating func add(sample: UInt64) {
        // A sample beyond a minute is a clock artefact, not a path property.
        let sample = min(sample, 60_000_000)
        minimum = min(minimum, sample)
        if !hasSample {
            rtt = sample
            rttVar = sample / 2
            hasSample = true
            return
        }
        let delta = rtt > sample ? rtt - sample : sample - rtt
        rttVar = rttVar > delta ? rttVar - (rttVar - delta) / 4 : rttVar + (delta - rttVar) / 4
        rtt = rtt > sample ? rtt - (rtt - sample) / 8 : rtt + (sample - rtt) / 8
    }
}
