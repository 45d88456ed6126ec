import ArgumentParser
import EventLoop
import Foundation
import Seeder

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show what a running server is doing: torrents, rates, peers and trackers.",
        discussion: """
            Reads the server's status endpoint: --url, or the [status] listen address of
            --config, or the default http://127.0.0.1:9180/status.
            """
    )

    @Option(name: .long, help: "The status URL, e.g. http://127.0.0.1:9180/status.")
    var url: String?

    @Option(name: .long, help: "Take the status address from this config file.")
    var config: String?

    @Flag(name: .long, help: "Print the JSON as the server sent it.")
    var json = false

    func run() throws {
        let target = try statusURL()
        let body: [UInt8]
        switch Self.fetch(target) {
        case .success(let bytes): body = bytes
        case .failure(let message):
            printError("seeder status: \(target): \(message)")
            throw ExitCode(1)
        }
        if json {
            print(String(decoding: body, as: UTF8.self))
            return
        }
        let status: StatusSnapshot
        do {
            status = try JSONDecoder().decode(StatusSnapshot.self, from: Data(body))
        } catch {
            printError("seeder status: \(target) did not answer with a seeder status: \(error)")
            throw ExitCode(1)
        }
        print(StatusTable.render(status), terminator: "")
    }

    private func statusURL() throws -> String {
        if let url { return url }
        guard let config else { return "http://127.0.0.1:9180/status" }
        do {
            guard let address = try ConfigLoader.load(path: config).statusAddress else {
                printError("seeder status: \(config) turns the status endpoint off ([status] listen = \"\")")
                throw ExitCode(2)
            }
            return "http://\(address)/status"
        } catch let error as ConfigError {
            printError("seeder: \(error)")
            throw ExitCode(2)
        }
    }

    /// One GET on a loop of its own, with a short timeout: the server is local.
    struct FetchError: Error, CustomStringConvertible {
        let description: String
    }

    static func fetch(_ url: String) -> Result<[UInt8], FetchError> {
        let loop = EventLoop()
        let client = HTTPClient(loop: loop)
        var outcome: Result<[UInt8], FetchError> = .failure(FetchError(description: "no answer"))
        client.get(url, timeoutSeconds: 5) { result in
            switch result {
            case .success(let response) where response.status == 200: outcome = .success(response.body)
            case .success(let response): outcome = .failure(FetchError(description: "HTTP \(response.status)"))
            case .failure(let error):
                outcome = .failure(FetchError(description: error.description + " (is the server running with its status endpoint on?)"))
            }
            loop.stop()
        }
        loop.run()
        return outcome
    }
}

/// The terminal view of a status snapshot.
enum StatusTable {
    static func render(_ status: StatusSnapshot) -> String {
        var out = ""
        let limits = "limits up \(limit(status.uploadLimit)), down \(limit(status.downloadLimit))"
        out += "seeder \(status.version), up \(duration(status.uptime)), port \(status.listenPort), "
        out += "\(status.torrents.count) torrents, \(status.peers.total) peers (\(status.peers.tcp) TCP, \(status.peers.utp) uTP)\n"
        out += "upload \(rate(status.transfer.uploadRate)) (\(ByteUnits.format(status.transfer.uploaded)) in all), "
        out += "download \(rate(status.transfer.downloadRate)) (\(ByteUnits.format(status.transfer.downloaded)) in all); \(limits)\n\n"
        var rows = [["NAME", "STATE", "DONE", "SIZE", "UP", "UPLOADED", "PEERS", "TRACKER"]]
        for torrent in status.torrents {
            rows.append([
                torrent.name.count > 40 ? String(torrent.name.prefix(39)) + "…" : torrent.name,
                torrent.state,
                String(format: "%.1f%%", torrent.progress * 100),
                ByteUnits.format(torrent.size),
                rate(torrent.transfer.uploadRate),
                ByteUnits.format(torrent.transfer.uploaded),
                "\(torrent.peers.total)",
                tracker(torrent.trackers),
            ])
        }
        let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        for row in rows {
            out += row.enumerated().map { column, text in
                column == row.count - 1 ? text : text + String(repeating: " ", count: widths[column] - text.count)
            }.joined(separator: "  ") + "\n"
        }
        for torrent in status.torrents {
            if let error = torrent.error { out += "\n\(torrent.name): error: \(error)" }
            for tracker in torrent.trackers where tracker.status == "failing" {
                out += "\n\(torrent.name): \(tracker.url): \(tracker.lastError ?? "failing")"
            }
        }
        return out.hasSuffix("\n") ? out : out + "\n"
    }

    private static func tracker(_ trackers: [StatusSnapshot.Tracker]) -> String {
        guard !trackers.isEmpty else { return "none" }
        if let working = trackers.first(where: { $0.status == "working" }) {
            let swarm = [working.seeders.map { "\($0) seeds" }, working.leechers.map { "\($0) leechers" }].compactMap { $0 }
            return swarm.isEmpty ? "ok" : "ok (" + swarm.joined(separator: ", ") + ")"
        }
        if trackers.contains(where: { $0.status == "announcing" }) { return "announcing" }
        if trackers.contains(where: { $0.status == "failing" }) { return "failing" }
        return "not contacted"
    }

    private static func rate(_ bytesPerSecond: Int64) -> String {
        ByteUnits.format(bytesPerSecond) + "/s"
    }

    private static func limit(_ bytesPerSecond: Int64) -> String {
        bytesPerSecond == 0 ? "none" : rate(bytesPerSecond)
    }

    private static func duration(_ seconds: Int) -> String {
        if seconds < 60 { return "\(seconds)s" }
        if seconds < 3600 { return "\(seconds / 60)m \(seconds % 60)s" }
        if seconds < 86_400 { return "\(seconds / 3600)h \(seconds % 3600 / 60)m" }
        return "\(seconds / 86_400)d \(seconds % 86_400 / 3600)h"
    }
}
