import Testing
@testable import Trackers
import SeededRandom

private let a = "http://a.example/announce"
private let b = "udp://b.example:6969/announce"

private func response(interval: Int = 1800, minInterval: Int? = nil, seeders: Int? = nil) -> AnnounceResponse {
    AnnounceResponse(interval: interval, minInterval: minInterval, seeders: seeders, leechers: 1)
}

private let refused = TrackerError.failure(reason: "unregistered torrent")
private let timeout = TrackerError.transport("timed out after 30 s")

@Suite struct TorrentAnnouncerTests {
    func announcer(_ tiers: [[String]] = [[a], [b]], startedComplete: Bool = true) -> TorrentAnnouncer {
        var rng = SplitMix64(seed: 2024)
        return TorrentAnnouncer(tiers: tiers, startedComplete: startedComplete, using: &rng)
    }

    @Test func startedThenRegularAnnouncesEveryInterval() {
        var announcer = announcer()
        #expect(announcer.start(now: 0) == .announce(url: a, event: .started))
        #expect(announcer.start(now: 0) == .none)  // already running
        #expect(announcer.announceSucceeded(url: a, response: response(seeders: 7), now: seconds(1)) == .wait(until: seconds(1801)))
        #expect(announcer.timerFired(now: seconds(1000)) == .wait(until: seconds(1801)))  // early timer re-arms
        #expect(announcer.timerFired(now: seconds(1801)) == .announce(url: a, event: .none))
        #expect(announcer.announceSucceeded(url: a, response: response(interval: 900), now: seconds(1802)) == .wait(until: seconds(2702)))
        #expect(announcer.timerFired(now: seconds(2702)) == .announce(url: a, event: .none))

        let status = announcer.status(of: a)!
        #expect(status.started)
        #expect(status.lastSuccess == seconds(1802))
        #expect(status.interval == 900)
        #expect(status.seeders == nil && status.leechers == 1)  // from the last response
        #expect(status.isAnnouncing)
    }

    @Test func reportsForOtherTrackersAreIgnored() {
        var rng = SplitMix64(seed: 2024)
        var announcer = announcer()
        _ = announcer.start(now: 0)
        #expect(announcer.announceSucceeded(url: b, response: response(), now: 1) == .none)
        #expect(announcer.announceFailed(url: b, error: timeout, now: 1, using: &rng) == .none)
        #expect(announcer.state == .announcing(url: a, event: .started))
    }

    @Test func failsOverWithStartedToTheNextTracker() {
        var rng = SplitMix64(seed: 2024)
        var announcer = announcer()
        #expect(announcer.start(now: 0) == .announce(url: a, event: .started))
        #expect(announcer.announceFailed(url: a, error: refused, now: seconds(1), using: &rng) == .announce(url: b, event: .started))
        #expect(announcer.announceSucceeded(url: b, response: response(), now: seconds(2)) == .wait(until: seconds(1802)))
        // After a success the first tier is tried again; `a` never accepted `started`.
        #expect(announcer.timerFired(now: seconds(1802)) == .announce(url: a, event: .started))
        // `b` already lists us: a regular announce.
        #expect(announcer.announceFailed(url: a, error: timeout, now: seconds(1803), using: &rng) == .announce(url: b, event: .none))

        let statusA = announcer.status(of: a)!
        #expect(!statusA.started)
        #expect(statusA.lastError == "timed out after 30 s")
        #expect(statusA.lastFailure == seconds(1803))
        #expect(statusA.consecutiveFailures == 2)
        #expect(statusA.tier == 0)
        #expect(announcer.status(of: b)!.tier == 1)
        #expect(announcer.trackers.map(\.url) == [a, b])
    }

    @Test func failsOverWithinATierFirst() {
        var rng = SplitMix64(seed: 2024)
        var announcer = announcer([["x", "y"], ["z"]])
        let order = announcer.tiers.tiers[0]
        #expect(announcer.start(now: 0) == .announce(url: order[0], event: .started))
        #expect(announcer.announceFailed(url: order[0], error: timeout, now: 1, using: &rng) == .announce(url: order[1], event: .started))
        #expect(announcer.announceFailed(url: order[1], error: timeout, now: 2, using: &rng) == .announce(url: "z", event: .started))
    }

    @Test func backsOffExponentiallyAfterAFullRound() {
        var rng = SplitMix64(seed: 2024)
        var announcer = announcer()
        var now: UInt64 = 0
        #expect(announcer.start(now: now) == .announce(url: a, event: .started))
        let nominal: [UInt64] = [15, 30, 60, 120, 240, 480, 960, 1800, 1800, 1800]
        for round in nominal {
            #expect(announcer.announceFailed(url: a, error: timeout, now: now, using: &rng) == .announce(url: b, event: .started))
            guard case .wait(let until) = announcer.announceFailed(url: b, error: refused, now: now, using: &rng) else {
                Issue.record("no backoff after a full round")
                return
            }
            let delay = until - now
            #expect(delay <= seconds(round) && delay >= seconds(round) * 3 / 4, "round of \(round) s waited \(delay) µs")
            #expect(announcer.state == .backingOff(until: until))
            #expect(announcer.status(of: a)?.nextAnnounce == until)
            // Nothing goes out before the backoff ends.
            #expect(announcer.timerFired(now: until - 1) == .wait(until: until))
            now = until
            #expect(announcer.timerFired(now: now) == .announce(url: a, event: .started))
        }
        #expect(announcer.status(of: b)!.lastError == "tracker refused the announce: unregistered torrent")
        #expect(announcer.status(of: b)!.consecutiveFailures == 10)

        // A success resets the schedule.
        #expect(announcer.announceSucceeded(url: a, response: response(), now: now) == .wait(until: now + seconds(1800)))
        now += seconds(1800)
        #expect(announcer.timerFired(now: now) == .announce(url: a, event: .none))
        #expect(announcer.announceFailed(url: a, error: timeout, now: now, using: &rng) == .announce(url: b, event: .started))
        guard case .wait(let until) = announcer.announceFailed(url: b, error: timeout, now: now, using: &rng) else {
            Issue.record("no backoff")
            return
        }
        #expect(until - now <= seconds(15))
    }

    @Test func backoffSchedule() {
        let backoff = AnnounceBackoff()
        #expect((1...9).map { backoff.nominalDelay(afterFailedRounds: $0) / 1_000_000 } == [15, 30, 60, 120, 240, 480, 960, 1800, 1800])
        #expect(backoff.nominalDelay(afterFailedRounds: 0) == seconds(15))
        #expect(backoff.nominalDelay(afterFailedRounds: 1000) == seconds(1800))
        var rng1 = SplitMix64(seed: 1)
        var rng2 = SplitMix64(seed: 1)
        let delays1 = (1...20).map { backoff.delay(afterFailedRounds: $0, using: &rng1) }
        let delays2 = (1...20).map { backoff.delay(afterFailedRounds: $0, using: &rng2) }
        #expect(delays1 == delays2)
        for (round, delay) in zip(1..., delays1) {
            let nominal = backoff.nominalDelay(afterFailedRounds: round)
            #expect(delay <= nominal && delay >= nominal * 3 / 4)
        }
        #expect(Set(delays1.suffix(10)).count > 1)  // jittered, not lock step
    }

    @Test func startedCompleteNeverSendsCompleted() {
        var announcer = announcer(startedComplete: true)
        _ = announcer.start(now: 0)
        _ = announcer.announceSucceeded(url: a, response: response(), now: 0)
        #expect(announcer.completed(now: seconds(10)) == .none)
        #expect(announcer.timerFired(now: seconds(1800)) == .announce(url: a, event: .none))
    }

    @Test func completedIsSentOnceRespectingMinInterval() {
        var announcer = announcer(startedComplete: false)
        _ = announcer.start(now: 0)
        #expect(announcer.announceSucceeded(url: a, response: response(minInterval: 600), now: 0) == .wait(until: seconds(1800)))
        // Early, but not before `min interval`.
        #expect(announcer.completed(now: seconds(100)) == .wait(until: seconds(600)))
        #expect(announcer.completed(now: seconds(101)) == .none)
        #expect(announcer.timerFired(now: seconds(600)) == .announce(url: a, event: .completed))
        #expect(announcer.announceSucceeded(url: a, response: response(), now: seconds(601)) == .wait(until: seconds(2401)))
        #expect(announcer.completedSent)
        #expect(announcer.completed(now: seconds(700)) == .none)
        #expect(announcer.timerFired(now: seconds(2401)) == .announce(url: a, event: .none))
    }

    @Test func completedWaitsForTheRegularAnnounceWhenMinIntervalIsAsLong() {
        var announcer = announcer(startedComplete: false)
        _ = announcer.start(now: 0)
        _ = announcer.announceSucceeded(url: a, response: response(interval: 1800, minInterval: 3600), now: 0)
        #expect(announcer.completed(now: seconds(100)) == .none)
        #expect(announcer.timerFired(now: seconds(1800)) == .announce(url: a, event: .completed))
    }

    @Test func completedGoesAtOnceWithoutMinInterval() {
        var announcer = announcer(startedComplete: false)
        _ = announcer.start(now: 0)
        _ = announcer.announceSucceeded(url: a, response: response(), now: 0)
        #expect(announcer.completed(now: seconds(100)) == .announce(url: a, event: .completed))
    }

    @Test func completedDuringAnAnnounceFollowsIt() {
        var announcer = announcer(startedComplete: false)
        _ = announcer.start(now: 0)
        #expect(announcer.completed(now: 1) == .none)
        #expect(announcer.announceSucceeded(url: a, response: response(minInterval: 30), now: 2) == .wait(until: 2 + seconds(30)))
        #expect(announcer.timerFired(now: 2 + seconds(30)) == .announce(url: a, event: .completed))
    }

    @Test func completedFailingOverStartsTheNewTrackerFirst() {
        var rng = SplitMix64(seed: 2024)
        var announcer = announcer(startedComplete: false)
        _ = announcer.start(now: 0)
        _ = announcer.announceSucceeded(url: a, response: response(), now: 0)
        #expect(announcer.completed(now: 5) == .announce(url: a, event: .completed))
        #expect(announcer.announceFailed(url: a, error: timeout, now: 6, using: &rng) == .announce(url: b, event: .started))
        // `b` now lists us, and is still owed the `completed`.
        #expect(announcer.announceSucceeded(url: b, response: response(), now: 7) == .announce(url: a, event: .completed))
        #expect(announcer.announceFailed(url: a, error: timeout, now: 8, using: &rng) == .announce(url: b, event: .completed))
        #expect(announcer.announceSucceeded(url: b, response: response(), now: 9) == .wait(until: 9 + seconds(1800)))
        #expect(!announcer.completedPending)
    }

    @Test func completedDuringBackoffRidesOnTheNextRound() {
        var rng = SplitMix64(seed: 2024)
        var announcer = announcer([[a]], startedComplete: false)
        _ = announcer.start(now: 0)
        _ = announcer.announceSucceeded(url: a, response: response(), now: 0)
        _ = announcer.timerFired(now: seconds(1800))
        guard case .wait(let until) = announcer.announceFailed(url: a, error: timeout, now: seconds(1800), using: &rng) else {
            Issue.record("no backoff")
            return
        }
        #expect(announcer.completed(now: seconds(1801)) == .none)
        #expect(announcer.timerFired(now: until) == .announce(url: a, event: .completed))
    }

    @Test func stoppedOnlyAfterASuccessfulStarted() {
        var rng = SplitMix64(seed: 2024)
        // Nothing accepted `started`: no tracker lists us, nothing to stop.
        var never = announcer()
        _ = never.start(now: 0)
        #expect(never.stop(now: 1) == .none)
        #expect(never.state == .stopped)

        var failedOver = announcer()
        _ = failedOver.start(now: 0)
        _ = failedOver.announceFailed(url: a, error: timeout, now: 1, using: &rng)
        #expect(failedOver.stop(now: 2) == .none)

        var idle = announcer()
        #expect(idle.stop(now: 0) == .none)
        #expect(idle.state == .idle)
    }

    @Test func stoppedGoesToTheTrackerThatLastAnswered() {
        var rng = SplitMix64(seed: 2024)
        var announcer = announcer()
        _ = announcer.start(now: 0)
        _ = announcer.announceFailed(url: a, error: timeout, now: 1, using: &rng)
        _ = announcer.announceSucceeded(url: b, response: response(), now: 2)
        // The regular announce goes to `a` again and is in flight at shutdown.
        #expect(announcer.timerFired(now: 2 + seconds(1800)) == .announce(url: a, event: .started))
        #expect(announcer.stop(now: 3 + seconds(1800)) == .announce(url: b, event: .stopped))
        #expect(announcer.stop(now: 4 + seconds(1800)) == .none)
        #expect(announcer.announceSucceeded(url: a, response: response(), now: 5 + seconds(1800)) == .none)  // abandoned
        #expect(announcer.announceFailed(url: b, error: timeout, now: 6 + seconds(1800), using: &rng) == .none)
        #expect(announcer.state == .stopped)
        #expect(announcer.timerFired(now: seconds(4000)) == .none)
        #expect(announcer.status(of: b)!.started == false)

        // Started again: a new session, `started` again.
        #expect(announcer.start(now: seconds(5000)) == .announce(url: a, event: .started))
        #expect(announcer.announceFailed(url: a, error: timeout, now: seconds(5000), using: &rng) == .announce(url: b, event: .started))
    }

    @Test func stopWhileWaiting() {
        var announcer = announcer()
        _ = announcer.start(now: 0)
        _ = announcer.announceSucceeded(url: a, response: response(), now: 0)
        #expect(announcer.stop(now: 10) == .announce(url: a, event: .stopped))
        #expect(announcer.announceSucceeded(url: a, response: response(), now: 11) == .none)
        #expect(announcer.state == .stopped)
        #expect(announcer.nextAnnounce == nil)
    }

    @Test func noTrackersDoesNothing() {
        var announcer = announcer([])
        #expect(announcer.start(now: 0) == .none)
        #expect(announcer.completed(now: 0) == .none)
        #expect(announcer.stop(now: 0) == .none)
        #expect(announcer.trackers.isEmpty)
    }

    @Test func keepsTheTrackerIDAndWarning() {
        var announcer = announcer()
        _ = announcer.start(now: 0)
        _ = announcer.announceSucceeded(url: a, response: AnnounceResponse(interval: 1800, trackerID: "t-1", warning: "be nice"), now: 0)
        #expect(announcer.trackerID(for: a) == "t-1")
        #expect(announcer.status(of: a)!.warning == "be nice")
        #expect(announcer.status(of: a)!.nextAnnounce == seconds(1800))
        _ = announcer.timerFired(now: seconds(1800))
        _ = announcer.announceSucceeded(url: a, response: response(), now: seconds(1800))
        #expect(announcer.trackerID(for: a) == "t-1")  // kept when not repeated
        #expect(announcer.status(of: a)!.warning == nil)
        #expect(announcer.trackerID(for: b) == nil)
    }
}
