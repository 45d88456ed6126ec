import Glibc

public enum StorageError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The file does not exist (yet): its pieces are simply missing.
    case missing(path: String)
    /// The file is shorter than the torrent says: the pieces past its end are missing.
    case short(path: String)
    case system(path: String, operation: String, errno: Int32)
    /// A FIFO, device or directory where the torrent has a file: never opened for data.
    case notRegularFile(path: String)

    public var description: String {
        switch self {
        case .missing(let path): return "\(path): no such file"
        case .short(let path): return "\(path): shorter than the torrent says"
        case .notRegularFile(let path): return "\(path): not a regular file"
        case .system(let path, let operation, let code):
            return "\(path): \(operation) failed: \(String(cString: strerror(code)))"
        }
    }

    /// Missing and short files mean "we do not have these pieces", not a fault.
    public var isMissingData: Bool {
        switch self {
        case .missing, .short: return true
        case .system, .notRegularFile: return false
        }
    }
}
