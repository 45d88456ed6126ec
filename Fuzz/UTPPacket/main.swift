import UTP

/// libFuzzer entry: the uTP packet parser must refuse, never crash, and whatever it
/// accepts must survive encode -> parse unchanged.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzUTPPacket(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let raw = UnsafeRawBufferPointer(start: data, count: size)
    guard let view = try? UTPPacketView.parse(raw) else { return 0 }
    precondition(view.payloadOffset >= UTPHeader.size && view.payloadOffset + view.payloadLength == size)
    precondition(view.selectiveAckLength == 0 || view.selectiveAckOffset + view.selectiveAckLength <= size)
    let bytes = Array(raw)
    guard let packet = try? UTPPacket(parsing: bytes) else {
        preconditionFailure("the view parsed but the owning parser refused")
    }
    precondition(packet.header == view.header && packet.payload.count == view.payloadLength)
    // Unknown extensions are dropped on encode; header, selective ack and payload survive.
    var normalized = packet
    if normalized.selectiveAck?.isEmpty == true { normalized.selectiveAck = nil }
    let again = try? UTPPacket(parsing: normalized.encoded())
    precondition(again == normalized, "encode/parse round trip changed the packet")
    precondition(normalized.encoded()[1] < 3, "first extension must never be >= 3")
    return 0
}
