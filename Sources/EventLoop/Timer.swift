import CLibevent

/// A one-shot or repeating timer on the loop. Loop thread only; cancel or drop it to
/// stop it.
public final class Timer {
    private var event: OpaquePointer?
    private let handler: () -> Void
    private let repeating: Bool
    private let intervalMicroseconds: Int64

    /// Fires `handler` after `microseconds`, and again every `microseconds` when
    /// `repeating`.
    public init(loop: EventLoop, after microseconds: Int64, repeating: Bool = false, handler: @escaping () -> Void) {
        self.handler = handler
        self.repeating = repeating
        intervalMicroseconds = microseconds
        let context = Unmanaged.passUnretained(self).toOpaque()
        event = seeder_evtimer_new(loop.base, { _, _, context in
            let timer = Unmanaged<Timer>.fromOpaque(context!).takeUnretainedValue()
            timer.fire()
        }, context)
        seeder_evtimer_add(event, microseconds)
    }

    private func fire() {
        if repeating, let event { seeder_evtimer_add(event, intervalMicroseconds) }
        handler()
    }

    /// Fires the (one-shot) timer `microseconds` from now instead of when it was due,
    /// so an owner that re-arms often (uTP's single deadline) reuses one event.
    public func schedule(after microseconds: Int64) {
        if let event { seeder_evtimer_add(event, max(0, microseconds)) }
    }

    public func cancel() {
        if let event {
            event_del(event)
            event_free(event)
        }
        event = nil
    }

    deinit { cancel() }
}

/// Runs a handler on the loop when a POSIX signal arrives.
public final class SignalWatcher {
    private var event: OpaquePointer?
    private let handler: () -> Void

    public init(loop: EventLoop, signal: Int32, handler: @escaping () -> Void) {
        self.handler = handler
        let context = Unmanaged.passUnretained(self).toOpaque()
        event = seeder_evsignal_new(loop.base, signal, { _, _, context in
            Unmanaged<SignalWatcher>.fromOpaque(context!).takeUnretainedValue().handler()
        }, context)
        event_add(event, nil)
    }

    public func cancel() {
        if let event {
            event_del(event)
            event_free(event)
        }
        event = nil
    }

    deinit { cancel() }
}
