import BitTorrent
import Foundation
import Synchronization

/// Threads that do the blocking disk work (pread, pwrite) and SHA-1, so the event loop
/// never waits on a disk. Jobs run in submission order, each on some free thread.
public final class DiskPool: Sendable {
    public let threadCount: Int
    private let condition = NSCondition()
    private let queue = QueueBox()

    private final class QueueBox: @unchecked Sendable {
        // Guarded by `condition`.
        var jobs = JobQueue()
        var stopping = false
        var running = 0
    }

    /// `threads` of 0 means one per core.
    public init(threads: Int) {
        threadCount = threads > 0 ? threads : max(1, ProcessInfo.processInfo.activeProcessorCount)
        for index in 0..<threadCount {
            let thread = Thread { [condition, queue] in
                Self.work(condition: condition, queue: queue)
            }
            thread.name = "disk-\(index)"
            thread.start()
        }
        condition.lock()
        while queue.running < threadCount { condition.wait() }
        condition.unlock()
    }

    public func submit(_ job: @escaping @Sendable () -> Void) {
        condition.lock()
        queue.jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    /// Jobs submitted and not yet started.
    public var backlog: Int {
        condition.lock()
        defer { condition.unlock() }
        return queue.jobs.count
    }

    /// Lets queued jobs finish, then ends the threads and waits for them.
    public func shutdown() {
        condition.lock()
        queue.stopping = true
        condition.broadcast()
        while queue.running > 0 { condition.wait() }
        condition.unlock()
    }

    private static func work(condition: NSCondition, queue: QueueBox) {
        condition.lock()
        queue.running += 1
        condition.broadcast()
        while true {
            while queue.jobs.isEmpty && !queue.stopping { condition.wait() }
            guard let job = queue.jobs.take() else {
                condition.unlock()
                // Before `shutdown` can return: the caller may exit the process next.
                SHA1.releaseThreadState()
                condition.lock()
                queue.running -= 1
                condition.broadcast()
                condition.unlock()
                return
            }
            condition.unlock()
            job()
            condition.lock()
        }
    }
}

/// Jobs run one at a time, in order, on a disk pool: a torrent's block writes. Two
/// threads writing one file queue up on its inode lock in the kernel (and spin there),
/// and on the piece's inline hash; one after the other, neither waits.
final class SerialDiskJobs: Sendable {
    private struct State {
        var jobs = JobQueue()
        var running = false
    }

    private let pool: DiskPool
    private let state = Mutex(State())
    /// Jobs one turn on a pool thread runs before going to the back of the pool's queue,
    /// so that other torrents' jobs and block reads get their turn.
    static let jobsPerTurn = 16

    init(pool: DiskPool) {
        self.pool = pool
    }

    func submit(_ job: @escaping @Sendable () -> Void) {
        let start = state.withLock { state -> Bool in
            state.jobs.append(job)
            guard !state.running else { return false }
            state.running = true
            return true
        }
        if start { pool.submit { self.runTurn() } }
    }

    private func runTurn() {
        for _ in 0..<Self.jobsPerTurn {
            let job = state.withLock { state -> (@Sendable () -> Void)? in
                guard let job = state.jobs.take() else {
                    state.running = false
                    return nil
                }
                return job
            }
            guard let job else { return }
            job()
        }
        // Still running: what is left goes on in a later turn.
        pool.submit { self.runTurn() }
    }
}

/// Jobs first in, first out. A taken job's slot is emptied at once: a closure left in
/// the array would keep what it captured (a write job's 256 KiB of blocks) alive until
/// the next compaction.
struct JobQueue: Sendable {
    private var jobs: [(@Sendable () -> Void)?] = []
    private var head = 0

    var count: Int { jobs.count - head }
    var isEmpty: Bool { head == jobs.count }

    mutating func append(_ job: @escaping @Sendable () -> Void) {
        jobs.append(job)
    }

    mutating func take() -> (@Sendable () -> Void)? {
        guard head < jobs.count else { return nil }
        let job = jobs[head]
        jobs[head] = nil
        head += 1
        if head == jobs.count {
            jobs.removeAll(keepingCapacity: jobs.capacity <= 4096)
            head = 0
        } else if head >= 1024 && head * 2 >= jobs.count {
            jobs.removeFirst(head)
            head = 0
        }
        return job
    }
}
