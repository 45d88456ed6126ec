/// A rate from a growing byte total sampled once a second: the total's rise over the
/// last `window` samples divided by the time they span. Sampling totals (rather than
/// recording every block) keeps the hot path to one addition per block.
struct TransferRate {
    private var samples: [(time: UInt64, total: Int64)] = []
    private let window: Int

    init(window: Int = 10) {
        self.window = window
    }

    mutating func sample(total: Int64, now: UInt64) {
        // A total that fell belongs to a new counter (a torrent removed and added again
        // between two samples): the old samples would make the rate negative.
        if let last = samples.last, total < last.total { samples.removeAll() }
        if samples.count > window { samples.removeFirst(samples.count - window) }
        samples.append((now, total))
    }

    /// Bytes per second; 0 until two samples exist.
    var bytesPerSecond: Int64 {
        guard let first = samples.first, let last = samples.last, last.time > first.time else { return 0 }
        return (last.total - first.total) * 1_000_000 / Int64(last.time - first.time)
    }
}
