import Testing
@testable import Trackers
import SeededRandom

@Suite struct AnnounceSchedulerTests {
    @Test func capsConcurrentAnnounces() {
        var rng = SplitMix64(seed: 1)
        var scheduler = AnnounceScheduler<Int>(configuration: .init(maxConcurrent: 3, firstAnnounceJitter: 0))
        for id in 0..<10 { scheduler.enqueue(id, event: .started, now: 0, using: &rng) }
        #expect(scheduler.nextReady(now: 0) == [0, 1, 2])  // first come, first served
        #expect(scheduler.nextReady(now: 0) == [])
        #expect(scheduler.nextDeadline == nil)  // every slot busy: wait for `finished`
        #expect(scheduler.finished(1, now: 5) == [3])
        #expect(scheduler.finished(0, now: 6) == [4])
        #expect(scheduler.running == [2, 3, 4])
        #expect(scheduler.remove(2, now: 7) == [5])
        #expect(scheduler.waitingCount == 4)
        var done = 0
        for id in [3, 4, 5] { done += scheduler.finished(id, now: 8).count }
        #expect(done == 3)
        #expect(scheduler.nextReady(now: 9) == [])
        #expect(scheduler.running.count == 3)
        #expect(scheduler.waitingCount == 1)
    }

    @Test func jittersFirstAnnouncesDeterministically() {
        let jitter = seconds(30)
        func schedule(seed: UInt64) -> [UInt64] {
            var rng = SplitMix64(seed: seed)
            var scheduler = AnnounceScheduler<Int>(configuration: .init(maxConcurrent: 8, firstAnnounceJitter: jitter))
            for id in 0..<1000 { scheduler.enqueue(id, event: .started, now: seconds(100), using: &rng) }
            return (0..<1000).map { scheduler.readyTime(of: $0)! }
        }
        let times = schedule(seed: 77)
        #expect(times == schedule(seed: 77))
        #expect(times != schedule(seed: 78))
        #expect(times.allSatisfy { $0 >= seconds(100) && $0 <= seconds(100) + jitter })
        // Spread over the window, not bunched: every 3 s slice gets some.
        let slices = Set(times.map { ($0 - seconds(100)) / seconds(3) })
        #expect(slices.count >= 10)
    }

    @Test func drainsInDueOrderWithinTheCap() {
        var rng = SplitMix64(seed: 5)
        var scheduler = AnnounceScheduler<Int>(configuration: .init(maxConcurrent: 8, firstAnnounceJitter: seconds(10)))
        for id in 0..<200 { scheduler.enqueue(id, event: .started, now: 0, using: &rng) }
        let due = Dictionary(uniqueKeysWithValues: (0..<200).map { ($0, scheduler.readyTime(of: $0)!) })
        #expect(scheduler.nextReady(now: 0).allSatisfy { due[$0] == 0 })
        // Each announce takes 1 s, so the queue backs up; the timer follows `nextDeadline`.
        var now: UInt64 = 0
        var inFlight: [(id: Int, end: UInt64)] = []
        var started: [(id: Int, at: UInt64)] = []
        var maxInFlight = 0
        while started.count < 200 {
            let nextEnd = inFlight.map(\.end).min()
            guard let next = [nextEnd, scheduler.nextDeadline].compactMap({ $0 }).min() else {
                Issue.record("stalled")
                return
            }
            now = max(now, next)
            var ready = scheduler.nextReady(now: now)
            for item in inFlight where item.end <= now { ready += scheduler.finished(item.id, now: now) }
            inFlight.removeAll { $0.end <= now }
            for id in ready {
                started.append((id, now))
                inFlight.append((id, now + seconds(1)))
            }
            maxInFlight = max(maxInFlight, inFlight.count)
        }
        #expect(maxInFlight == 8)
        #expect(started.allSatisfy { due[$0.id]! <= $0.at })
        #expect(started.map { due[$0.id]! } == started.map { due[$0.id]! }.sorted())
        #expect(Set(started.map(\.id)).count == 200)
    }

    @Test func onlyTheFirstAnnounceIsJittered() {
        var rng = SplitMix64(seed: 9)
        var scheduler = AnnounceScheduler<String>(configuration: .init(maxConcurrent: 2, firstAnnounceJitter: seconds(60)))
        scheduler.enqueue("t", event: .started, now: 0, using: &rng)
        let first = scheduler.readyTime(of: "t")!
        #expect(first > 0)  // with this seed; the range is checked elsewhere
        #expect(scheduler.nextDeadline == first)
        #expect(scheduler.nextReady(now: first) == ["t"])
        #expect(scheduler.finished("t", now: first + 1) == [])
        // Fail-over and regular announces go without jitter.
        scheduler.enqueue("t", event: .started, now: first + 2, using: &rng)
        #expect(scheduler.readyTime(of: "t") == first + 2)
        #expect(scheduler.nextReady(now: first + 2) == ["t"])
        // Removed and added again: a first announce again.
        _ = scheduler.remove("t", now: first + 3)
        scheduler.enqueue("t", event: .started, now: first + 3, using: &rng)
        #expect(scheduler.readyTime(of: "t")! != first + 3)
    }

    @Test func stoppedIsNotJitteredButIsCapped() {
        var rng = SplitMix64(seed: 3)
        var scheduler = AnnounceScheduler<Int>(configuration: .init(maxConcurrent: 2, firstAnnounceJitter: seconds(60)))
        for id in 0..<4 { scheduler.enqueue(id, event: .stopped, now: 10, using: &rng) }
        #expect((0..<4).allSatisfy { scheduler.readyTime(of: $0) == 10 })
        #expect(scheduler.nextReady(now: 10) == [0, 1])
        #expect(scheduler.nextReady(now: 10) == [])
        #expect(scheduler.finished(0, now: 11) == [2])
    }

    @Test func reenqueueKeepsTheEarlierTime() {
        var rng = SplitMix64(seed: 4)
        var scheduler = AnnounceScheduler<Int>(configuration: .init(maxConcurrent: 1, firstAnnounceJitter: seconds(60)))
        scheduler.enqueue(1, event: .started, now: 0, using: &rng)
        let jittered = scheduler.readyTime(of: 1)!
        #expect(jittered > seconds(1))
        // Shutdown while the start still waits: the stop goes at once.
        scheduler.enqueue(1, event: .stopped, now: seconds(1), using: &rng)
        #expect(scheduler.readyTime(of: 1) == seconds(1))
        #expect(scheduler.waitingCount == 1)
        scheduler.enqueue(1, event: .none, now: seconds(2), using: &rng)
        #expect(scheduler.readyTime(of: 1) == seconds(1))
    }

    @Test func aRunningTorrentIsNotDispatchedTwice() {
        var rng = SplitMix64(seed: 6)
        var scheduler = AnnounceScheduler<Int>(configuration: .init(maxConcurrent: 4, firstAnnounceJitter: 0))
        scheduler.enqueue(1, event: .started, now: 0, using: &rng)
        #expect(scheduler.nextReady(now: 0) == [1])
        scheduler.enqueue(1, event: .stopped, now: 1, using: &rng)
        #expect(scheduler.nextReady(now: 1) == [])
        #expect(scheduler.nextDeadline == nil)
        #expect(scheduler.finished(1, now: 2) == [1])
    }

    @Test func configurationIsBounded() {
        #expect(AnnounceScheduler<Int>.Configuration(maxConcurrent: 0).maxConcurrent == 1)
        #expect(AnnounceScheduler<Int>().configuration == .init(maxConcurrent: 8, firstAnnounceJitter: seconds(10)))
    }
}
