import CLibevent
import Glibc

/// Reports files that appear in or leave one directory, through inotify on the loop.
/// "Appeared" fires once a file is complete: when a writer closes it or it is moved or
/// linked in, never half-written (a .torrent copied in with `cp` is read only after
/// the copy finished). Loop thread only.
public final class DirectoryWatcher {
    public enum Change: Equatable, Sendable {
        case appeared(String)
        case disappeared(String)
        /// The directory itself was deleted or moved: nothing more will be reported.
        case directoryGone
        /// The kernel's queue overflowed: changes were lost, rescan the directory.
        case overflow
    }

    public struct WatchError: Error, CustomStringConvertible {
        public let description: String
    }

    private var fd: Int32 = -1
    private var event: OpaquePointer?
    private let handler: ([Change]) -> Void
    public let path: String

    public init(loop: EventLoop, path: String, handler: @escaping ([Change]) -> Void) throws(WatchError) {
        self.path = path
        self.handler = handler
        fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0 else { throw WatchError(description: "inotify: \(String(cString: strerror(errno)))") }
        let mask = UInt32(IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
        guard inotify_add_watch(fd, path, mask) >= 0 else {
            let reason = String(cString: strerror(errno))
            Glibc.close(fd)
            fd = -1
            throw WatchError(description: "cannot watch \(path): \(reason)")
        }
        let context = Unmanaged.passUnretained(self).toOpaque()
        event = event_new(loop.base, fd, Int16(EV_READ | EV_PERSIST), { _, _, context in
            Unmanaged<DirectoryWatcher>.fromOpaque(context!).takeUnretainedValue().drain()
        }, context)
        event_add(event, nil)
    }

    deinit { cancel() }

    public func cancel() {
        if let event {
            event_del(event)
            event_free(event)
        }
        event = nil
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    private func drain() {
        var changes: [Change] = []
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        while fd >= 0 {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            changes += Self.parse(buffer[0..<count])
        }
        if !changes.isEmpty { handler(changes) }
    }

    /// Decodes a read's worth of `struct inotify_event` records.
    static func parse(_ bytes: ArraySlice<UInt8>) -> [Change] {
        var changes: [Change] = []
        var offset = bytes.startIndex
        let headerSize = MemoryLayout<inotify_event>.size
        while offset + headerSize <= bytes.endIndex {
            let (mask, nameLength) = bytes.withUnsafeBytes { raw in
                let header = raw.loadUnaligned(fromByteOffset: offset - bytes.startIndex, as: inotify_event.self)
                return (header.mask, Int(header.len))
            }
            let nameStart = offset + headerSize
            let nameEnd = min(nameStart + nameLength, bytes.endIndex)
            let name = String(decoding: bytes[nameStart..<nameEnd].prefix { $0 != 0 }, as: UTF8.self)
            offset = nameEnd
            if mask & UInt32(IN_Q_OVERFLOW) != 0 {
                changes.append(.overflow)
            } else if mask & UInt32(IN_DELETE_SELF | IN_MOVE_SELF) != 0 {
                changes.append(.directoryGone)
            } else if !name.isEmpty && mask & UInt32(IN_CLOSE_WRITE | IN_MOVED_TO) != 0 {
                changes.append(.appeared(name))
            } else if !name.isEmpty && mask & UInt32(IN_DELETE | IN_MOVED_FROM) != 0 {
                changes.append(.disappeared(name))
            }
        }
        return changes
    }
}
