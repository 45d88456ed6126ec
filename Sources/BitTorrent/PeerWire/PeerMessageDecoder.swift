/// Why a peer was disconnected for what it sent.
public enum PeerProtocolError: Error, Equatable, Sendable, CustomStringConvertible {
    case messageTooLong(length: Int, limit: Int)
    case malformed(id: UInt8, length: Int)
    case badHandshake(String)

    public var description: String {
        switch self {
        case .messageTooLong(let length, let limit): return "message of \(length) bytes exceeds the limit of \(limit)"
        case .malformed(let id, let length): return "message id \(id) with invalid length \(length)"
        case .badHandshake(let why): return "bad handshake: \(why)"
        }
    }
}

/// Splits a byte stream into peer wire messages. Bytes are appended as they arrive;
/// complete messages are taken out one by one. The length limit is checked on the
/// 4-byte prefix, before anything is buffered, so a peer announcing 4 GiB costs nothing.
public struct PeerMessageDecoder {
    /// Bytes `start..<end` are buffered input; the rest is room that `fill` reads the
    /// socket straight into, so input is not copied on its way in.
    private var buffer: [UInt8] = []
    private var start = 0
    private var end = 0
    /// Raised once the torrent, and so its bitfield's size, is known.
    public var maxMessageLength: Int

    /// `maxMessageLength` bounds every message body; it must admit a 16 KiB block and
    /// the torrent's bitfield.
    public init(maxMessageLength: Int) {
        self.maxMessageLength = maxMessageLength
    }

    /// The limit for a torrent of `pieceCount` pieces: a block, a bitfield, or an
    /// extension message of up to 1 MiB (BEP 9 metadata pieces are 16 KiB; the rest small).
    public static func limit(pieceCount: Int) -> Int {
        max(9 + BlockRequest.maxLength, 1 + (pieceCount + 7) / 8, 1 << 20)
    }

    public var bufferedByteCount: Int { end - start }
    /// Bytes of storage held, buffered or room.
    var storageByteCount: Int { buffer.count }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        makeRoom(bytes.count, reading: false)
        buffer.withUnsafeMutableBytes { storage in
            UnsafeMutableRawBufferPointer(rebasing: storage[end..<(end + bytes.count)]).copyMemory(from: bytes)
        }
        end += bytes.count
    }

    /// Lets `read` write up to `capacity` bytes of input straight into the buffer; it
    /// returns how many it wrote. Returns that count.
    @discardableResult
    public mutating func fill(capacity: Int, _ read: (UnsafeMutableRawBufferPointer) -> Int) -> Int {
        guard capacity > 0 else { return 0 }
        makeRoom(capacity, reading: true)
        let tail = end
        let count = buffer.withUnsafeMutableBytes { storage in
            read(UnsafeMutableRawBufferPointer(rebasing: storage[tail..<(tail + capacity)]))
        }
        let added = max(0, min(count, capacity))
        end += added
        return added
    }

    public mutating func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { append($0) }
    }

    /// Up to `count` buffered bytes from the front, left in place.
    public func peekRaw(_ count: Int) -> ArraySlice<UInt8> {
        buffer[start..<(start + min(count, bufferedByteCount))]
    }

    /// Takes raw bytes off the front (the handshake, which is not length-prefixed).
    public mutating func takeRaw(_ count: Int) -> [UInt8]? {
        guard bufferedByteCount >= count else { return nil }
        let bytes = Array(buffer[start..<(start + count)])
        start += count
        return bytes
    }

    /// The next complete message, nil when more bytes are needed.
    public mutating func next() throws(PeerProtocolError) -> PeerMessage? {
        guard bufferedByteCount >= 4 else { return nil }
        let length = Int(readUInt32(at: start))
        guard length <= maxMessageLength else { throw .messageTooLong(length: length, limit: maxMessageLength) }
        guard bufferedByteCount >= 4 + length else { return nil }
        let body = start + 4
        start = body + length
        if length == 0 { return .keepAlive }
        let rawID = buffer[body]
        guard let id = PeerMessage.ID(rawValue: rawID) else { return .unknown(id: rawID, length: length) }
        func expect(_ expected: Int) throws(PeerProtocolError) {
            guard length == expected else { throw .malformed(id: rawID, length: length) }
        }
        switch id {
        case .choke: try expect(1); return .choke
        case .unchoke: try expect(1); return .unchoke
        case .interested: try expect(1); return .interested
        case .notInterested: try expect(1); return .notInterested
        case .haveAll: try expect(1); return .haveAll
        case .haveNone: try expect(1); return .haveNone
        case .have: try expect(5); return .have(piece: Int(readUInt32(at: body + 1)))
        case .suggestPiece: try expect(5); return .suggestPiece(piece: Int(readUInt32(at: body + 1)))
        case .allowedFast: try expect(5); return .allowedFast(piece: Int(readUInt32(at: body + 1)))
        case .bitfield: return .bitfield(Array(buffer[(body + 1)..<(body + length)]))
        case .request: try expect(13); return .request(block(at: body + 1))
        case .cancel: try expect(13); return .cancel(block(at: body + 1))
        case .rejectRequest: try expect(13); return .rejectRequest(block(at: body + 1))
        case .piece:
            guard length >= 9 else { throw .malformed(id: rawID, length: length) }
            return .piece(piece: Int(readUInt32(at: body + 1)), offset: Int(readUInt32(at: body + 5)),
                          data: Array(buffer[(body + 9)..<(body + length)]))
        case .port:
            try expect(3)
            return .port(UInt16(buffer[body + 1]) << 8 | UInt16(buffer[body + 2]))
        case .extended:
            guard length >= 2 else { throw .malformed(id: rawID, length: length) }
            return .extended(id: buffer[body + 1], payload: Array(buffer[(body + 2)..<(body + length)]))
        }
    }

    private func block(at offset: Int) -> BlockRequest {
        BlockRequest(piece: Int(readUInt32(at: offset)), offset: Int(readUInt32(at: offset + 4)), length: Int(readUInt32(at: offset + 8)))
    }

    private func readUInt32(at offset: Int) -> UInt32 {
        UInt32(buffer[offset]) << 24 | UInt32(buffer[offset + 1]) << 16 | UInt32(buffer[offset + 2]) << 8 | UInt32(buffer[offset + 3])
    }

    /// Makes room for `count` more bytes after `end`. Buffered bytes move to the front
    /// only when the room behind them is short, so a partial block is moved about once
    /// per buffer's worth of input rather than once per read. The storage is reused; once
    /// it empties, storage far larger than a `fill` asks for (its reads got smaller) is
    /// given back, so an idle peer does not keep hundreds of KiB; appended chunks (uTP)
    /// say nothing of what comes next, and give back only a buffer past 1 MiB (a huge
    /// bitfield or extension message).
    private mutating func makeRoom(_ count: Int, reading: Bool) {
        if start == end {
            start = 0
            end = 0
            if reading ? buffer.count > 64 << 10 && buffer.count > count * 4 : buffer.count > 1 << 20 && count <= 1 << 20 { buffer = [] }
        }
        guard buffer.count - end < count else { return }
        let buffered = end - start
        if start > 0 {
            if buffered > 0 {
                buffer.withUnsafeMutableBytes { storage in
                    let base = storage.baseAddress!
                    (base + 0).copyMemory(from: base + start, byteCount: buffered)
                }
            }
            start = 0
            end = buffered
        }
        let needed = buffered + count
        guard buffer.count < needed else { return }
        // Twice what is needed: room for the next reads without moving bytes again.
        buffer.append(contentsOf: repeatElement(0, count: needed * 2 - buffer.count))
    }
}
