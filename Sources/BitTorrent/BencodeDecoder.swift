/// Bounds that keep a hostile input from using unbounded time or memory.
public struct BencodeLimits: Sendable {
    public var maxDepth: Int
    public var maxInputSize: Int
    public var maxItems: Int

    public init(maxDepth: Int = 100, maxInputSize: Int = 64 << 20, maxItems: Int = 4_000_000) {
        self.maxDepth = maxDepth
        self.maxInputSize = maxInputSize
        self.maxItems = maxItems
    }

    /// For torrent files: libtorrent's defaults are of the same order.
    public static let torrentFile = BencodeLimits()
    /// For messages from the network, which have no business being large.
    public static let message = BencodeLimits(maxDepth: 32, maxInputSize: 1 << 20, maxItems: 100_000)
}

/// A strict bencode decoder.
///
/// Refuses what would make two readers disagree on the value or on the info-hash:
/// leading zeros, `-0`, duplicate keys, lengths past the input, trailing bytes. Key
/// order is not enforced, because real torrents with unsorted keys exist and the
/// info-hash is taken from the bytes as they stand anyway.
public struct BencodeDecoder {
    private let input: [UInt8]
    private let limits: BencodeLimits
    private var position = 0
    private var items = 0

    private init(_ input: [UInt8], limits: BencodeLimits) {
        self.input = input
        self.limits = limits
    }

    /// Decodes exactly one value spanning the whole input.
    public static func decode(_ input: [UInt8], limits: BencodeLimits = .torrentFile) throws(BencodeError) -> Bencode {
        var decoder = try BencodeDecoder.start(input, limits: limits)
        let value = try decoder.value(depth: 0)
        guard decoder.position == input.count else { throw BencodeError(.trailingData, at: decoder.position) }
        return value
    }

    /// Decodes a value from the start of the input and returns where it ended; the
    /// bytes after it are the caller's (BEP 9 metadata messages put raw data there).
    public static func decodePrefix(_ input: [UInt8], limits: BencodeLimits = .message) throws(BencodeError) -> (Bencode, end: Int) {
        var decoder = try BencodeDecoder.start(input, limits: limits)
        let value = try decoder.value(depth: 0)
        return (value, decoder.position)
    }

    /// Decodes a top-level dictionary and also returns the byte range each of its
    /// values occupied, so that the info-hash is taken from the exact bytes of `info`.
    public static func decodeDictionaryWithSpans(_ input: [UInt8], limits: BencodeLimits = .torrentFile) throws(BencodeError) -> (BencodeDictionary, spans: [[UInt8]: Range<Int>]) {
        var decoder = try BencodeDecoder.start(input, limits: limits)
        guard decoder.position < input.count else { throw BencodeError(.unexpectedEnd, at: 0) }
        guard input[0] == UInt8(ascii: "d") else { throw BencodeError(.unexpectedByte(input[0]), at: 0) }
        var spans: [[UInt8]: Range<Int>] = [:]
        let dictionary = try decoder.dictionary(depth: 0) { key, range in spans[key] = range }
        guard decoder.position == input.count else { throw BencodeError(.trailingData, at: decoder.position) }
        return (dictionary, spans)
    }

    private static func start(_ input: [UInt8], limits: BencodeLimits) throws(BencodeError) -> BencodeDecoder {
        guard input.count <= limits.maxInputSize else {
            throw BencodeError(.inputTooLarge(limit: limits.maxInputSize), at: limits.maxInputSize)
        }
        return BencodeDecoder(input, limits: limits)
    }

    private mutating func value(depth: Int) throws(BencodeError) -> Bencode {
        guard position < input.count else { throw BencodeError(.unexpectedEnd, at: position) }
        items += 1
        guard items <= limits.maxItems else { throw BencodeError(.tooManyItems(limit: limits.maxItems), at: position) }
        switch input[position] {
        case UInt8(ascii: "i"):
            return .integer(try integer())
        case UInt8(ascii: "0")...UInt8(ascii: "9"):
            return .bytes(try byteString())
        case UInt8(ascii: "l"):
            guard depth < limits.maxDepth else { throw BencodeError(.tooDeep(limit: limits.maxDepth), at: position) }
            position += 1
            var list: [Bencode] = []
            while true {
                guard position < input.count else { throw BencodeError(.unexpectedEnd, at: position) }
                if input[position] == UInt8(ascii: "e") { position += 1; return .list(list) }
                list.append(try value(depth: depth + 1))
            }
        case UInt8(ascii: "d"):
            return .dictionary(try dictionary(depth: depth) { _, _ in })
        default:
            throw BencodeError(.unexpectedByte(input[position]), at: position)
        }
    }

    private mutating func dictionary(depth: Int, span: (_ key: [UInt8], _ range: Range<Int>) -> Void) throws(BencodeError) -> BencodeDictionary {
        guard depth < limits.maxDepth else { throw BencodeError(.tooDeep(limit: limits.maxDepth), at: position) }
        position += 1
        var result = BencodeDictionary()
        while true {
            guard position < input.count else { throw BencodeError(.unexpectedEnd, at: position) }
            let byte = input[position]
            if byte == UInt8(ascii: "e") { position += 1; return result }
            guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else {
                throw BencodeError(.nonStringKey, at: position)
            }
            let keyOffset = position
            let key = try byteString()
            guard result[rawKey: key] == nil else { throw BencodeError(.duplicateKey, at: keyOffset) }
            let start = position
            let element = try value(depth: depth + 1)
            span(key, start..<position)
            result[rawKey: key] = element
        }
    }

    private mutating func integer() throws(BencodeError) -> Int64 {
        let start = position
        position += 1  // 'i'
        var negative = false
        if position < input.count && input[position] == UInt8(ascii: "-") {
            negative = true
            position += 1
        }
        let digitsStart = position
        var magnitude: UInt64 = 0
        while position < input.count, let digit = Self.digit(input[position]) {
            let (times10, overflow1) = magnitude.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times10.addingReportingOverflow(UInt64(digit))
            guard !overflow1 && !overflow2 else { throw BencodeError(.integerOverflow, at: start) }
            magnitude = sum
            position += 1
        }
        guard position < input.count else { throw BencodeError(.unexpectedEnd, at: position) }
        guard input[position] == UInt8(ascii: "e") else { throw BencodeError(.unexpectedByte(input[position]), at: position) }
        let digitCount = position - digitsStart
        guard digitCount > 0 else { throw BencodeError(.emptyInteger, at: start) }
        if input[digitsStart] == UInt8(ascii: "0") {
            if negative { throw BencodeError(.negativeZero, at: start) }
            if digitCount > 1 { throw BencodeError(.leadingZero, at: start) }
        }
        position += 1  // 'e'
        if negative {
            guard magnitude <= UInt64(Int64.max) + 1 else { throw BencodeError(.integerOverflow, at: start) }
            return magnitude == UInt64(Int64.max) + 1 ? Int64.min : -Int64(magnitude)
        }
        guard magnitude <= UInt64(Int64.max) else { throw BencodeError(.integerOverflow, at: start) }
        return Int64(magnitude)
    }

    private mutating func byteString() throws(BencodeError) -> [UInt8] {
        let start = position
        var length = 0
        while position < input.count, let digit = Self.digit(input[position]) {
            // Any length beyond the input is refused below; this only stops overflow.
            guard length <= input.count else { throw BencodeError(.stringBeyondInput(length: length), at: start) }
            length = length * 10 + digit
            position += 1
        }
        guard position < input.count else { throw BencodeError(.unexpectedEnd, at: position) }
        guard input[position] == UInt8(ascii: ":") else { throw BencodeError(.unexpectedByte(input[position]), at: position) }
        if input[start] == UInt8(ascii: "0") && position - start > 1 { throw BencodeError(.invalidStringLength, at: start) }
        position += 1
        guard length <= input.count - position else { throw BencodeError(.stringBeyondInput(length: length), at: start) }
        let bytes = Array(input[position..<(position + length)])
        position += length
        return bytes
    }

    private static func digit(_ byte: UInt8) -> Int? {
        byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") ? Int(byte - UInt8(ascii: "0")) : nil
    }
}
