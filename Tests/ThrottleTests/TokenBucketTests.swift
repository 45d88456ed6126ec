import Testing
@testable import Throttle

@Suite struct TokenBucketTests {
    /// Integer accounting: refilling in odd slices loses nothing. At 3 B/s, taking every
    /// whole byte as soon as it exists for 100 s yields exactly 300 bytes.
    @Test func noRoundingLoss() {
        var bucket = TokenBucket(rate: 3, burst: 10, now: 0)
        var taken: Int64 = 0
        var now: UInt64 = 0
        while now < 100 * second {
            now += 333
            taken += bucket.take(upTo: 10, now: now)
        }
        #expect(now == 100_000_000 - 100_000_000 % 333 + 333)
        #expect(taken == Int64(3 * now / second))
    }

    @Test func startsEmptyAndFillsToBurst() {
        var bucket = TokenBucket(rate: 1 * MiB, now: 0)
        #expect(bucket.available(now: 0) == 0)
        #expect(bucket.available(now: 20_000) == 20_971)
        #expect(bucket.available(now: 10 * second) == bucket.burst)
        // Hours idle at the largest rate cannot overflow.
        var huge = TokenBucket(rate: TokenBucket.maximumRate, burst: TokenBucket.maximumRate, now: 0)
        #expect(huge.available(now: 1_000_000 * second) == TokenBucket.maximumRate)
    }

    @Test func timeUntilAvailableIsExact() {
        var bucket = TokenBucket(rate: 3 * MiB, now: 0)
        _ = bucket.take(upTo: 1, now: 0)
        let wait = bucket.timeUntilAvailable(10_000, now: 7)
        #expect(bucket.available(now: 7 + wait) >= 10_000)
        var copy = TokenBucket(rate: 3 * MiB, now: 0)
        _ = copy.take(upTo: 1, now: 0)
        #expect(copy.available(now: 7 + wait - 1) < 10_000)
    }

    @Test func debtIsPaidOffAtRate() {
        var bucket = TokenBucket(rate: 1_000, burst: 100, now: 0)
        bucket.consume(2_000, now: 0)
        #expect(bucket.available(now: 0) == -2_000)
        #expect(bucket.take(upTo: 10, now: 1 * second) == 0)
        #expect(bucket.timeUntilAvailable(100, now: 1 * second) == 1_100_000)
        #expect(bucket.take(upTo: 1_000, now: 2 * second + 100_000) == 100)
    }

    @Test func giveBackNeverExceedsBurst() {
        var bucket = TokenBucket(rate: 1_000, burst: 100, now: 0)
        bucket.giveBack(10_000, now: 0)
        #expect(bucket.available(now: 0) == 100)
    }

    @Test func rateChangesKeepNoMoreThanTheNewBurst() {
        var bucket = TokenBucket(rate: 10 * MiB, now: 0)
        #expect(bucket.available(now: second) == bucket.burst)
        bucket.setRate(1 * MiB, now: second)
        #expect(bucket.available(now: second) == TokenBucket.defaultBurst(rate: 1 * MiB))
        bucket.setRate(0, now: second)
        #expect(bucket.isUnlimited && bucket.take(upTo: 1 * MiB * 1024, now: second) == 1 * MiB * 1024)
        // From unlimited to limited: start empty, earn at the new rate.
        bucket.setRate(1 * MiB, now: 2 * second)
        #expect(bucket.available(now: 2 * second) == 0)
        #expect(bucket.available(now: 2 * second + 10_000) == 10_485)
    }

    @Test(arguments: [1 as Int64, 1_000, 10 * KiB, 100 * KiB, 1 * MiB, 20 * MiB, 1_000 * MiB])
    func defaultsAreSane(rate: Int64) {
        let burst = TokenBucket.defaultBurst(rate: rate)
        let quantum = TokenBucket.quantum(rate: rate, burst: burst)
        #expect(burst >= 1 && burst <= max(rate / 10, 1))
        #expect(burst >= rate / 20)
        #expect(quantum >= 1 && quantum <= burst && quantum <= 16 * KiB)
        if burst >= 1 * KiB { #expect(quantum >= 1 * KiB) }
        // A quantum is at most a few ms of rate, unless the 1 KiB floor applies.
        #expect(quantum <= 1 * KiB || quantum * 500 <= rate + 500)
    }

    @Test func meterReadsTheRecentRate() {
        var meter = RateMeter.shortTerm(now: 0)
        var long = RateMeter.longTerm(now: 0)
        var now: UInt64 = 0
        while now < 20 * second {
            now += 10 * millisecond
            meter.record(1_000, now: now)
            long.record(1_000, now: now)
        }
        #expect(relativeError(meter.bytesPerSecond(now: now + 40 * millisecond), 100_000) < 0.05)
        #expect(relativeError(long.bytesPerSecond(now: now), 100_000) < 0.01)
        #expect(meter.bytesPerSecond(now: now + 5 * second) == 0)
        #expect(long.totalBytes == 2_000_000)
    }
}
