import Testing
@testable import Seeder

@Suite struct TransferRateTests {
    @Test func averagesTheRiseOverTheWindow() {
        var rate = TransferRate()
        for second in 0...10 { rate.sample(total: Int64(second) * 1000, now: UInt64(second) * 1_000_000) }
        #expect(rate.bytesPerSecond == 1000)
    }

    /// A torrent removed and loaded again between two samples starts its counter at 0:
    /// the status must not show a negative rate for the next ten seconds.
    @Test func aCounterThatStartsOverNeverGivesANegativeRate() {
        var rate = TransferRate()
        for second in 0...5 { rate.sample(total: 1_000_000_000 + Int64(second) * 1000, now: UInt64(second) * 1_000_000) }
        rate.sample(total: 0, now: 6_000_000)
        #expect(rate.bytesPerSecond == 0)
        rate.sample(total: 500, now: 7_000_000)
        #expect(rate.bytesPerSecond == 500)
    }
}
