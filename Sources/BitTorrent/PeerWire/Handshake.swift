/// The BitTorrent handshake (BEP 3): `0x13 "BitTorrent protocol" reserved[8]
/// info_hash[20] peer_id[20]`.
public struct Handshake: Equatable, Sendable {
    public static let protocolName = Array("BitTorrent protocol".utf8)
    public static let length = 68
    /// Bytes up to and including the info-hash: enough to pick the torrent.
    public static let prefixLength = 48

    public var reserved: [UInt8]
    public var infoHash: InfoHash
    public var peerID: [UInt8]

    public init(reserved: [UInt8], infoHash: InfoHash, peerID: [UInt8]) {
        precondition(reserved.count == 8 && peerID.count == 20)
        self.reserved = reserved
        self.infoHash = infoHash
        self.peerID = peerID
    }

    /// Reserved bits (BEP 10 extension protocol, BEP 6 fast extension).
    public var supportsExtensions: Bool { reserved[5] & 0x10 != 0 }
    public var supportsFast: Bool { reserved[7] & 0x04 != 0 }

    /// What we set: extension protocol and fast extension. Not DHT: we do not handle PORT.
    public static let ourReserved: [UInt8] = [0, 0, 0, 0, 0, 0x10, 0, 0x04]

    public func encoded() -> [UInt8] {
        var out: [UInt8] = [19]
        out.reserveCapacity(Self.length)
        out.append(contentsOf: Self.protocolName)
        out.append(contentsOf: reserved)
        out.append(contentsOf: infoHash.bytes)
        out.append(contentsOf: peerID)
        return out
    }

    /// Checks what has arrived of a handshake so far against its fixed start (19, then
    /// "BitTorrent protocol"), so a peer sending anything else is refused at its first
    /// bytes rather than held until the handshake timeout.
    public static func checkStart(_ bytes: some Collection<UInt8>) throws(PeerProtocolError) {
        guard bytes.elementsEqual(([19] + protocolName).prefix(bytes.count)) else {
            throw .badHandshake("not the BitTorrent protocol")
        }
    }

    /// Parses the first 48 bytes: protocol, reserved bits and info-hash.
    public static func parsePrefix(_ bytes: [UInt8]) throws(PeerProtocolError) -> (reserved: [UInt8], infoHash: InfoHash) {
        guard bytes.count >= prefixLength else { throw .badHandshake("too short") }
        try checkStart(bytes[0..<20])
        return (Array(bytes[20..<28]), InfoHash(bytes: Array(bytes[28..<48]))!)
    }
}
