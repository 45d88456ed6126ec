/// The BEP 10 extension handshake (extended message id 0).
public struct ExtensionHandshake: Equatable, Sendable {
    /// Extension name to the message id the sender wants to receive it under.
    public var messages: [String: Int] = [:]
    public var clientVersion: String?
    /// How many outstanding requests the sender accepts.
    public var requestQueueLength: Int?
    /// BEP 21: the sender only uploads (a seed, or partial seed).
    public var uploadOnly = false
    /// The address the sender sees us at (4 or 16 bytes).
    public var yourIP: [UInt8]?
    public var listenPort: Int?

    public init() {}

    public func encoded() -> [UInt8] {
        var dictionary = BencodeDictionary()
        var m = BencodeDictionary()
        for (name, id) in messages { m[name] = .integer(Int64(id)) }
        dictionary["m"] = .dictionary(m)
        if let clientVersion { dictionary["v"] = .string(clientVersion) }
        if let requestQueueLength { dictionary["reqq"] = .integer(Int64(requestQueueLength)) }
        if uploadOnly { dictionary["upload_only"] = .integer(1) }
        if let yourIP { dictionary["yourip"] = .bytes(yourIP) }
        if let listenPort { dictionary["p"] = .integer(Int64(listenPort)) }
        return Bencode.dictionary(dictionary).encoded()
    }

    /// Lenient about what it does not use, as clients add keys freely; strict about
    /// the bencoding itself.
    public init(payload: [UInt8]) throws(BencodeError) {
        let value = try BencodeDecoder.decode(payload, limits: .message)
        guard let dictionary = value.dictionaryValue else { throw BencodeError(.unexpectedByte(payload.first ?? 0), at: 0) }
        if let m = dictionary["m"]?.dictionaryValue {
            for key in m.sortedKeys {
                if let name = String(validating: key, as: UTF8.self), let id = m[rawKey: key]?.integerValue, (0...255).contains(id) {
                    messages[name] = Int(id)
                }
            }
        }
        clientVersion = dictionary["v"]?.stringValue
        if let reqq = dictionary["reqq"]?.integerValue, reqq > 0 { requestQueueLength = Int(min(reqq, 100_000)) }
        uploadOnly = (dictionary["upload_only"]?.integerValue ?? 0) != 0
        if let ip = dictionary["yourip"]?.bytesValue, ip.count == 4 || ip.count == 16 { yourIP = ip }
        if let port = dictionary["p"]?.integerValue, (1...65535).contains(port) { listenPort = Int(port) }
    }
}
