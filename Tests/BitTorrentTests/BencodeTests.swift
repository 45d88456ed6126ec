import Testing
@testable import BitTorrent

private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

@Suite struct BencodeTests {
    @Test func decodesEveryType() throws {
        let value = try BencodeDecoder.decode(bytes("d4:listli1ei-2e0:e3:numi42ee"))
        let dictionary = try #require(value.dictionaryValue)
        #expect(dictionary["list"] == .list([.integer(1), .integer(-2), .bytes([])]))
        #expect(dictionary["num"]?.integerValue == 42)
    }

    @Test func roundTrips() throws {
        let samples = ["i0e", "i-7e", "i9223372036854775807e", "i-9223372036854775808e", "0:", "4:spam",
                       "le", "de", "l4:spami42ee", "d3:bar4:spam3:fooi42ee", "d1:ad1:bl1:cdeeee"]
        for sample in samples {
            let value = try BencodeDecoder.decode(bytes(sample))
            #expect(value.encoded() == bytes(sample), "\(sample)")
        }
        var dictionary = BencodeDictionary()
        dictionary["zeta"] = .integer(1)
        dictionary["alpha"] = .list([.string("x"), .bytes([0, 255, 10])])
        let value = Bencode.dictionary(dictionary)
        #expect(try BencodeDecoder.decode(value.encoded()) == value)
        #expect(value.encoded() == bytes("d5:alphal1:x3:\u{0}") + [255, 10] + bytes("e4:zetai1ee"))
    }

    @Test func sortsKeysAsRawBytes() {
        var dictionary = BencodeDictionary()
        dictionary["b"] = .integer(1)
        dictionary["B"] = .integer(2)
        dictionary["a"] = .integer(3)
        #expect(Bencode.dictionary(dictionary).encoded() == bytes("d1:Bi2e1:ai3e1:bi1ee"))
    }

    @Test(arguments: [
        ("i01e", BencodeError.Kind.leadingZero, 0),
        ("i-0e", .negativeZero, 0),
        ("ie", .emptyInteger, 0),
        ("i-e", .emptyInteger, 0),
        ("i12", .unexpectedEnd, 3),
        ("i1x2e", .unexpectedByte(UInt8(ascii: "x")), 2),
        ("i9223372036854775808e", .integerOverflow, 0),
        ("i99999999999999999999e", .integerOverflow, 0),
        ("5:abc", .stringBeyondInput(length: 5), 0),
        ("99999999999999999999:a", .stringBeyondInput(length: 0), 0),
        ("03:abc", .invalidStringLength, 0),
        ("3abc", .unexpectedByte(UInt8(ascii: "a")), 1),
        ("l", .unexpectedEnd, 1),
        ("li1e", .unexpectedEnd, 4),
        ("d", .unexpectedEnd, 1),
        ("di1ei2ee", .nonStringKey, 1),
        ("d1:ai1e1:ai2ee", .duplicateKey, 7),
        ("d1:ae", .unexpectedByte(UInt8(ascii: "e")), 4),
        ("i1ei2e", .trailingData, 3),
        ("x", .unexpectedByte(UInt8(ascii: "x")), 0),
        ("", .unexpectedEnd, 0),
    ])
    func refusesMalformedInput(input: String, kind: BencodeError.Kind, offset: Int) {
        #expect {
            try BencodeDecoder.decode(bytes(input))
        } throws: { error in
            guard let error = error as? BencodeError else { return false }
            if case .stringBeyondInput = kind, case .stringBeyondInput = error.kind { return error.offset == offset }
            return error.kind == kind && error.offset == offset
        }
    }

    @Test func boundsDepth() {
        let deep = String(repeating: "l", count: 101) + String(repeating: "e", count: 101)
        #expect(throws: BencodeError(.tooDeep(limit: 100), at: 100)) { try BencodeDecoder.decode(bytes(deep)) }
        let fine = String(repeating: "l", count: 100) + String(repeating: "e", count: 100)
        #expect(throws: Never.self) { try BencodeDecoder.decode(bytes(fine)) }
    }

    @Test func boundsSizeAndItemCount() {
        let limits = BencodeLimits(maxDepth: 10, maxInputSize: 16, maxItems: 3)
        #expect(throws: BencodeError(.inputTooLarge(limit: 16), at: 16)) {
            try BencodeDecoder.decode(bytes("l" + String(repeating: "i1e", count: 6) + "e"), limits: limits)
        }
        #expect(throws: BencodeError(.tooManyItems(limit: 3), at: 7)) {
            try BencodeDecoder.decode(bytes("li1ei2ei3ee"), limits: limits)
        }
    }

    @Test func errorMessagesNameTheOffset() {
        let error = BencodeError(.leadingZero, at: 17)
        #expect(error.description == "bencode: integer has a leading zero at byte 17")
    }

    @Test func reportsSpansOfTopLevelValues() throws {
        let input = bytes("d1:ai1e4:infod1:xi2eee")
        let (_, spans) = try BencodeDecoder.decodeDictionaryWithSpans(input)
        let span = try #require(spans[bytes("info")])
        #expect(Array(input[span]) == bytes("d1:xi2ee"))
    }

    @Test func decodesAPrefixAndLeavesTheRest() throws {
        let (value, end) = try BencodeDecoder.decodePrefix(bytes("d1:ai1eeRAW"))
        #expect(value.dictionaryValue?["a"] == .integer(1))
        #expect(end == 8)
    }
}
