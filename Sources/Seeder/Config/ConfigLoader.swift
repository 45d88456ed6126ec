import Foundation
import Logging
import TOMLKit

/// Reads a TOML config strictly: every key must be known, of the right type and in
/// range. TOMLKit's decoder reports a wrong type as a missing key, so the table is
/// walked by hand to say exactly what was wrong.
public enum ConfigLoader {
    public static func load(path: String, defaults: SeederConfig = SeederConfig()) throws(ConfigError) -> SeederConfig {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError(file: path, key: "", "cannot read the file (\(error.localizedDescription))")
        }
        return try parse(text, file: path, defaults: defaults)
    }

    public static func parse(_ text: String, file: String, defaults: SeederConfig = SeederConfig()) throws(ConfigError) -> SeederConfig {
        let root: TOMLTable
        do {
            root = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ConfigError(file: "\(file):\(error.source.begin.line):\(error.source.begin.column)", key: "", "not valid TOML: \(error.description)")
        } catch {
            throw ConfigError(file: file, key: "", "not valid TOML: \(error)")
        }
        var config = defaults
        var top = TableReader(root, path: "", file: file)

        if var network = try top.table("network") {
            if let port = try network.integer("listen_port", in: 1...65535) { config.listenPort = port }
            if let address = try network.string("bind_ipv4") {
                guard address.isEmpty || IPAddress.isIPv4(address) else {
                    throw network.error("bind_ipv4", "expected an IPv4 address such as \"0.0.0.0\" or \"\" to disable IPv4, found \"\(address)\"")
                }
                config.bindIPv4 = address
            }
            if let address = try network.string("bind_ipv6") {
                guard address.isEmpty || IPAddress.isIPv6(address) else {
                    throw network.error("bind_ipv6", "expected an IPv6 address such as \"::\" or \"\" to disable IPv6, found \"\(address)\"")
                }
                config.bindIPv6 = address
            }
            if let value = try network.bool("utp") { config.utpEnabled = value }
            if let text = try network.string("outgoing") {
                guard let value = SeederConfig.OutgoingTransport(rawValue: text) else {
                    let choices = SeederConfig.OutgoingTransport.allCases.map(\.rawValue).joined(separator: ", ")
                    throw network.error("outgoing", "expected one of \(choices), found \"\(text)\"")
                }
                config.outgoing = value
            }
            try network.rejectUnknownKeys()
        }

        if var storage = try top.table("storage") {
            if let value = try storage.path("data_dir") { config.dataDirectory = value }
            if let value = try storage.path("torrents_dir") { config.torrentsDirectory = value }
            if let value = try storage.path("state_dir") { config.stateDirectory = value }
            if let value = try storage.integer("disk_threads", in: 0...64) { config.diskThreads = value }
            if let value = try storage.integer("max_open_files", in: 8...1_000_000) { config.maxOpenFiles = value }
            if let value = try storage.integer("resume_interval", in: 1...86_400) { config.resumeInterval = value }
            if let value = try storage.bool("preallocate") { config.preallocate = value }
            try storage.rejectUnknownKeys()
        }

        if var limits = try top.table("limits") {
            if let value = try limits.rate("upload_limit") { config.uploadLimit = value }
            if let value = try limits.rate("download_limit") { config.downloadLimit = value }
            if let value = try limits.rate("torrent_upload_limit") { config.torrentUploadLimit = value }
            if let value = try limits.rate("torrent_download_limit") { config.torrentDownloadLimit = value }
            if let value = try limits.size("burst") {
                // Every grant is at most a burst, and a grant waits for the next loop turn:
                // a burst of a few bytes throttles to a few bytes a turn, far below any rate.
                guard value == 0 || value >= 16 * 1024 else {
                    throw limits.error("burst", "\(value) bytes is less than one 16KiB block: expected 0 (automatic) or at least \"16KiB\"")
                }
                config.burst = value
            }
            if let value = try limits.bool("count_overhead") { config.countOverhead = value }
            if let value = try limits.integer("max_connections", in: 1...1_000_000) { config.maxConnections = value }
            if let value = try limits.integer("max_connections_per_torrent", in: 1...1_000_000) { config.maxConnectionsPerTorrent = value }
            if let value = try limits.integer("max_connections_per_ip", in: 1...1000) { config.maxConnectionsPerIP = value }
            if let value = try limits.integer("max_half_open", in: 1...10_000) { config.maxHalfOpen = value }
            if let value = try limits.integer("upload_slots", in: 0...10_000) { config.uploadSlots = value }
            if let value = try limits.integer("invalid_threshold", in: 1...1000) { config.invalidThreshold = value }
            try limits.rejectUnknownKeys()
        }

        if var trackers = try top.table("trackers") {
            if let value = try trackers.integer("announce_timeout", in: 1...600) { config.announceTimeout = value }
            if let value = try trackers.integer("stop_timeout", in: 0...300) { config.stopTimeout = value }
            if let value = try trackers.integer("max_concurrent_announces", in: 1...1000) { config.maxConcurrentAnnounces = value }
            if let value = try trackers.integer("announce_jitter", in: 0...3600) { config.announceJitter = value }
            if let value = try trackers.integer("numwant", in: 0...1000) { config.numWant = value }
            if let value = try trackers.integer("udp_retries", in: 0...8) { config.udpTrackerRetries = value }
            try trackers.rejectUnknownKeys()
        }

        if var status = try top.table("status") {
            if let text = try status.string("listen") {
                if text.isEmpty {
                    config.statusAddress = nil
                } else {
                    guard let address = ListenAddress(text) else {
                        throw status.error("listen", "expected ADDRESS:PORT such as \"127.0.0.1:9180\" or \"[::1]:9180\", or \"\" to turn the endpoint off, found \"\(text)\"")
                    }
                    config.statusAddress = address
                }
            }
            try status.rejectUnknownKeys()
        }

        if var log = try top.table("log") {
            if let level = try log.string("level") {
                guard let parsed = Logger.Level(rawValue: level.lowercased()) else {
                    throw log.error("level", "expected one of trace, debug, info, notice, warning, error, critical, found \"\(level)\"")
                }
                config.logLevel = parsed
            }
            try log.rejectUnknownKeys()
        }

        if let entries = try top.tables("torrent") {
            config.torrents = []
            for var entry in entries {
                guard let file = try entry.path("file") else { throw entry.error("file", "missing: the path of the .torrent file") }
                let data = try entry.path("data_dir")
                let upload = try entry.rate("upload_limit")
                let download = try entry.rate("download_limit")
                try entry.rejectUnknownKeys()
                config.torrents.append(.init(file: file, dataDirectory: data, uploadLimit: upload, downloadLimit: download))
            }
        }

        try top.rejectUnknownKeys()
        return config
    }
}

/// Walks one TOML table, remembering which keys were read so that the rest can be
/// reported as unknown (usually a typo).
struct TableReader {
    let table: TOMLTable
    let path: String
    let file: String
    private var read: Set<String> = []

    init(_ table: TOMLTable, path: String, file: String) {
        self.table = table
        self.path = path
        self.file = file
    }

    func qualified(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    func error(_ key: String, _ message: String) -> ConfigError {
        ConfigError(file: file, key: qualified(key), message)
    }

    private mutating func value(_ key: String) -> TOMLValueConvertible? {
        read.insert(key)
        return table[key]
    }

    private func wrongType(_ key: String, expected: String, found value: TOMLValueConvertible) -> ConfigError {
        error(key, "expected \(expected), found a \(value.type) (\(value.debugDescription))")
    }

    mutating func integer(_ key: String, in range: ClosedRange<Int>) throws(ConfigError) -> Int? {
        guard let value = value(key) else { return nil }
        guard let number = value.int else { throw wrongType(key, expected: "an integer from \(range.lowerBound) to \(range.upperBound)", found: value) }
        guard range.contains(number) else {
            throw error(key, "\(number) is out of range: expected \(range.lowerBound) to \(range.upperBound)")
        }
        return number
    }

    mutating func string(_ key: String) throws(ConfigError) -> String? {
        guard let value = value(key) else { return nil }
        guard let text = value.string else { throw wrongType(key, expected: "a string", found: value) }
        return text
    }

    mutating func path(_ key: String) throws(ConfigError) -> String? {
        guard let text = try string(key) else { return nil }
        guard !text.isEmpty else { throw error(key, "expected a path, found an empty string") }
        return text
    }

    mutating func bool(_ key: String) throws(ConfigError) -> Bool? {
        guard let value = value(key) else { return nil }
        guard let flag = value.bool else { throw wrongType(key, expected: "true or false", found: value) }
        return flag
    }

    /// A size: an integer of bytes, or a string with a unit ("256KiB").
    mutating func size(_ key: String) throws(ConfigError) -> Int64? {
        guard let value = value(key) else { return nil }
        if let number = value.int {
            guard number >= 0 else { throw error(key, "\(number) is negative: expected a number of bytes") }
            return Int64(number)
        }
        guard let text = value.string else {
            throw wrongType(key, expected: "a size such as \"256KiB\" or a number of bytes", found: value)
        }
        guard let size = ByteUnits.parseSize(text) else {
            throw error(key, "\"\(text)\" is not a size: expected a number with an optional unit (B, KiB, MiB, GiB, kB, MB, GB)")
        }
        return size
    }

    /// A rate: an integer of bytes per second, or a string with a unit ("5MiB/s").
    mutating func rate(_ key: String) throws(ConfigError) -> Int64? {
        guard let value = value(key) else { return nil }
        if let number = value.int {
            guard number >= 0 else { throw error(key, "\(number) is negative: expected bytes per second, 0 for unlimited") }
            return Int64(number)
        }
        guard let text = value.string else {
            throw wrongType(key, expected: "a rate such as \"5MiB/s\" or a number of bytes per second", found: value)
        }
        guard let rate = ByteUnits.parseRate(text) else {
            if ByteUnits.isBitRate(text) {
                throw error(key, "\"\(text)\" is bits per second: limits are in bytes, such as \"12.5MB/s\" for 100 Mbit/s")
            }
            throw error(key, "\"\(text)\" is not a rate: expected a number with an optional unit (B, KiB, MiB, GiB, kB, MB, GB) and /s, or 0 for unlimited")
        }
        return rate
    }

    mutating func table(_ key: String) throws(ConfigError) -> TableReader? {
        guard let value = value(key) else { return nil }
        guard let table = value.table else { throw wrongType(key, expected: "a table ([\(qualified(key))])", found: value) }
        return TableReader(table, path: qualified(key), file: file)
    }

    /// An array of tables, `[[key]]`.
    mutating func tables(_ key: String) throws(ConfigError) -> [TableReader]? {
        guard let value = value(key) else { return nil }
        guard let array = value.array else { throw wrongType(key, expected: "an array of tables ([[\(qualified(key))]])", found: value) }
        var result: [TableReader] = []
        for (index, element) in array.enumerated() {
            guard let table = element.table else {
                throw error("\(key)[\(index)]", "expected a table, found a \(element.type)")
            }
            result.append(TableReader(table, path: "\(qualified(key))[\(index)]", file: file))
        }
        return result
    }

    func rejectUnknownKeys() throws(ConfigError) {
        for key in table.keys.sorted() where !read.contains(key) {
            var message = "unknown key"
            if let suggestion = Self.closest(to: key, among: read) { message += " (did you mean `\(suggestion)`?)" }
            throw error(key, message)
        }
    }

    private static func closest(to key: String, among known: Set<String>) -> String? {
        let scored = known.map { ($0, editDistance(Array(key.utf8), Array($0.utf8))) }
        guard let best = scored.min(by: { $0.1 < $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }), best.1 <= max(2, key.count / 3) else { return nil }
        return best.0
    }

    private static func editDistance(_ a: [UInt8], _ b: [UInt8]) -> Int {
        var previous = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var current = [i] + [Int](repeating: 0, count: b.count)
            for j in 1...max(b.count, 1) where !b.isEmpty {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}
