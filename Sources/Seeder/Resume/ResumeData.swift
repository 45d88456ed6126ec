import BitTorrent
import CZstd

/// What a restart needs to skip hashing a torrent: the pieces verified, and each file's
/// size and modification time when they were. A file whose size and mtime still match
/// is trusted; the pieces of any other file are hashed again.
///
/// On disk: a bencoded dictionary compressed with zstd (a bitfield of a large torrent is
/// mostly 0xFF or 0x00 and compresses to almost nothing).
struct ResumeData: Equatable, Sendable {
    /// A file as it was when its pieces were verified; `size` -1 for a file that did
    /// not exist.
    struct FileStamp: Equatable, Sendable {
        var size: Int64
        var modified: Int64

        static let missing = FileStamp(size: -1, modified: 0)
        /// `modified` of a file saved while a download was writing to it: its mtime
        /// moves with every block, so a restart trusts the pieces recorded as verified
        /// if the file is still at least `size` bytes, and downloads the rest.
        static let writingMark: Int64 = -2

        var isBeingWritten: Bool { modified == Self.writingMark }
    }

    static let formatVersion: Int64 = 1

    var infoHash: InfoHash
    var have: Bitfield
    var files: [FileStamp]

    func encoded() -> [UInt8] {
        let value = Bencode.dictionary(BencodeDictionary([
            ("version", .integer(Self.formatVersion)),
            ("info_hash", .bytes(infoHash.bytes)),
            ("pieces", .integer(Int64(have.count))),
            ("have", .bytes(have.bytes)),
            ("files", .list(files.map { .list([.integer($0.size), .integer($0.modified)]) })),
        ]))
        return Zstd.compress(value.encoded())
    }

    /// Reads resume data written for the torrent with `infoHash`, `pieceCount` pieces
    /// and `fileCount` files; anything else (another torrent, another format, damage)
    /// is refused, and the caller hashes everything.
    static func decode(_ bytes: [UInt8], infoHash: InfoHash, pieceCount: Int, fileCount: Int) throws(ResumeError) -> ResumeData {
        guard let plain = Zstd.decompress(bytes, limit: 64 << 20) else { throw ResumeError("not zstd data, or damaged") }
        let value: Bencode
        do throws(BencodeError) {
            value = try BencodeDecoder.decode(plain)
        } catch {
            throw ResumeError("not bencode: \(error)")
        }
        guard let dictionary = value.dictionaryValue else { throw ResumeError("not a dictionary") }
        guard dictionary["version"]?.integerValue == formatVersion else { throw ResumeError("unknown format version") }
        guard dictionary["info_hash"]?.bytesValue == infoHash.bytes else { throw ResumeError("written for another torrent") }
        guard dictionary["pieces"]?.integerValue == Int64(pieceCount),
              let haveBytes = dictionary["have"]?.bytesValue,
              let have = Bitfield(count: pieceCount, bytes: haveBytes) else {
            throw ResumeError("the piece bitfield does not fit the torrent")
        }
        guard let list = dictionary["files"]?.listValue, list.count == fileCount else {
            throw ResumeError("the file list does not fit the torrent")
        }
        var files: [FileStamp] = []
        files.reserveCapacity(fileCount)
        for entry in list {
            guard let pair = entry.listValue, pair.count == 2,
                  let size = pair[0].integerValue, let modified = pair[1].integerValue, size >= -1 else {
                throw ResumeError("a file entry is malformed")
            }
            files.append(FileStamp(size: size, modified: modified))
        }
        return ResumeData(infoHash: infoHash, have: have, files: files)
    }
}

struct ResumeError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// One-shot zstd frames.
enum Zstd {
    /// With the frame's content checksum: zstd alone decodes a flipped bit in its
    /// literals to other bytes, and resume data that decodes is trusted.
    static func compress(_ input: [UInt8], level: Int32 = 3) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: ZSTD_compressBound(input.count))
        let context = ZSTD_createCCtx()
        precondition(context != nil, "zstd could not allocate a context")
        defer { ZSTD_freeCCtx(context) }
        ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level)
        ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 1)
        let written = input.withUnsafeBytes { source in
            output.withUnsafeMutableBytes { ZSTD_compress2(context, $0.baseAddress, $0.count, source.baseAddress, source.count) }
        }
        precondition(ZSTD_isError(written) == 0, "zstd could not compress into its own bound")
        output.removeSubrange(written...)
        return output
    }

    /// Nil for anything that is not one whole frame of at most `limit` bytes with a
    /// content checksum (which ZSTD_decompress verifies).
    static func decompress(_ input: [UInt8], limit: Int) -> [UInt8]? {
        // The frame header descriptor follows the 4-byte magic; bit 2 is Content_Checksum_flag.
        guard input.count > 4, input[4] & 0x04 != 0 else { return nil }
        let size = input.withUnsafeBytes { ZSTD_getFrameContentSize($0.baseAddress, $0.count) }
        // ZSTD_CONTENTSIZE_UNKNOWN and _ERROR are the two largest values.
        guard size <= UInt64(limit) else { return nil }
        var output = [UInt8](repeating: 0, count: Int(size))
        let written = input.withUnsafeBytes { source in
            output.withUnsafeMutableBytes { ZSTD_decompress($0.baseAddress, $0.count, source.baseAddress, source.count) }
        }
        guard ZSTD_isError(written) == 0, written == Int(size) else { return nil }
        return output
    }
}
