import Glibc
import Synchronization

public enum TorrentFileReader {
    public static func read(_ path: String) -> Result<[UInt8], some Error & CustomStringConvertible> {
        Session.readFile(path)
    }
}

public enum FileWriter {
    private static let sequence = Atomic<Int>(0)

    /// Writes to a temporary file beside `path`, syncs it and renames it into place,
    /// so a crash leaves either the old file or the new one, never half of one.
    public static func writeAtomically(_ bytes: [UInt8], to path: String) -> String? {
        // Unique per call, not just per process: two disk threads may save the same
        // torrent's resume data at once, and must not truncate or rename each other's file.
        let temporary = path + ".tmp-\(getpid())-\(sequence.add(1, ordering: .relaxed).newValue)"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return String(cString: strerror(errno)) }
        var written = 0
        while written < bytes.count {
            let count = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, $0.count - written) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 {
                let problem = String(cString: strerror(errno))
                close(fd)
                unlink(temporary)
                return problem
            }
            written += count
        }
        if fsync(fd) != 0 || close(fd) != 0 {
            let problem = String(cString: strerror(errno))
            unlink(temporary)
            return problem
        }
        if rename(temporary, path) != 0 {
            let problem = String(cString: strerror(errno))
            unlink(temporary)
            return problem
        }
        return nil
    }
}
