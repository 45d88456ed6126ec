/// BEP 29 packet types, carried in the high nibble of byte 0.
public enum UTPPacketType: UInt8, Sendable, CaseIterable {
    case data = 0
    case fin = 1
    case state = 2
    case reset = 3
    case syn = 4
}

/// Why a datagram was refused. Refusal is silent on the wire; the reason is for tests and stats.
public enum UTPPacketError: Error, Equatable, Sendable {
    case tooShort
    case badVersion
    case badType
    case extensionOverrun
    case badLegacyExtensionLength
}

/// Extension ids in the header chain. Only 1 is ever sent first: LU and OLU take a
/// datagram whose first extension is >= 3 for something other than uTP.
public enum UTPExtension {
    public static let none: UInt8 = 0
    public static let selectiveAck: UInt8 = 1
    /// Legacy "extension bits", always 8 bytes; Transmission 3.00 puts it in every SYN.
    public static let legacyBits: UInt8 = 2
    /// libtorrent's close reason; skipped like any other unknown extension.
    public static let closeReason: UInt8 = 3
}

/// The fixed 20-byte BEP 29 header, big-endian on the wire:
/// `type<<4|ver, extension, connection_id, timestamp_us, timestamp_difference_us,
/// wnd_size, seq_nr, ack_nr`.
public struct UTPHeader: Equatable, Sendable {
    public static let size = 20
    public static let version: UInt8 = 1

    public var type: UTPPacketType
    public var connectionID: UInt16
    public var timestamp: UInt32
    public var timestampDifference: UInt32
    public var windowSize: UInt32
    public var seqNr: UInt16
    public var ackNr: UInt16

    public init(type: UTPPacketType, connectionID: UInt16, timestamp: UInt32 = 0,
                timestampDifference: UInt32 = 0, windowSize: UInt32 = 0, seqNr: UInt16 = 0, ackNr: UInt16 = 0) {
        self.type = type
        self.connectionID = connectionID
        self.timestamp = timestamp
        self.timestampDifference = timestampDifference
        self.windowSize = windowSize
        self.seqNr = seqNr
        self.ackNr = ackNr
    }
}

/// A parsed datagram that borrows nothing: offsets into the caller's buffer for the
/// selective-ack bitmask and payload, so the hot path parses without allocating.
public struct UTPPacketView: Sendable {
    public var header: UTPHeader
    /// Offset and length of the selective-ack bitmask, length 0 when absent.
    public var selectiveAckOffset: Int
    public var selectiveAckLength: Int
    public var payloadOffset: Int
    public var payloadLength: Int
    /// Whether the legacy extension-bits extension (2) was present.
    public var hasLegacyExtension: Bool

    public var hasSelectiveAck: Bool { selectiveAckLength > 0 }

    /// Parses and validates a datagram. Every length is bounds-checked against `bytes`.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(UTPPacketError) -> UTPPacketView {
        let count = bytes.count
        guard count >= UTPHeader.size else { throw .tooShort }
        let b0 = bytes[0]
        guard b0 & 0x0F == UTPHeader.version else { throw .badVersion }
        guard let type = UTPPacketType(rawValue: b0 >> 4) else { throw .badType }
        let header = UTPHeader(
            type: type,
            connectionID: readU16(bytes, 2),
            timestamp: readU32(bytes, 4),
            timestampDifference: readU32(bytes, 8),
            windowSize: readU32(bytes, 12),
            seqNr: readU16(bytes, 16),
            ackNr: readU16(bytes, 18))
        var next = bytes[1]
        var offset = UTPHeader.size
        var sackOffset = 0
        var sackLength = 0
        var legacy = false
        // Each extension is [next][len][len bytes]; the chain is bounded by the datagram
        // size because every step consumes at least two bytes.
        while next != UTPExtension.none {
            guard offset + 2 <= count else { throw .extensionOverrun }
            let kind = next
            next = bytes[offset]
            let length = Int(bytes[offset + 1])
            offset += 2
            guard offset + length <= count else { throw .extensionOverrun }
            switch kind {
            case UTPExtension.selectiveAck:
                // LT sends any length; the first occurrence wins.
                if sackLength == 0 {
                    sackOffset = offset
                    sackLength = length
                }
            case UTPExtension.legacyBits:
                guard length == 8 else { throw .badLegacyExtensionLength }
                legacy = true
            default:
                break
            }
            offset += length
        }
        return UTPPacketView(header: header, selectiveAckOffset: sackOffset, selectiveAckLength: sackLength,
                             payloadOffset: offset, payloadLength: count - offset, hasLegacyExtension: legacy)
    }

    /// Bit `k` of the selective ack: whether `ack_nr + 2 + k` was received.
    @inline(__always)
    func selectiveAckBit(_ k: Int, in bytes: UnsafeRawBufferPointer) -> Bool {
        let byte = bytes[selectiveAckOffset + (k >> 3)]
        return byte & (1 << UInt8(k & 7)) != 0
    }

    @inline(__always)
    static func readU16(_ b: UnsafeRawBufferPointer, _ i: Int) -> UInt16 {
        UInt16(b[i]) << 8 | UInt16(b[i + 1])
    }

    @inline(__always)
    static func readU32(_ b: UnsafeRawBufferPointer, _ i: Int) -> UInt32 {
        UInt32(b[i]) << 24 | UInt32(b[i + 1]) << 16 | UInt32(b[i + 2]) << 8 | UInt32(b[i + 3])
    }
}

/// An owning packet, for tests, the fuzzer and anything off the hot path.
public struct UTPPacket: Equatable, Sendable {
    public var header: UTPHeader
    /// The selective-ack bitmask (bit k, LSB first in each byte, acks ack_nr + 2 + k).
    public var selectiveAck: [UInt8]?
    public var hasLegacyExtension: Bool
    public var payload: [UInt8]

    public init(header: UTPHeader, selectiveAck: [UInt8]? = nil, hasLegacyExtension: Bool = false, payload: [UInt8] = []) {
        self.header = header
        self.selectiveAck = selectiveAck
        self.hasLegacyExtension = hasLegacyExtension
        self.payload = payload
    }

    public init(parsing bytes: [UInt8]) throws(UTPPacketError) {
        let result: Result<UTPPacket, UTPPacketError> = bytes.withUnsafeBytes { raw in
            do throws(UTPPacketError) {
                let view = try UTPPacketView.parse(raw)
                let sack = view.hasSelectiveAck
                    ? Array(raw[view.selectiveAckOffset ..< view.selectiveAckOffset + view.selectiveAckLength]) : nil
                let payload = Array(raw[view.payloadOffset ..< view.payloadOffset + view.payloadLength])
                return .success(UTPPacket(header: view.header, selectiveAck: sack,
                                          hasLegacyExtension: view.hasLegacyExtension, payload: payload))
            } catch {
                return .failure(error)
            }
        }
        self = try result.get()
    }

    /// Encodes with the selective ack first (if any), then the legacy extension: the
    /// first extension is therefore never >= 3.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(UTPHeader.size + payload.count + 16)
        var sackBytes = selectiveAck ?? []
        if sackBytes.count > 255 { sackBytes.removeLast(sackBytes.count - 255) }
        let hasSack = selectiveAck != nil && !sackBytes.isEmpty
        let first: UInt8 = hasSack ? UTPExtension.selectiveAck : (hasLegacyExtension ? UTPExtension.legacyBits : 0)
        UTPWire.appendHeader(header, firstExtension: first, to: &out)
        if hasSack {
            out.append(hasLegacyExtension ? UTPExtension.legacyBits : 0)
            out.append(UInt8(sackBytes.count))
            out.append(contentsOf: sackBytes)
        }
        if hasLegacyExtension {
            out.append(0)
            out.append(8)
            out.append(contentsOf: repeatElement(0, count: 8))
        }
        out.append(contentsOf: payload)
        return out
    }
}

/// Header writer shared by the codec and the connection's packet builder.
enum UTPWire {
    @inline(__always)
    static func appendHeader(_ h: UTPHeader, firstExtension: UInt8, to out: inout [UInt8]) {
        out.append(h.type.rawValue << 4 | UTPHeader.version)
        out.append(firstExtension)
        appendU16(h.connectionID, to: &out)
        appendU32(h.timestamp, to: &out)
        appendU32(h.timestampDifference, to: &out)
        appendU32(h.windowSize, to: &out)
        appendU16(h.seqNr, to: &out)
        appendU16(h.ackNr, to: &out)
    }

    @inline(__always)
    static func appendU16(_ v: UInt16, to out: inout [UInt8]) {
        out.append(UInt8(truncatingIfNeeded: v >> 8))
        out.append(UInt8(truncatingIfNeeded: v))
    }

    @inline(__always)
    static func appendU32(_ v: UInt32, to out: inout [UInt8]) {
        out.append(UInt8(truncatingIfNeeded: v >> 24))
        out.append(UInt8(truncatingIfNeeded: v >> 16))
        out.append(UInt8(truncatingIfNeeded: v >> 8))
        out.append(UInt8(truncatingIfNeeded: v))
    }
}
