/// BEP 9 magnet links.
extension Metainfo {
    public var magnetLink: String {
        var link = "magnet:?xt=urn:btih:\(infoHash.hex)&dn=\(PercentEncoding.encode(Array(name.utf8)))"
        for tracker in trackerTiers.joined() {
            link += "&tr=\(PercentEncoding.encode(Array(tracker.utf8)))"
        }
        for seed in webSeeds {
            link += "&ws=\(PercentEncoding.encode(Array(seed.utf8)))"
        }
        return link
    }
}

/// URL percent-encoding that leaves only RFC 3986 unreserved bytes bare, as trackers
/// expect for info_hash and peer_id (BEP 3).
public enum PercentEncoding {
    private static let hexDigits = Array("0123456789ABCDEF".utf8)

    public static func isUnreserved(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"),
             UInt8(ascii: "."), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    public static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 3)
        for byte in bytes {
            if isUnreserved(byte) {
                out.append(byte)
            } else {
                out.append(UInt8(ascii: "%"))
                out.append(hexDigits[Int(byte >> 4)])
                out.append(hexDigits[Int(byte & 0x0F)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
