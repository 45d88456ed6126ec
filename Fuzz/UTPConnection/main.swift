import UTP
import SeededRandom

typealias FuzzRNG = SplitMix64

/// Encodes a header the way the wire has it.
func packet(_ type: UInt8, id: UInt16, seq: UInt16, ack: UInt16, window: UInt32 = 1 << 20, payload: [UInt8] = []) -> [UInt8] {
    var out: [UInt8] = [type << 4 | 1, 0, UInt8(id >> 8), UInt8(id & 0xFF), 0, 0, 0, 1, 0, 0, 0, 0]
    out += [UInt8(window >> 24), UInt8((window >> 16) & 0xFF), UInt8((window >> 8) & 0xFF), UInt8(window & 0xFF)]
    out += [UInt8(seq >> 8), UInt8(seq & 0xFF), UInt8(ack >> 8), UInt8(ack & 0xFF)]
    return out + payload
}

/// libFuzzer entry: the input is a script of datagrams fed to a multiplexer holding one
/// established connection (with data in flight both ways) and a few half-open SYNs,
/// while a simulated clock advances. Nothing may trap; state stays bounded.
///
/// Script: repeated records `[op][len][len bytes]`. op & 3: 0 = datagram from the
/// peer, 1 = from another endpoint, 2 = advance the clock by len * 7919 us and tick,
/// 3 = datagram whose first 4 bytes are replaced by a valid header start for the live
/// connection (so the fuzzer reaches deep into the state machine). op & 4 ends the batch.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzUTPConnection(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    var config = UTPConfiguration()
    config.maxHalfOpen = 8
    config.receiveBufferSize = 64 * 1024
    config.sendBufferSize = 64 * 1024
    var mux = UTPMultiplexer<Int>(configuration: config)
    var rng = FuzzRNG(seed: 1)
    var now: UInt64 = 1_000_000
    let peer = 1
    var batch = UTPDatagramBatch<Int>()

    // Handshake: SYN(id 100, seq 5000), then the peer's first DATA.
    mux.receive(packet(4, id: 100, seq: 5000, ack: 0, window: 0), from: peer, now: now, rng: &rng)
    mux.takeDatagrams(into: &batch)
    guard batch.count == 1 else { preconditionFailure("no SYN-ACK") }
    let synAck = batch[0].bytes
    let isn = UInt16(synAck[16]) << 8 | UInt16(synAck[17])
    mux.receive(packet(0, id: 101, seq: 5001, ack: isn &- 1, payload: Array(repeating: 0x13, count: 68)), from: peer, now: now, rng: &rng)
    mux.endOfBatch(now: now)
    let events = mux.takeEvents()
    guard case .accepted(let id, _)? = events.first else { preconditionFailure("not accepted") }
    _ = mux.write(id, [UInt8](repeating: 0x55, count: 20_000), now: now)
    // Some half-open SYNs from elsewhere.
    for i in 0 ..< 4 {
        mux.receive(packet(4, id: UInt16(200 + 2 * i), seq: UInt16(i), ack: 0), from: 2 + i, now: now, rng: &rng)
    }
    // And an outgoing connection that never completes.
    _ = mux.connect(to: 9, now: now, rng: &rng)
    mux.takeDatagrams(into: &batch)

    var offset = 0
    var sink: [UInt8] = []
    while offset + 2 <= size {
        let op = data[offset]
        let length = Int(data[offset + 1])
        offset += 2
        let n = min(length, size - offset)
        var bytes = Array(UnsafeBufferPointer(start: data + offset, count: n))
        offset += n
        switch op & 3 {
        case 0:
            mux.receive(bytes, from: peer, now: now, rng: &rng)
        case 1:
            mux.receive(bytes, from: 2 + Int(op >> 4), now: now, rng: &rng)
        case 2:
            now &+= UInt64(length) &* 7919
            mux.tick(now: now)
        default:
            if bytes.count < 4 { bytes += [UInt8](repeating: 0, count: 4 - bytes.count) }
            bytes[0] = (bytes[0] % 5) << 4 | 1
            bytes[1] = bytes[1] % 3
            bytes[2] = 0
            bytes[3] = op & 0x80 != 0 ? 100 : 101
            mux.receive(bytes, from: peer, now: now, rng: &rng)
        }
        if op & 4 != 0 {
            mux.endOfBatch(now: now)
            sink.removeAll(keepingCapacity: true)
            _ = mux.read(id, maxBytes: Int(op) * 97, into: &sink, now: now)
            if op & 8 != 0 { _ = mux.write(id, [UInt8](repeating: op, count: Int(op) * 50), now: now) }
            if op == 0xFF { mux.close(id, now: now) }
        }
        mux.takeDatagrams(into: &batch)
        for i in 0 ..< batch.count {
            precondition(batch.range(at: i).count <= 1402, "datagram larger than the packet size")
            precondition(batch.bytes[batch.range(at: i).lowerBound + 1] < 3, "first extension >= 3")
        }
        _ = mux.takeEvents()
        precondition(mux.halfOpenCount <= 8)
        precondition(mux.connectionCount <= 2 + 8)
        if let stats = mux.stats(of: id) {
            precondition(stats.bytesInFlight >= 0 && stats.bytesInFlight <= 64 * 1024 + 1402)
            precondition(stats.packetsInFlight <= config.maxPacketsInFlight)
        }
    }
    mux.endOfBatch(now: now)
    mux.tick(now: now &+ 600_000_000)
    return 0
}
