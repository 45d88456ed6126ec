import Testing
@testable import BitTorrent

@Suite struct HashStrikesTests {
    @Test func bansAtTheThreshold() {
        var strikes = HashStrikes<String>()
        #expect(strikes.strike("10.0.0.1") == .struck(1))
        #expect(strikes.strike("10.0.0.1") == .struck(2))
        #expect(!strikes.isBanned("10.0.0.1"))
        #expect(strikes.strike("10.0.0.1") == .banned)
        #expect(strikes.isBanned("10.0.0.1"))
        #expect(strikes.strike("10.0.0.1") == .alreadyBanned)
        #expect(!strikes.isBanned("10.0.0.2"))
        strikes.forgive("10.0.0.1")
        #expect(!strikes.isBanned("10.0.0.1"))
    }

    @Test func strikesEveryContributorOfAFailedPiece() {
        var strikes = HashStrikes<String>(threshold: 2)
        #expect(strikes.pieceFailed(blamed: ["a", "b"]) == [])
        #expect(strikes.pieceFailed(blamed: ["b", "c"]) == ["b"])
        #expect(strikes.strikes(of: "a") == 1 && strikes.strikes(of: "c") == 1)
        #expect(strikes.bannedCount == 1)
    }

    @Test func aReloadedThresholdAppliesFromTheNextStrike() {
        var strikes = HashStrikes<String>(threshold: 5)
        strikes.strike("a"); strikes.strike("a")
        strikes.setThreshold(2)
        // Lowering bans nobody without new evidence; the next strike does.
        #expect(!strikes.isBanned("a"))
        #expect(strikes.strike("a") == .banned)
        strikes.setThreshold(10)
        #expect(strikes.isBanned("a"))
        #expect(strikes.strike("b") == .struck(1))
        strikes.setThreshold(0)
        #expect(strikes.threshold == 1)
    }

    @Test func theTableIsBoundedAndKeepsBansLongest() {
        var strikes = HashStrikes<Int>(threshold: 2, capacity: 3)
        strikes.strike(1); strikes.strike(1)  // banned
        strikes.strike(2); strikes.strike(2)  // banned
        strikes.strike(3)
        strikes.strike(4)  // evicts 3: fewest strikes, unbanned
        #expect(strikes.count == 3)
        #expect(strikes.strikes(of: 3) == 0 && strikes.strikes(of: 4) == 1)
        #expect(strikes.isBanned(1) && strikes.isBanned(2))
        for address in 100..<1000 { strikes.strike(address) }
        #expect(strikes.count == 3)
        #expect(strikes.isBanned(1) && strikes.isBanned(2))
    }
}
