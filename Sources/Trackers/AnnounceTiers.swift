/// A torrent's trackers in BEP 12 order, and which one to announce to next.
///
/// BEP 12 (`announce-list`): shuffle each tier once, when the torrent is loaded; try
/// the trackers of the first tier in order; go to the next tier only when every tracker
/// of the tier failed; move a tracker that answered to the front of its tier, so the
/// next announce goes to it first. The shuffle spreads a swarm's load over equivalent
/// trackers; the promotion keeps a torrent on a tracker that works.
///
/// Each announce attempt starts over at the first tier after a success, so a tracker
/// of a higher-priority tier that comes back is used again. When the last tier has
/// failed too, iteration wraps to the first tier and `consecutiveFailedRounds` counts
/// the round: the announcer backs off between rounds rather than looping on dead
/// trackers.
public struct AnnounceTiers: Hashable, Sendable {
    /// The trackers, tier by tier, in their current order (shuffled, then promoted).
    public private(set) var tiers: [[String]]
    /// Position of the tracker to try next.
    public private(set) var tierIndex = 0
    public private(set) var trackerIndex = 0
    /// Full rounds (every tracker of every tier) that failed since the last success.
    public private(set) var consecutiveFailedRounds = 0

    /// Empty URLs and empty tiers are dropped, and a URL listed twice keeps only its
    /// first place: trackers are told apart by URL, so a duplicate would be announced
    /// to twice a round and promoted in two places.
    public init(_ tiers: [[String]], using rng: inout some RandomNumberGenerator) {
        var seen = Set<String>()
        var kept: [[String]] = []
        for tier in tiers {
            var urls = tier.filter { !$0.isEmpty && seen.insert($0).inserted }
            guard !urls.isEmpty else { continue }
            urls.shuffle(using: &rng)
            kept.append(urls)
        }
        self.tiers = kept
    }

    public var isEmpty: Bool { tiers.isEmpty }

    /// The tracker to announce to next; nil only when there are no trackers.
    public var current: String? {
        tiers.isEmpty ? nil : tiers[tierIndex][trackerIndex]
    }

    /// Whether a whole round failed since the last success.
    public var fullRoundFailed: Bool { consecutiveFailedRounds > 0 }

    /// Every tracker, in the order they would be tried.
    public var allTrackers: [String] { Array(tiers.joined()) }

    /// The tier a tracker is in (0 = first), or nil when it is not one of ours.
    public func tier(of url: String) -> Int? {
        tiers.firstIndex { $0.contains(url) }
    }

    /// `url` answered: it moves to the front of its tier and the next attempt starts
    /// over at the first tier.
    public mutating func succeeded(_ url: String) {
        guard let tier = tier(of: url), let index = tiers[tier].firstIndex(of: url) else { return }
        tiers[tier].remove(at: index)
        tiers[tier].insert(url, at: 0)
        tierIndex = 0
        trackerIndex = 0
        consecutiveFailedRounds = 0
    }

    /// `url` failed: move on to the next tracker of the tier, then to the next tier,
    /// then wrap to the first. Returns true when this failure completed a full round.
    /// A failure of a tracker other than the current one (say a late `stopped`) does
    /// not move the iteration.
    @discardableResult
    public mutating func failed(_ url: String) -> Bool {
        guard current == url else { return false }
        trackerIndex += 1
        guard trackerIndex == tiers[tierIndex].count else { return false }
        trackerIndex = 0
        tierIndex += 1
        guard tierIndex == tiers.count else { return false }
        tierIndex = 0
        consecutiveFailedRounds += 1
        return true
    }
}
