/// Why a torrent file was refused. `field` names the key, in the dotted form an
/// operator can find in the file (`info.files[3].path`).
public struct MetainfoError: Error, Equatable, Sendable, CustomStringConvertible {
    public let field: String
    public let problem: String

    public init(field: String, _ problem: String) {
        self.field = field
        self.problem = problem
    }

    public var description: String { field.isEmpty ? problem : "\(field): \(problem)" }
}
