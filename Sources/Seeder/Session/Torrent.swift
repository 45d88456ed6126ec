import BitTorrent

/// A torrent the session serves. Loop-owned.
public final class Torrent {
    public enum State: Equatable {
        /// Waiting for its turn to be hash-checked.
        case queued
        case checking
        /// Checked: serving what it has.
        case seeding
        case error(String)
        /// Removed from the session; kept only by whoever still holds it.
        case stopped
    }

    public let metainfo: Metainfo
    public let sourceFile: String
    public let dataDirectory: String
    public let storage: TorrentStorage
    public internal(set) var have: Bitfield
    public internal(set) var state: State = .queued
    /// Bytes per second from the torrent's own `[[torrent]]` entry; nil: the config's
    /// per-torrent default applies.
    public internal(set) var uploadLimit: Int64?
    public internal(set) var downloadLimit: Int64?

    init(metainfo: Metainfo, sourceFile: String, dataDirectory: String, cache: FileHandleCache) {
        self.metainfo = metainfo
        self.sourceFile = sourceFile
        self.dataDirectory = dataDirectory
        storage = TorrentStorage(metainfo: metainfo, dataDirectory: dataDirectory, cache: cache)
        have = Bitfield(count: metainfo.pieceCount)
    }

    public var name: String { metainfo.name }
    public var infoHash: InfoHash { metainfo.infoHash }

    /// Bytes of data held, counting the short last piece correctly.
    public var bytesHave: Int64 {
        var total = Int64(have.setCount) * Int64(metainfo.pieceLength)
        if have.count > 0 && have[have.count - 1] {
            total -= Int64(metainfo.pieceLength - metainfo.length(ofPiece: have.count - 1))
        }
        return total
    }
}
