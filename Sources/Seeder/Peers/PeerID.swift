/// Our peer id, Azureus style (`-SD0100-` and 12 random characters), as trackers and
/// clients expect for telling implementations apart.
public enum PeerID {
    public static let prefix = "-SD0100-"

    public static func generate() -> [UInt8] {
        let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)
        var generator = SystemRandomNumberGenerator()
        return Array(prefix.utf8) + (0..<12).map { _ in alphabet.randomElement(using: &generator)! }
    }
}
