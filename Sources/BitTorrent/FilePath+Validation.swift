/// Checks that a path from a torrent stays inside the directory it is saved under.
///
/// A torrent is untrusted input: `..`, absolute paths, empty or `.` components, NULs
/// and separators hidden inside a component would let it write anywhere the process can.
public enum TorrentPath {
    /// Longest component most Linux file systems accept.
    public static let maxComponentBytes = 255

    public static func validateComponent(_ component: String, field: String) throws(MetainfoError) {
        if component.isEmpty { throw MetainfoError(field: field, "empty path component") }
        if component == "." || component == ".." {
            throw MetainfoError(field: field, "path component \"\(component)\" would leave the data directory")
        }
        if component.utf8.contains(0) { throw MetainfoError(field: field, "path component contains a NUL byte") }
        if component.utf8.contains(UInt8(ascii: "/")) {
            throw MetainfoError(field: field, "path component \"\(component)\" contains '/' (an absolute or nested path)")
        }
        if component.utf8.count > maxComponentBytes {
            throw MetainfoError(field: field, "path component longer than \(maxComponentBytes) bytes")
        }
    }
}
