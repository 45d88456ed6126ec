/// Nodes whose bucket ran dry, keyed by the time their bucket will hold a quantum again.
///
/// A min-heap instead of a scan so that thousands of individually limited peers cost
/// O(log n) per wake-up rather than O(n) per scheduler step. Entries are never removed
/// from the middle: a node that is removed or re-blocked bumps its stamp, and the stale
/// entry is discarded when it reaches the top (within a few ms, since wake times are
/// never far ahead), so nothing accumulates.
struct WakeHeap: Sendable {
    struct Entry: Sendable {
        var time: UInt64
        var node: Int32
        var stamp: UInt32
    }

    private(set) var entries: [Entry] = []

    var count: Int { entries.count }
    var top: Entry? { entries.first }

    mutating func push(_ entry: Entry) {
        entries.append(entry)
        var child = entries.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard entries[child].time < entries[parent].time else { break }
            entries.swapAt(child, parent)
            child = parent
        }
    }

    @discardableResult
    mutating func pop() -> Entry? {
        guard let first = entries.first else { return nil }
        let last = entries.removeLast()
        guard !entries.isEmpty else { return first }
        entries[0] = last
        var parent = 0
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < entries.count && entries[left].time < entries[smallest].time { smallest = left }
            if right < entries.count && entries[right].time < entries[smallest].time { smallest = right }
            guard smallest != parent else { break }
            entries.swapAt(parent, smallest)
            parent = smallest
        }
        return first
    }
}
