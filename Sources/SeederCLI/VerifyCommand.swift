import ArgumentParser
import BitTorrent
import Seeder

struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Hash-check data against a torrent.",
        discussion: "Exit status: 0 when every piece is good, 1 when any is missing or corrupt, 2 when the torrent cannot be read."
    )

    @Argument(help: "The .torrent file.")
    var torrent: String

    @Argument(help: "The data directory (save path): DATA/<name> for a single file, DATA/<name>/... for a folder.")
    var data: String

    @Option(name: .long, help: "Hashing threads; 0 is one per core.")
    var threads: Int = 0

    func run() throws {
        let metainfo = try loadMetainfo(torrent)
        let pool = DiskPool(threads: threads)
        defer { pool.shutdown() }
        let meter = ProgressMeter(label: "verifying")
        let started = ProgressMeter.now()
        let report = DataVerifier.verify(metainfo: metainfo, dataDirectory: data, pool: pool) { done, total in
            meter.update(done: done, total: total)
        }
        meter.finish()
        let seconds = ProgressMeter.now() - started

        for summary in report.files {
            let state: String
            switch summary.state {
            case .complete: state = "ok"
            case .incomplete: state = "INCOMPLETE"
            case .missing: state = summary.file.length == 0 ? "missing (empty file)" : "MISSING"
            }
            print("\(state.padding(toLength: 12)) \(summary.goodPieces)/\(summary.totalPieces) pieces  \(summary.path)")
        }
        for piece in report.corruptPieces { print("piece \(piece): hash mismatch") }
        for (piece, error) in report.unreadablePieces { print("piece \(piece): unreadable: \(error)") }
        if !report.missingPieces.isEmpty { print("missing pieces: \(ranges(report.missingPieces))") }
        let rate = seconds > 0 ? Int64(Double(metainfo.totalLength) / seconds) : 0
        print("\(report.have.setCount) of \(report.have.count) pieces good (\(ByteUnits.format(metainfo.totalLength)) in \(String(format2: seconds)) s, \(ByteUnits.formatRate(rate)))")
        if report.isComplete {
            print("complete")
        } else {
            print("INCOMPLETE: \(report.corruptPieces.count) corrupt, \(report.missingPieces.count) missing, \(report.unreadablePieces.count) unreadable")
            throw ExitCode(1)
        }
    }

    private func ranges(_ pieces: [Int]) -> String {
        var parts: [String] = []
        var start = pieces[0]
        var previous = pieces[0]
        for piece in pieces.dropFirst() + [Int.min] {
            if piece == previous + 1 { previous = piece; continue }
            parts.append(start == previous ? "\(start)" : "\(start)-\(previous)")
            start = piece
            previous = piece
        }
        return parts.joined(separator: ", ")
    }
}

extension String {
    func padding(toLength length: Int) -> String {
        count >= length ? self : self + String(repeating: " ", count: length - count)
    }

    init(format2 value: Double) {
        let hundredths = Int((value * 100).rounded())
        let fraction = hundredths % 100
        self = "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
    }
}
