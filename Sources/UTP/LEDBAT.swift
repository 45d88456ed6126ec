/// Minimum of one-way delay samples over a sliding window of one-minute slots.
/// Samples are differences of two unsynchronised clocks mod 2^32, so only their
/// wrapping order means anything; the minimum is the path's base delay plus the
/// clock offset, which cancels out in `sample - base`.
struct DelayHistory: Sendable {
    static let slotDuration: UInt64 = 60_000_000

    private var slots: [UInt32]
    private var slotIndex = 0
    private var slotStart: UInt64 = 0
    private(set) var base: UInt32 = 0
    private(set) var hasBase = false

    init(slotCount: Int) { slots = Array(repeating: 0, count: max(slotCount, 1)) }

    mutating func add(_ sample: UInt32, now: UInt64) {
        if !hasBase {
            for i in slots.indices { slots[i] = sample }
            base = sample
            slotStart = now
            hasBase = true
            return
        }
        if now &- slotStart >= DelayHistory.slotDuration {
            slotStart = now
            slotIndex = (slotIndex + 1) % slots.count
            slots[slotIndex] = sample
            // The oldest minute just fell out of the window: recompute once a minute.
            base = slots[0]
            for value in slots where Wrap32.less(value, base) { base = value }
        } else if Wrap32.less(sample, slots[slotIndex]) {
            slots[slotIndex] = sample
        }
        if Wrap32.less(sample, base) { base = sample }
    }

    /// Moves every remembered minimum by `offset` (clock-drift correction).
    mutating func shift(by offset: UInt32) {
        for i in slots.indices { slots[i] &+= offset }
        base &+= offset
    }

    /// How far `sample` sits above the base delay.
    func delayAboveBase(_ sample: UInt32) -> UInt32 {
        Wrap32.less(sample, base) ? 0 : sample &- base
    }
}

/// LEDBAT congestion control as BEP 29, libutp and libtorrent do it: aim for 100 ms of
/// queueing delay, grow by at most `gain` bytes per RTT scaled by how far below the
/// target we are and by the share of the window acked, shrink when above it, halve on
/// loss, one packet on timeout. Starts in slow start (libtorrent) and leaves it at the
/// target delay or on loss.
public struct LEDBAT: Sendable {
    public static let targetDelay: UInt32 = 100_000
    public static let gainPerRTT = 3000
    /// libutp keeps 13 one-minute slots, libtorrent 20; BEP 29 says two minutes.
    public static let historySlots = 13
    /// Their base may drop by less than this from clock drift; more is a real path change.
    static let maxDriftCorrection: UInt32 = 10_000
    /// The learnt ceiling never goes below this many packets: enough for a LAN rate.
    static let minimumCeilingPackets = 32
    /// Packets lost since the last cut that mark an overflow rather than random loss.
    static let overflowLossPackets = 8

    public private(set) var cwnd: Int
    public private(set) var slowStart = true
    public private(set) var ssthresh = Int.max
    let packetSize: Int
    let maxWindow: Int

    private var ours = DelayHistory(slotCount: LEDBAT.historySlots)
    private var theirs = DelayHistory(slotCount: LEDBAT.historySlots)
    /// The last three (sample - base) values; the queueing delay is their minimum,
    /// which filters a single delayed ack.
    private var recent: (UInt32, UInt32, UInt32) = (.max, .max, .max)
    private var recentIndex = 0
    /// When the window last limited sending: growth needs a full window.
    var lastWindowFull: UInt64 = 0
    private var lastCut: UInt64 = 0
    private var windowBeforeCut: (cwnd: Int, ssthresh: Int, slowStart: Bool)?
    private var hasCut = false
    /// A ceiling learnt from losses that overflowed a buffer (`onOverflow`) and from
    /// retransmission timeouts. That is what a receiver's full socket buffer does: a
    /// default 208 KiB one holds about 150 datagrams, libtorrent acks once per drained
    /// socket, and its reader may lose its core for milliseconds while the socket
    /// fills, so a window above that loses its tail again and again, and a lost tail
    /// costs a 500 ms timeout. At a loopback round trip (well under a millisecond)
    /// LEDBAT's gain per round trip would regrow a halved window within milliseconds,
    /// so the ceiling rises by time instead: at most a packet per 50 ms (Reno's pace on
    /// a 50 ms path). Neither BEP 29 nor libutp or libtorrent has this; their seeds lose
    /// the same tails (see BENCHMARKS.md, uTP throughput).
    public private(set) var ceiling: Int
    private var ceilingRaisedAt: UInt64 = 0
    private var ceilingBeforeCut = 0
    static let ceilingStep: UInt64 = 50_000

    init(packetSize: Int, maxWindow: Int) {
        self.packetSize = packetSize
        self.maxWindow = maxWindow
        cwnd = 2 * packetSize
        ceiling = maxWindow
    }

    /// Current queueing-delay estimate, or nil before the first sample.
    public var queueingDelay: UInt32? {
        let m = min(recent.0, recent.1, recent.2)
        return m == .max ? nil : m
    }

    /// A delay sample of our packets toward the peer: its timestamp_difference field.
    mutating func addOurSample(_ sample: UInt32, now: UInt64) {
        ours.add(sample, now: now)
        let value = ours.delayAboveBase(sample)
        switch recentIndex {
        case 0: recent.0 = value
        case 1: recent.1 = value
        default: recent.2 = value
        }
        recentIndex = (recentIndex + 1) % 3
    }

    /// A delay sample of the peer's packets toward us. If its base drops a little, its
    /// clock runs slow relative to ours, which inflates our samples by the same amount.
    mutating func addTheirSample(_ sample: UInt32, now: UInt64) {
        let previous = theirs.base
        let had = theirs.hasBase
        theirs.add(sample, now: now)
        if had, Wrap32.less(theirs.base, previous) {
            let drop = previous &- theirs.base
            if drop <= LEDBAT.maxDriftCorrection, ours.hasBase {
                ours.shift(by: drop)
            }
        }
    }

    /// Bytes newly acknowledged (cumulatively or selectively).
    mutating func onAck(bytes acked: Int, now: UInt64) {
        guard acked > 0 else { return }
        let delay = Int(queueingDelay ?? 0)
        let target = Int(LEDBAT.targetDelay)
        let windowFactor = Double(min(acked, cwnd)) / Double(max(cwnd, acked))
        let delayFactor = Double(target - delay) / Double(target)
        // Growth is capped at the full gain; shrinking is not, so an overshoot far above
        // the target drains in proportion to how far above it we are (libutp does not clamp).
        var gain = Double(LEDBAT.gainPerRTT) * windowFactor * min(1, delayFactor)
        let windowWasFull = now &- lastWindowFull < 1_000_000
        if gain > 0 && !windowWasFull { gain = 0 }
        if slowStart {
            if delay >= target {
                // The window doubled during the round trip the delay signal took to come
                // back, so the queue is still heading for twice the target: take the
                // doubling back (as TCP's HyStart does) instead of draining it at the
                // slow linear rate.
                slowStart = false
                ssthresh = cwnd / 2
                cwnd = cwnd / 2
            } else if cwnd >= ssthresh {
                slowStart = false
            } else if windowWasFull {
                cwnd += acked
            }
        }
        if !slowStart {
            cwnd += Int(gain)
        }
        if ceiling < maxWindow && now &- ceilingRaisedAt >= LEDBAT.ceilingStep {
            ceilingRaisedAt = now
            ceiling = min(ceiling + packetSize, maxWindow)
        }
        if cwnd > ceiling && slowStart {
            slowStart = false
            ssthresh = ceiling
        }
        cwnd = max(packetSize, min(cwnd, ceiling))
    }

    /// A loss: halve, at most once per 100 ms; the caller also limits it to once per window.
    @discardableResult
    mutating func onLoss(now: UInt64) -> Bool {
        if hasCut && now &- lastCut < 100_000 { return false }
        hasCut = true
        lastCut = now
        windowBeforeCut = (cwnd, ssthresh, slowStart)
        ceilingBeforeCut = ceiling
        cwnd = max(cwnd / 2, packetSize)
        ssthresh = cwnd
        slowStart = false
        return true
    }

    /// Many packets lost since the last cut: a buffer overflowed rather than a packet
    /// going astray, and it will again at this window (see `ceiling`). A single random
    /// loss only halves the window, as before.
    mutating func onOverflow(now: UInt64) {
        ceiling = max(min(ceiling, cwnd), LEDBAT.minimumCeilingPackets * packetSize)
        ceilingRaisedAt = now
    }

    /// The last cut was for a packet that had not been lost, only overtaken: take it
    /// back (Eifel, RFC 3522), once.
    mutating func undoLastCut() {
        guard let saved = windowBeforeCut else { return }
        windowBeforeCut = nil
        ceiling = max(ceiling, ceilingBeforeCut)
        cwnd = max(cwnd, saved.cwnd)
        ssthresh = saved.ssthresh
        slowStart = saved.slowStart
    }

    /// A retransmission timeout with data in flight: one packet, slow start again.
    mutating func onTimeout(now: UInt64) {
        windowBeforeCut = nil
        ceiling = max(min(ceiling, cwnd) / 2, LEDBAT.minimumCeilingPackets * packetSize)
        ceilingRaisedAt = now
        ssthresh = max(cwnd / 2, 2 * packetSize)
        cwnd = packetSize
        slowStart = true
    }
}
