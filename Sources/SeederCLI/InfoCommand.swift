import ArgumentParser
import BitTorrent
import Seeder

struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info",
        abstract: "Show a torrent's name, size, files, piece size, info-hash, trackers and magnet link."
    )

    @Argument(help: "The .torrent file.")
    var torrent: String

    func run() throws {
        let metainfo = try loadMetainfo(torrent)
        print("name:       \(metainfo.name)")
        print("info-hash:  \(metainfo.infoHash)")
        print("size:       \(ByteUnits.format(metainfo.totalLength)) (\(metainfo.totalLength) bytes)")
        print("pieces:     \(metainfo.pieceCount) of \(ByteUnits.format(Int64(metainfo.pieceLength)))")
        print("private:    \(metainfo.isPrivate ? "yes" : "no")")
        if let comment = metainfo.comment { print("comment:    \(comment)") }
        if let createdBy = metainfo.createdBy { print("created by: \(createdBy)") }
        if metainfo.trackerTiers.isEmpty {
            print("trackers:   none")
        } else {
            print("trackers:")
            for (index, tier) in metainfo.trackerTiers.enumerated() {
                for url in tier { print("  tier \(index): \(url)") }
            }
        }
        for seed in metainfo.webSeeds { print("web seed:   \(seed)") }
        let files = metainfo.files.filter { !$0.isPadding }
        print("files:      \(files.count)")
        for file in files {
            let path = metainfo.isMultiFile ? ([metainfo.name] + file.path).joined(separator: "/") : file.pathString
            print("  \(pad(ByteUnits.format(file.length), 11)) \(path)")
        }
        print("magnet:     \(metainfo.magnetLink)")
    }

    private func pad(_ text: String, _ width: Int) -> String {
        String(repeating: " ", count: max(0, width - text.count)) + text
    }
}

/// Reads and parses a torrent file, turning failures into one line and exit status 2.
func loadMetainfo(_ path: String) throws -> Metainfo {
    let bytes: [UInt8]
    switch TorrentFileReader.read(path) {
    case .success(let data): bytes = data
    case .failure(let problem):
        printError("seeder: \(problem)")
        throw ExitCode(2)
    }
    do {
        return try Metainfo(bytes: bytes)
    } catch {
        printError("seeder: \(path): \(error)")
        throw ExitCode(2)
    }
}
