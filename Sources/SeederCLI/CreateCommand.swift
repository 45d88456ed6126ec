import ArgumentParser
import BitTorrent
import Glibc
import Seeder

struct CreateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Make a v1 torrent from a file or a folder, hashing on every core."
    )

    @Argument(help: "The file or folder to make a torrent of.")
    var path: String

    @Option(name: [.customShort("a"), .long], help: "Tracker URL; each -a is its own tier, commas put URLs in one tier.")
    var announce: [String] = []

    @Option(name: .customLong("piece-size"), help: "Piece size: bytes or a unit (262144, 256KiB, 4MiB). Default: automatic.")
    var pieceSize: Size?

    @Flag(name: .long, help: "Mark the torrent private (BEP 27): no DHT or peer exchange.")
    var `private` = false

    @Option(name: .customLong("web-seed"), help: "Web seed URL (BEP 19); repeatable.")
    var webSeed: [String] = []

    @Option(name: .long, help: "A comment stored in the torrent.")
    var comment: String?

    @Option(name: .customShort("o"), help: "Where to write the .torrent file (default: NAME.torrent).")
    var output: String?

    @Flag(name: .long, help: "Overwrite the output file if it exists.")
    var force = false

    @Option(name: .long, help: "Hashing threads; 0 is one per core.")
    var threads: Int = 0

    func validate() throws {
        if let pieceSize {
            guard pieceSize.bytes >= 16 << 10, pieceSize.bytes <= Int64(Metainfo.maxPieceLength), pieceSize.bytes & (pieceSize.bytes - 1) == 0 else {
                throw ValidationError("--piece-size must be a power of two from 16KiB to 256MiB")
            }
        }
        for url in announce.flatMap({ $0.split(separator: ",") }) where !url.contains("://") {
            throw ValidationError("-a \(url): expected a tracker URL such as http://tracker.example/announce")
        }
    }

    func run() throws {
        var options = TorrentCreator.Options(path: path)
        options.trackerTiers = announce.map { $0.split(separator: ",").map(String.init) }.filter { !$0.isEmpty }
        options.webSeeds = webSeed
        options.pieceLength = pieceSize.map { Int($0.bytes) }
        options.isPrivate = `private`
        options.comment = comment
        options.creationDate = Int64(time(nil))

        let name = String(path.split(separator: "/").last ?? Substring(path))
        let destination = output ?? name + ".torrent"
        if !force && access(destination, F_OK) == 0 {
            printError("seeder create: \(destination) exists; use --force to overwrite it")
            throw ExitCode(1)
        }
        let pool = DiskPool(threads: threads)
        defer { pool.shutdown() }
        let meter = ProgressMeter(label: "hashing")
        let bytes: [UInt8]
        do {
            bytes = try TorrentCreator.create(options, pool: pool) { done, total in meter.update(done: done, total: total) }
        } catch {
            meter.finish()
            printError("seeder create: \(error)")
            throw ExitCode(1)
        }
        meter.finish()
        if let problem = FileWriter.writeAtomically(bytes, to: destination) {
            printError("seeder create: \(destination): \(problem)")
            throw ExitCode(1)
        }
        let metainfo = try Metainfo(bytes: bytes)
        print("\(destination): \(metainfo.name), \(ByteUnits.format(metainfo.totalLength)) in \(metainfo.files.count) file(s), \(metainfo.pieceCount) pieces of \(ByteUnits.format(Int64(metainfo.pieceLength)))")
        print("info-hash \(metainfo.infoHash)")
    }
}
