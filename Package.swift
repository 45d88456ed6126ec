// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "Seeder",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "seeder", targets: ["SeederCLI"]),
        .library(name: "BitTorrent", targets: ["BitTorrent"]),
        .library(name: "Seeder", targets: ["Seeder"]),
        .executable(name: "fuzz-metainfo", targets: ["FuzzMetainfo"]),
        .executable(name: "fuzz-utp-packet", targets: ["FuzzUTPPacket"]),
        .executable(name: "fuzz-utp-connection", targets: ["FuzzUTPConnection"]),
        .executable(name: "fuzz-udp-tracker", targets: ["FuzzUDPTracker"]),
        .executable(name: "fuzz-peer-wire", targets: ["FuzzPeerWire"]),
        .executable(name: "fuzz-http-announce", targets: ["FuzzHTTPAnnounce"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
    ],
    targets: [
        // System-library shims: headers and link flags only.
        .systemLibrary(name: "CLibevent", pkgConfig: "libevent", providers: [.apt(["libevent-dev"])]),
        .systemLibrary(name: "CLibcrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),

        // The only module that imports libevent.
        .target(name: "EventLoop", dependencies: ["CLibevent"]),

        // Pure protocol modules: bytes and time in, bytes and actions out.
        // Cross-module optimisation: the download core (PiecePicker, PeerDownload) is
        // generic over the caller's peer key; without it the server runs that code
        // unspecialised, looking up generic type metadata for every block.
        .target(name: "BitTorrent", dependencies: ["CLibcrypto"],
                swiftSettings: [.unsafeFlags(["-cross-module-optimization"], .when(configuration: .release))]),
        .target(name: "UTP"),
        .target(name: "Throttle"),
        .target(name: "UDPTracker", dependencies: ["Trackers"]),
        .target(name: "Trackers", dependencies: ["BitTorrent"]),
        // Seeded randomness for simulations, tests and fuzzing: runs that replay exactly.
        .target(name: "SeededRandom"),

        .target(
            name: "Seeder",
            dependencies: [
                "BitTorrent", "EventLoop", "Trackers", "UDPTracker", "Throttle", "UTP", "CZstd",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ]
        ),
        .executableTarget(
            name: "SeederCLI",
            dependencies: [
                "Seeder", "BitTorrent",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // libFuzzer entries; built only by Fuzz/run with --sanitize=fuzzer.
        .executableTarget(name: "FuzzMetainfo", dependencies: ["BitTorrent"], path: "Fuzz/Metainfo"),
        .executableTarget(name: "FuzzUTPPacket", dependencies: ["UTP"], path: "Fuzz/UTPPacket"),
        .executableTarget(name: "FuzzUTPConnection", dependencies: ["UTP", "SeededRandom"], path: "Fuzz/UTPConnection"),
        .executableTarget(name: "FuzzUDPTracker", dependencies: ["UDPTracker", "SeededRandom"], path: "Fuzz/UDPTracker"),
        .executableTarget(name: "FuzzPeerWire", dependencies: ["BitTorrent", "SeededRandom"], path: "Fuzz/PeerWire"),
        .executableTarget(name: "FuzzHTTPAnnounce", dependencies: ["Trackers", "BitTorrent", "SeededRandom"], path: "Fuzz/HTTPAnnounce"),

        .testTarget(name: "BitTorrentTests", dependencies: ["BitTorrent", "SeededRandom"]),
        .testTarget(name: "SeederTests", dependencies: ["Seeder", "BitTorrent", "EventLoop"]),
        .testTarget(name: "TrackersTests", dependencies: ["Trackers", "BitTorrent", "SeededRandom"]),
        .testTarget(name: "UTPTests", dependencies: ["UTP", "SeededRandom"]),
        .testTarget(name: "EventLoopTests", dependencies: ["EventLoop"]),
        .testTarget(name: "ThrottleTests", dependencies: ["Throttle", "SeededRandom"]),
        .testTarget(name: "UDPTrackerTests", dependencies: ["UDPTracker", "SeededRandom"]),
    ],
    swiftLanguageModes: [.v6]
)
