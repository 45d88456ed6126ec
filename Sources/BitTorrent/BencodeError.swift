/// Why a bencoded input was refused, and where.
public struct BencodeError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Kind: Equatable, Sendable {
        case unexpectedEnd
        case unexpectedByte(UInt8)
        case emptyInteger
        case leadingZero
        case negativeZero
        case integerOverflow
        case invalidStringLength
        case stringBeyondInput(length: Int)
        case nonStringKey
        case duplicateKey
        case tooDeep(limit: Int)
        case inputTooLarge(limit: Int)
        case tooManyItems(limit: Int)
        case trailingData
    }

    public let kind: Kind
    /// Byte offset in the input where the problem was found.
    public let offset: Int

    public init(_ kind: Kind, at offset: Int) {
        self.kind = kind
        self.offset = offset
    }

    public var description: String {
        let what: String
        switch kind {
        case .unexpectedEnd: what = "input ends in the middle of a value"
        case .unexpectedByte(let byte):
            let shown = (0x21...0x7E).contains(byte) ? "'\(Character(Unicode.Scalar(byte)))'" : "0x" + String(byte, radix: 16)
            what = "unexpected byte \(shown)"
        case .emptyInteger: what = "integer has no digits"
        case .leadingZero: what = "integer has a leading zero"
        case .negativeZero: what = "integer is -0"
        case .integerOverflow: what = "integer does not fit in 64 bits"
        case .invalidStringLength: what = "byte-string length is not a valid number"
        case .stringBeyondInput(let length): what = "byte string of \(length) bytes runs past the end of the input"
        case .nonStringKey: what = "dictionary key is not a byte string"
        case .duplicateKey: what = "dictionary key appears twice"
        case .tooDeep(let limit): what = "values nested deeper than \(limit) levels"
        case .inputTooLarge(let limit): what = "input larger than \(limit) bytes"
        case .tooManyItems(let limit): what = "more than \(limit) values"
        case .trailingData: what = "data after the end of the top-level value"
        }
        return "bencode: \(what) at byte \(offset)"
    }
}
