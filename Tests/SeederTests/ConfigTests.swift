import Foundation
import Testing
@testable import Seeder

@Suite struct ConfigTests {
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    /// Config/seeder.toml documents the embedded defaults: parsing it must change nothing.
    @Test func exampleConfigIsTheEmbeddedDefault() throws {
        let path = Self.repoRoot + "/Config/seeder.toml"
        let defaults = SeederConfig(root: "/var/lib/seeder")
        let parsed = try ConfigLoader.load(path: path, defaults: SeederConfig(root: "/elsewhere"))
        #expect(parsed == defaults)
    }

    @Test func burstOfABlockOrMoreIsAccepted() throws {
        #expect(try ConfigLoader.parse("[limits]\nburst = \"16KiB\"\n", file: "t.toml").burst == 16 * 1024)
        #expect(try ConfigLoader.parse("[limits]\nburst = 0\n", file: "t.toml").burst == 0)
    }

    /// Every key the loader knows appears in Config/seeder.toml.
    @Test func exampleConfigListsEveryKey() throws {
        let text = try String(contentsOfFile: Self.repoRoot + "/Config/seeder.toml", encoding: .utf8)
        let keys = ["listen_port", "bind_ipv4", "bind_ipv6", "utp", "outgoing", "data_dir", "torrents_dir", "state_dir", "disk_threads",
                    "max_open_files", "upload_limit", "download_limit", "max_connections", "max_connections_per_torrent",
                    "max_connections_per_ip", "max_half_open", "upload_slots", "level",
                    "torrent_upload_limit", "torrent_download_limit", "burst", "count_overhead",
                    "resume_interval", "preallocate", "invalid_threshold",
                    "announce_timeout", "stop_timeout", "max_concurrent_announces", "announce_jitter", "numwant", "udp_retries",
                    "listen"]
        for key in keys {
            #expect(text.contains("\n\(key) = "), "Config/seeder.toml lacks \(key)")
        }
    }

    @Test func readsEverySection() throws {
        let config = try ConfigLoader.parse("""
            [network]
            listen_port = 51413
            bind_ipv4 = "127.0.0.1"
            bind_ipv6 = ""
            [storage]
            data_dir = "/srv/iso"
            disk_threads = 3
            [limits]
            upload_limit = "5MiB/s"
            download_limit = 1000
            max_connections_per_ip = 2
            [log]
            level = "DEBUG"
            [[torrent]]
            file = "/srv/a.torrent"
            [[torrent]]
            file = "/srv/b.torrent"
            data_dir = "/srv/b"
            """, file: "t.toml")
        #expect(config.listenPort == 51413)
        #expect(config.bindIPv4 == "127.0.0.1")
        #expect(config.bindIPv6 == "")
        #expect(config.dataDirectory == "/srv/iso")
        #expect(config.diskThreads == 3)
        #expect(config.uploadLimit == 5 << 20)
        #expect(config.downloadLimit == 1000)
        #expect(config.maxConnectionsPerIP == 2)
        #expect(config.logLevel == .debug)
        #expect(config.torrents == [.init(file: "/srv/a.torrent"), .init(file: "/srv/b.torrent", dataDirectory: "/srv/b")])
    }

    @Test(arguments: [
        ("[network]\nlisten_prot = 1\n", "t.toml: network.listen_prot: unknown key (did you mean `listen_port`?)"),
        ("[network]\nlisten_port = \"abc\"\n", "t.toml: network.listen_port: expected an integer from 1 to 65535, found a string (\"abc\")"),
        ("[network]\nlisten_port = 70000\n", "t.toml: network.listen_port: 70000 is out of range: expected 1 to 65535"),
        ("[network]\nlisten_port = 0\n", "t.toml: network.listen_port: 0 is out of range: expected 1 to 65535"),
        ("[network]\nbind_ipv4 = \"::1\"\n", "t.toml: network.bind_ipv4: expected an IPv4 address such as \"0.0.0.0\" or \"\" to disable IPv4, found \"::1\""),
        ("[network]\noutgoing = \"utp\"\n", "t.toml: network.outgoing: expected one of prefer_utp, prefer_tcp, tcp_only, utp_only, found \"utp\""),
        ("[network]\nutp = \"yes\"\n", "t.toml: network.utp: expected true or false, found a string (\"yes\")"),
        ("[limits]\nupload_limit = \"fast\"\n", "t.toml: limits.upload_limit: \"fast\" is not a rate: expected a number with an optional unit (B, KiB, MiB, GiB, kB, MB, GB) and /s, or 0 for unlimited"),
        ("[log]\nlevel = \"loud\"\n", "t.toml: log.level: expected one of trace, debug, info, notice, warning, error, critical, found \"loud\""),
        ("netwrok = 1\n", "t.toml: netwrok: unknown key (did you mean `network`?)"),
        ("network = 1\n", "t.toml: network: expected a table ([network]), found a integer (1)"),
        ("[[torrent]]\ndata_dir = \"/x\"\n", "t.toml: torrent[0].file: missing: the path of the .torrent file"),
        ("[storage]\ndata_dir = \"\"\n", "t.toml: storage.data_dir: expected a path, found an empty string"),
        ("[limits]\nupload_limit = \"100Mbps\"\n",
         "t.toml: limits.upload_limit: \"100Mbps\" is bits per second: limits are in bytes, such as \"12.5MB/s\" for 100 Mbit/s"),
        ("[limits]\nupload_limit = \"0.4\"\n",
         "t.toml: limits.upload_limit: \"0.4\" is not a rate: expected a number with an optional unit (B, KiB, MiB, GiB, kB, MB, GB) and /s, or 0 for unlimited"),
        ("[limits]\nburst = 1\n", "t.toml: limits.burst: 1 bytes is less than one 16KiB block: expected 0 (automatic) or at least \"16KiB\""),
        ("[limits]\nburst = \"1KiB\"\n", "t.toml: limits.burst: 1024 bytes is less than one 16KiB block: expected 0 (automatic) or at least \"16KiB\""),
    ])
    func refusesBadValuesNamingTheKey(text: String, message: String) {
        #expect {
            try ConfigLoader.parse(text, file: "t.toml")
        } throws: { error in
            (error as? ConfigError)?.description == message
        }
    }

    @Test func reportsTOMLSyntaxErrorsWithTheLine() {
        #expect {
            try ConfigLoader.parse("[network]\nlisten_port = = 3\n", file: "t.toml")
        } throws: { error in
            (error as? ConfigError)?.file.hasPrefix("t.toml:2:") == true
        }
    }

    @Test func parsesSizesAndRates() {
        #expect(ByteUnits.parseSize("262144") == 262144)
        #expect(ByteUnits.parseSize("256KiB") == 262144)
        #expect(ByteUnits.parseSize("4 MiB") == 4 << 20)
        #expect(ByteUnits.parseSize("1.5GiB") == 3 << 29)
        #expect(ByteUnits.parseSize("10kB") == 10_000)
        #expect(ByteUnits.parseSize("-1") == nil)
        #expect(ByteUnits.parseSize("MiB") == nil)
        #expect(ByteUnits.parseSize("99999999999GiB") == nil)
        #expect(ByteUnits.parseRate("5MiB/s") == 5 << 20)
        #expect(ByteUnits.parseRate("10 MB/s") == 10_000_000)
        #expect(ByteUnits.parseRate("unlimited") == 0)
        #expect(ByteUnits.parseRate("0") == 0)
        // Bits are not bytes: a line speed copied in must not become eight times the limit.
        #expect(ByteUnits.parseRate("100Mbps") == nil)
        #expect(ByteUnits.parseRate("800 kbps") == nil)
        #expect(ByteUnits.parseRate("12MBps") == 12_000_000)
        // A fraction of a byte is not 0 (unlimited).
        #expect(ByteUnits.parseRate("0.4") == nil)
        #expect(ByteUnits.parseRate("0.0000000001GiB/s") == nil)
        #expect(ByteUnits.parseRate("0.0") == 0)
        #expect(ByteUnits.parseRate("0.6") == 1)
        #expect(ByteUnits.format(1536) == "1.50 KiB")
        #expect(ByteUnits.format(100) == "100 B")
    }
}
