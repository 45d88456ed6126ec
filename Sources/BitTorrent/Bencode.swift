/// A bencoded value (BEP 3).
///
/// Byte strings stay bytes: torrent fields such as `pieces` are binary, and names are
/// only UTF-8 by convention.
public enum Bencode: Equatable, Sendable {
    case integer(Int64)
    case bytes([UInt8])
    case list([Bencode])
    case dictionary(BencodeDictionary)

    public static func string(_ text: String) -> Bencode { .bytes(Array(text.utf8)) }

    public var integerValue: Int64? {
        if case .integer(let value) = self { return value }
        return nil
    }

    public var bytesValue: [UInt8]? {
        if case .bytes(let value) = self { return value }
        return nil
    }

    /// The byte string as UTF-8 text, or nil when it is not a string or not valid UTF-8.
    public var stringValue: String? {
        guard case .bytes(let value) = self else { return nil }
        return String(validating: value, as: UTF8.self)
    }

    public var listValue: [Bencode]? {
        if case .list(let value) = self { return value }
        return nil
    }

    public var dictionaryValue: BencodeDictionary? {
        if case .dictionary(let value) = self { return value }
        return nil
    }

    /// The name of this value's type, for error messages.
    public var typeName: String {
        switch self {
        case .integer: return "integer"
        case .bytes: return "byte string"
        case .list: return "list"
        case .dictionary: return "dictionary"
        }
    }
}

/// A bencoded dictionary. Keys are byte strings; encoding writes them sorted as raw
/// bytes, which is what BEP 3 requires and what makes info-hashes reproducible.
public struct BencodeDictionary: Equatable, Sendable {
    public private(set) var storage: [[UInt8]: Bencode]

    public init() { storage = [:] }

    public init(_ pairs: [(String, Bencode)]) {
        storage = [:]
        for (key, value) in pairs { storage[Array(key.utf8)] = value }
    }

    public subscript(key: String) -> Bencode? {
        get { storage[Array(key.utf8)] }
        set { storage[Array(key.utf8)] = newValue }
    }

    public subscript(rawKey key: [UInt8]) -> Bencode? {
        get { storage[key] }
        set { storage[key] = newValue }
    }

    public var count: Int { storage.count }

    /// Keys in the order bencoding writes them.
    public var sortedKeys: [[UInt8]] {
        storage.keys.sorted { $0.lexicographicallyPrecedes($1) }
    }
}
