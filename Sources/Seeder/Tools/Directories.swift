import Glibc

public enum Directories {
    /// Creates `path` and its parents; returns a description of the problem, if any.
    public static func ensure(_ path: String) -> String? {
        var current = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            current += "/" + component
            if mkdir(current, 0o755) != 0 && errno != EEXIST {
                return String(cString: strerror(errno))
            }
        }
        var info = stat()
        guard stat(path, &info) == 0 else { return String(cString: strerror(errno)) }
        guard (info.st_mode & S_IFMT) == S_IFDIR else { return "exists and is not a directory" }
        return nil
    }
}

/// Writes to standard error without going through a shared FILE*.
public func printError(_ text: String) {
    var bytes = Array((text + "\n").utf8)
    var written = 0
    while written < bytes.count {
        let count = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress! + written, $0.count - written) }
        if count < 0 && errno == EINTR { continue }
        if count <= 0 { return }
        written += count
    }
}
