import CLibevent
import Glibc
import Synchronization

/// The libevent loop that owns all network state. Everything that touches loop-owned
/// objects runs on the thread inside `run()`; other threads reach it through `post`.
public final class EventLoop: @unchecked Sendable {
    // @unchecked: `base` is only used on the loop thread, except `post`, which
    // libevent makes thread-safe (evthread_use_pthreads) and the queue's mutex guards.
    let base: OpaquePointer
    private var wakeEvent: OpaquePointer?
    private let pending = Mutex<[@Sendable () -> Void]>([])
    private let loopThread = Atomic<UInt>(0)

    private static let threadingEnabled: Bool = {
        evthread_use_pthreads() == 0
    }()

    public init() {
        precondition(Self.threadingEnabled, "libevent could not enable pthreads locking")
        guard let config = event_config_new() else { fatalError("event_config_new failed") }
        defer { event_config_free(config) }
        guard let base = event_base_new_with_config(config) else { fatalError("event_base_new failed") }
        self.base = base
        let context = Unmanaged.passUnretained(self).toOpaque()
        wakeEvent = event_new(base, -1, Int16(EV_PERSIST), { _, _, context in
            let loop = Unmanaged<EventLoop>.fromOpaque(context!).takeUnretainedValue()
            loop.drainPosted()
        }, context)
        event_add(wakeEvent, nil)
    }

    deinit {
        if let wakeEvent { event_free(wakeEvent) }
        event_base_free(base)
    }

    /// Runs until `stop()`. Returns on the calling thread, which is the loop thread
    /// while it runs.
    public func run() {
        loopThread.store(UInt(pthread_self()), ordering: .releasing)
        event_base_loop(base, EVLOOP_NO_EXIT_ON_EMPTY)
        loopThread.store(0, ordering: .releasing)
    }

    /// Ends `run()` after the callbacks of the current iteration. Loop thread only.
    public func stop() {
        event_base_loopbreak(base)
    }

    /// True on the thread currently inside `run()`.
    public var inLoop: Bool {
        loopThread.load(ordering: .acquiring) == UInt(pthread_self())
    }

    /// Runs `work` on the loop thread soon. Safe from any thread.
    public func post(_ work: @escaping @Sendable () -> Void) {
        let wasEmpty = pending.withLock { queue in
            queue.append(work)
            return queue.count == 1
        }
        if wasEmpty { event_active(wakeEvent, EV_READ, 0) }
    }

    private func drainPosted() {
        let batch = pending.withLock { queue in
            let taken = queue
            queue.removeAll(keepingCapacity: true)
            return taken
        }
        for work in batch { work() }
    }

    /// Monotonic time in microseconds: what the pure protocol modules take as `now`.
    public static func now() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return UInt64(spec.tv_sec) * 1_000_000 + UInt64(spec.tv_nsec) / 1000
    }
}

/// A value that may only be touched on its loop's thread, carried through `Sendable`
/// closures (the disk pool's completions) back to that thread.
public struct LoopBound<Value>: @unchecked Sendable {
    private let loop: EventLoop
    private let _value: Value

    public init(_ value: Value, loop: EventLoop) {
        self.loop = loop
        self._value = value
    }

    public var value: Value {
        precondition(loop.inLoop, "a loop-bound value was used off its loop thread")
        return _value
    }
}
