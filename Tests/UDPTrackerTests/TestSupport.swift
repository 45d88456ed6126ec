import BitTorrent
import Trackers
@testable import UDPTracker
import SeededRandom


/// Seconds to the client's microseconds.
func seconds(_ value: UInt64) -> UInt64 { value * 1_000_000 }

let tracker = PeerAddress(ip: PeerAddress.IP("127.0.0.1")!, port: 6969)
let tracker6 = PeerAddress(ip: PeerAddress.IP("2001:db8::1")!, port: 6969)

func infoHash(_ seed: UInt8) -> InfoHash {
    InfoHash(bytes: (0..<20).map { seed &+ UInt8($0) })!
}

func announceRequest(_ seed: UInt8 = 1, event: AnnounceEvent = .started) -> AnnounceRequest {
    AnnounceRequest(
        infoHash: infoHash(seed), peerID: Array("-SD0001-abcdefghijkl".utf8), port: 51413,
        uploaded: 1000, downloaded: 2000, left: 0, event: event, numWant: 50, key: 0xDEAD_BEEF
    )
}

/// Reads the fields a tracker reads from our requests.
struct SentPacket {
    let bytes: [UInt8]
    var count: Int { bytes.count }
    func u32(_ offset: Int) -> UInt32 { bytes[offset..<(offset + 4)].reduce(0) { $0 << 8 | UInt32($1) } }
    func u64(_ offset: Int) -> UInt64 { bytes[offset..<(offset + 8)].reduce(0) { $0 << 8 | UInt64($1) } }
    var isConnect: Bool { count == 16 && u64(0) == UDPTrackerMessage.protocolMagic && u32(8) == 0 }
    var action: UInt32 { u32(8) }
    var transactionID: UInt32 { u32(12) }
    var connectionID: UInt64 { u64(0) }
}

func be32(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (24 - 8 * $0)) } }
func be64(_ value: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * $0)) } }

func connectReply(_ transactionID: UInt32, connectionID: UInt64) -> [UInt8] {
    be32(0) + be32(transactionID) + be64(connectionID)
}

func announceReply(_ transactionID: UInt32, interval: UInt32 = 1800, leechers: UInt32 = 3, seeders: UInt32 = 7, peers: [PeerAddress] = []) -> [UInt8] {
    be32(1) + be32(transactionID) + be32(interval) + be32(leechers) + be32(seeders) + peers.flatMap(\.compact)
}

func scrapeReply(_ transactionID: UInt32, counts: [(UInt32, UInt32, UInt32)]) -> [UInt8] {
    be32(2) + be32(transactionID) + counts.flatMap { be32($0.0) + be32($0.1) + be32($0.2) }
}

func errorReply(_ transactionID: UInt32, _ message: [UInt8]) -> [UInt8] {
    be32(3) + be32(transactionID) + message
}

extension [UDPTrackerClient.Action] {
    var sent: [SentPacket] {
        compactMap { if case .send(let bytes) = $0 { SentPacket(bytes: bytes) } else { nil } }
    }

    /// The deadline of the final `.setTimer`, which every state-changing call ends with.
    var timer: UInt64?? {
        guard case .setTimer(let at)? = last else { return .none }
        return .some(at)
    }

    var outcomes: [UDPTrackerClient.Action] {
        filter {
            switch $0 {
            case .send, .setTimer: false
            default: true
            }
        }
    }
}

func peer(_ text: String, _ port: UInt16) -> PeerAddress {
    PeerAddress(ip: PeerAddress.IP(text)!, port: port)
}
