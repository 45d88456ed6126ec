import BitTorrent
import Glibc

/// Where the torrents to serve come from: `[[torrent]]` entries, the torrents
/// directory, and files named on the command line.
public struct TorrentSource: Equatable, Sendable {
    public var file: String
    public var dataDirectory: String

    public init(file: String, dataDirectory: String) {
        self.file = file
        self.dataDirectory = dataDirectory
    }

    /// Every source the config and command line name, in that order. Files in the
    /// torrents directory are taken in name order so that start-up is repeatable.
    public static func all(config: SeederConfig, commandLine: [String], commandLineData: String?) -> (sources: [TorrentSource], problems: [String]) {
        var sources: [TorrentSource] = []
        var problems: [String] = []
        for entry in config.torrents {
            sources.append(TorrentSource(file: entry.file, dataDirectory: entry.dataDirectory ?? config.dataDirectory))
        }
        switch listTorrentFiles(in: config.torrentsDirectory) {
        case .success(let files):
            for file in files { sources.append(TorrentSource(file: file, dataDirectory: config.dataDirectory)) }
        case .failure(let message):
            problems.append(message.description)
        }
        for file in commandLine {
            sources.append(TorrentSource(file: file, dataDirectory: commandLineData ?? config.dataDirectory))
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
            if name.hasSuffix(".torrent") && !name.hasPrefix(".") { names.append(name) }
        }
        return .success(names.sorted().map { directory + "/" + $0 })
    }
}

struct ProblemText: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
