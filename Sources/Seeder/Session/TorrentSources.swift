import BitTorrent
import Glibc

/// Where the torrents to serve come from: `[[torrent]]` entries, the torrents
/// directory, and files named on the command line.
public struct TorrentSource: Hashable, Sendable {
    /// Which part of the set-up named the torrent: a reload or the watch folder changes
    /// the first two, the command line stays for the life of the process.
    public enum Origin: Hashable, Sendable {
        case config
        case torrentsDirectory
        case commandLine
    }

    public var file: String
    public var dataDirectory: String
    public var origin: Origin
    /// Bytes per second from the torrent's `[[torrent]]` entry; nil: the config's
    /// per-torrent default.
    public var uploadLimit: Int64?
    public var downloadLimit: Int64?

    public init(file: String, dataDirectory: String, origin: Origin, uploadLimit: Int64? = nil, downloadLimit: Int64? = nil) {
        self.file = file
        self.dataDirectory = dataDirectory
        self.origin = origin
        self.uploadLimit = uploadLimit
        self.downloadLimit = downloadLimit
    }

    /// Every source the config and command line name, in that order. Files in the
    /// torrents directory are taken in name order so that start-up is repeatable.
    public static func all(config: SeederConfig, commandLine: [String], commandLineData: String?) -> (sources: [TorrentSource], problems: [String]) {
        var sources: [TorrentSource] = []
        var problems: [String] = []
        for entry in config.torrents {
            sources.append(TorrentSource(file: entry.file, dataDirectory: entry.dataDirectory ?? config.dataDirectory, origin: .config,
                                         uploadLimit: entry.uploadLimit, downloadLimit: entry.downloadLimit))
        }
        switch listTorrentFiles(in: config.torrentsDirectory) {
        case .success(let files):
            for file in files { sources.append(TorrentSource(file: file, dataDirectory: config.dataDirectory, origin: .torrentsDirectory)) }
        case .failure(let message):
            problems.append(message.description)
        }
        for file in commandLine {
            sources.append(TorrentSource(file: file, dataDirectory: commandLineData ?? config.dataDirectory, origin: .commandLine))
        }
        return (sources, problems)
    }

    static func listTorrentFiles(in directory: String) -> Result<[String], ProblemText> {
        guard let handle = opendir(directory) else {
            return .failure(ProblemText("torrents directory \(directory): \(String(cString: strerror(errno)))"))
        }
        defer { closedir(handle) }
        var names: [String] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.baseAddress!.assumingMemoryBound(to: CChar.self)) }
            if isTorrentFileName(name) { names.append(name) }
        }
        return .success(names.sorted().map { directory + "/" + $0 })
    }
}

/// `*.torrent`, not hidden: editors and downloaders write hidden temporary files first.
func isTorrentFileName(_ name: String) -> Bool {
    name.hasSuffix(".torrent") && !name.hasPrefix(".")
}

struct ProblemText: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
