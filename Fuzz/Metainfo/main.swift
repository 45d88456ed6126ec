import BitTorrent

/// libFuzzer entry: bencode and metainfo parsing must refuse, never crash.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMetainfo(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let value = try? BencodeDecoder.decode(bytes) {
        // A decoded value must encode to something that decodes to the same value.
        let again = try? BencodeDecoder.decode(value.encoded())
        precondition(again == value, "bencode round trip changed the value")
    }
    if let metainfo = try? Metainfo(bytes: bytes) {
        precondition(metainfo.pieceCount > 0 && metainfo.totalLength > 0)
        for file in metainfo.files where !file.isPadding {
            for component in file.path {
                precondition(component != ".." && component != "." && !component.contains("/"))
            }
        }
        _ = metainfo.magnetLink
    }
    return 0
}
