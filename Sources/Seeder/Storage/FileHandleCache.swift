import Glibc
import Synchronization

/// A bounded cache of open file descriptors shared by every torrent, so that hundreds
/// of torrents with thousands of files stay under the process's descriptor limit.
/// Least recently used descriptors that no thread is using are closed first.
public final class FileHandleCache: Sendable {
    private final class Handle: @unchecked Sendable {
        // Guarded by the cache's mutex.
        let fd: Int32
        let writable: Bool
        var users = 0
        var lastUse: UInt64 = 0
        var retired = false
        init(fd: Int32, writable: Bool) {
            self.fd = fd
            self.writable = writable
        }
    }

    private struct State {
        var handles: [String: Handle] = [:]
        var clock: UInt64 = 0
    }

    public let capacity: Int
    private let state = Mutex(State())

    public init(capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
    }

    deinit {
        state.withLock { state in
            for handle in state.handles.values { close(handle.fd) }
        }
    }

    public var openCount: Int { state.withLock { $0.handles.count } }

    /// Runs `body` with a descriptor for `path`, opened for reading, or for reading and
    /// writing (created if missing) when `writable`.
    public func withDescriptor<R>(path: String, writable: Bool, _ body: (Int32) throws(StorageError) -> R) throws(StorageError) -> R {
        let handle = try acquire(path: path, writable: writable)
        defer { release(handle) }
        return try body(handle.fd)
    }

    /// Closes the descriptor for `path` once nobody uses it, e.g. after a file changed
    /// under us or a torrent was removed.
    public func forget(path: String) {
        state.withLock { state in
            guard let handle = state.handles.removeValue(forKey: path) else { return }
            if handle.users == 0 { close(handle.fd) } else { handle.retired = true }
        }
    }

    private func acquire(path: String, writable: Bool) throws(StorageError) -> Handle {
        let result: Result<Handle, StorageError> = state.withLock { state in
            state.clock += 1
            if let handle = state.handles[path], handle.writable || !writable {
                handle.users += 1
                handle.lastUse = state.clock
                return .success(handle)
            }
            // O_NONBLOCK: a FIFO put where a data file was would otherwise block the open
            // until a writer came, holding this thread and the lock every disk thread
            // needs. On a regular file the flag changes nothing.
            let flags = (writable ? (O_RDWR | O_CREAT) : O_RDONLY) | O_CLOEXEC | O_NONBLOCK
            let fd = open(path, flags, 0o644)
            guard fd >= 0 else {
                let code = errno
                return .failure(code == ENOENT ? .missing(path: path) : .system(path: path, operation: "open", errno: code))
            }
            var info = stat()
            guard fstat(fd, &info) == 0 else {
                let code = errno
                close(fd)
                return .failure(.system(path: path, operation: "stat", errno: code))
            }
            guard info.st_mode & S_IFMT == S_IFREG else {
                close(fd)
                return .failure(.notRegularFile(path: path))
            }
            if let old = state.handles[path] {
                // Upgrading to writable while readers still hold the old descriptor.
                if old.users == 0 { close(old.fd) } else { old.retired = true }
            }
            let handle = Handle(fd: fd, writable: writable)
            handle.users = 1
            handle.lastUse = state.clock
            state.handles[path] = handle
            evictIfNeeded(&state)
            return .success(handle)
        }
        return try result.get()
    }

    private func release(_ handle: Handle) {
        state.withLock { state in
            handle.users -= 1
            if handle.retired && handle.users == 0 { close(handle.fd) }
        }
    }

    private func evictIfNeeded(_ state: inout State) {
        while state.handles.count > capacity {
            var victim: (String, Handle)?
            for (path, handle) in state.handles where handle.users == 0 {
                if victim == nil || handle.lastUse < victim!.1.lastUse { victim = (path, handle) }
            }
            guard let (path, handle) = victim else { return }  // all busy: over capacity briefly
            state.handles.removeValue(forKey: path)
            close(handle.fd)
        }
    }
}
