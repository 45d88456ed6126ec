import BitTorrent
import Glibc

/// A torrent's byte stream on disk. Reads and writes may span files; BEP 47 padding
/// reads as zeros and is never written. Called from disk-pool threads only.
public final class TorrentStorage: Sendable {
    public let layout: FileLayout
    /// Absolute path of every file, in the torrent's order (padding files included,
    /// though nothing is ever opened for them).
    public let paths: [String]
    private let cache: FileHandleCache

    /// `dataDirectory` is a client's save path: a single-file torrent's file is
    /// DATA/<name>, a multi-file torrent's files live under DATA/<name>/.
    public convenience init(metainfo: Metainfo, dataDirectory: String, cache: FileHandleCache) {
        self.init(files: metainfo.files, paths: Self.paths(of: metainfo, in: dataDirectory), cache: cache)
    }

    public init(files: [TorrentFile], paths: [String], cache: FileHandleCache) {
        precondition(files.count == paths.count)
        layout = FileLayout(files: files)
        self.paths = paths
        self.cache = cache
    }

    /// Where each of a torrent's files lives under a data directory. Metainfo has
    /// already refused components that could climb out of it.
    public static func paths(of metainfo: Metainfo, in dataDirectory: String) -> [String] {
        var root = dataDirectory
        while root.count > 1 && root.hasSuffix("/") { root.removeLast() }
        return metainfo.files.map { file in
            metainfo.isMultiFile
                ? ([root, metainfo.name] + file.path).joined(separator: "/")
                : root + "/" + metainfo.name
        }
    }

    /// Fills `buffer` with the bytes at `offset` of the torrent's stream.
    public func read(offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(StorageError) {
        for segment in layout.segments(offset: offset, length: buffer.count) {
            let target = UnsafeMutableRawBufferPointer(rebasing: buffer[segment.bufferOffset..<(segment.bufferOffset + segment.length)])
            if layout.files[segment.fileIndex].isPadding {
                target.initializeMemory(as: UInt8.self, repeating: 0)
                continue
            }
            let path = paths[segment.fileIndex]
            try cache.withDescriptor(path: path, writable: false) { fd throws(StorageError) in
                var done = 0
                while done < segment.length {
                    let count = pread(fd, target.baseAddress! + done, segment.length - done, off_t(segment.fileOffset) + off_t(done))
                    if count < 0 {
                        if errno == EINTR { continue }
                        throw .system(path: path, operation: "read", errno: errno)
                    }
                    if count == 0 { throw .short(path: path) }
                    done += count
                }
            }
        }
    }

    /// Writes `buffer` at `offset` of the torrent's stream, creating directories and
    /// files as needed.
    public func write(offset: Int64, from buffer: UnsafeRawBufferPointer) throws(StorageError) {
        for segment in layout.segments(offset: offset, length: buffer.count) {
            if layout.files[segment.fileIndex].isPadding { continue }
            let path = paths[segment.fileIndex]
            let source = UnsafeRawBufferPointer(rebasing: buffer[segment.bufferOffset..<(segment.bufferOffset + segment.length)])
            do {
                try write(source, to: path, at: segment.fileOffset, length: segment.length)
            } catch .missing {
                // The first write into a new folder: create it, then write. Checking for
                // the folders before every block cost a mkdir per level per block.
                try Self.createParentDirectories(of: path)
                try write(source, to: path, at: segment.fileOffset, length: segment.length)
            }
        }
    }

    /// Writes `buffers`, one after another, at `offset` of the torrent's stream: one
    /// `pwritev` per file they cover instead of a `pwrite` per buffer (a download's write
    /// job holds up to 16 consecutive blocks; each call costs the file system its locking
    /// and bookkeeping once).
    public func write(offset: Int64, from buffers: [UnsafeRawBufferPointer]) throws(StorageError) {
        let total = buffers.reduce(0) { $0 + $1.count }
        for segment in layout.segments(offset: offset, length: total) {
            if layout.files[segment.fileIndex].isPadding { continue }
            let path = paths[segment.fileIndex]
            // The parts of the buffers this file's segment covers.
            var parts: [UnsafeRawBufferPointer] = []
            var position = 0
            let start = segment.bufferOffset
            let end = start + segment.length
            for buffer in buffers {
                let lower = max(start, position)
                let upper = min(end, position + buffer.count)
                if lower < upper {
                    parts.append(UnsafeRawBufferPointer(rebasing: buffer[(lower - position)..<(upper - position)]))
                }
                position += buffer.count
                if position >= end { break }
            }
            do {
                try write(parts, to: path, at: segment.fileOffset)
            } catch .missing {
                try Self.createParentDirectories(of: path)
                try write(parts, to: path, at: segment.fileOffset)
            }
        }
    }

    /// Linux's IOV_MAX (the macro does not import); past it, the short-write path below
    /// writes the rest.
    private static let maxVectors = 1024

    private func write(_ parts: [UnsafeRawBufferPointer], to path: String, at fileOffset: Int64) throws(StorageError) {
        guard parts.count > 1 else {
            if let part = parts.first { try write(part, to: path, at: fileOffset, length: part.count) }
            return
        }
        let length = parts.reduce(0) { $0 + $1.count }
        let written: Int = try cache.withDescriptor(path: path, writable: true) { fd throws(StorageError) in
            let vectors = parts.map { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) }
            while true {
                let count = vectors.withUnsafeBufferPointer { pwritev(fd, $0.baseAddress, Int32(min($0.count, Self.maxVectors)), off_t(fileOffset)) }
                if count >= 0 { return count }
                if errno == EINTR { continue }
                throw .system(path: path, operation: "write", errno: errno)
            }
        }
        guard written < length else { return }
        // A short write (rare: a signal, a nearly full disk): the rest part by part.
        var position = 0
        for part in parts {
            defer { position += part.count }
            let skip = max(0, written - position)
            guard skip < part.count else { continue }
            let rest = UnsafeRawBufferPointer(rebasing: part[skip...])
            try write(rest, to: path, at: fileOffset + Int64(position + skip), length: rest.count)
        }
    }

    private func write(_ source: UnsafeRawBufferPointer, to path: String, at fileOffset: Int64, length: Int) throws(StorageError) {
        try cache.withDescriptor(path: path, writable: true) { fd throws(StorageError) in
            var done = 0
            while done < length {
                let count = pwrite(fd, source.baseAddress! + done, length - done, off_t(fileOffset) + off_t(done))
                if count < 0 {
                    if errno == EINTR { continue }
                    throw .system(path: path, operation: "write", errno: errno)
                }
                done += count
            }
        }
    }

    /// Reserves every file's full length (`[storage] preallocate`), so that a full disk
    /// shows at once rather than halfway through a download, and the files do not
    /// fragment. Data already there is kept.
    public func preallocate() throws(StorageError) {
        for (index, file) in layout.files.enumerated() where !file.isPadding && file.length > 0 {
            let path = paths[index]
            try Self.createParentDirectories(of: path)
            try cache.withDescriptor(path: path, writable: true) { fd throws(StorageError) in
                // posix_fallocate returns the error instead of setting errno.
                let code = posix_fallocate(fd, 0, off_t(file.length))
                if code != 0 { throw .system(path: path, operation: "fallocate", errno: code) }
            }
        }
    }

    public var hasEmptyFiles: Bool { layout.files.contains { !$0.isPadding && $0.length == 0 } }

    /// Creates the torrent's zero-length files: no block is ever written to them, so a
    /// download would otherwise finish without them. Existing files are left as they are.
    public func createEmptyFiles() throws(StorageError) {
        for (index, file) in layout.files.enumerated() where !file.isPadding && file.length == 0 {
            let path = paths[index]
            try Self.createParentDirectories(of: path)
            try cache.withDescriptor(path: path, writable: true) { _ throws(StorageError) in }
        }
    }

    /// Size and modification time of each file, or nil where it does not exist.
    public func fileStatus(_ index: Int) -> (size: Int64, modified: Int64)? {
        var info = stat()
        guard stat(paths[index], &info) == 0 else { return nil }
        return (Int64(info.st_size), Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec))
    }

    static func createParentDirectories(of path: String) throws(StorageError) {
        var components = path.split(separator: "/", omittingEmptySubsequences: false)
        components.removeLast()
        var current = path.hasPrefix("/") ? "" : "."
        for component in components where !component.isEmpty {
            current += "/" + component
            if mkdir(current, 0o755) != 0 && errno != EEXIST {
                throw .system(path: current, operation: "mkdir", errno: errno)
            }
        }
    }
}
