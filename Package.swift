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
        .target(name: "BitTorrent", dependencies: ["CLibcrypto"]),
        .target(name: "UTP"),
        .target(name: "Throttle"),
        .target(name: "UDPTracker"),
        .target(name: "Trackers", dependencies: ["BitTorrent"]),

        .target(
            name: "Seeder",
            dependencies: [
                "BitTorrent", "EventLoop", "UTP", "Throttle", "UDPTracker", "Trackers", "CZstd",
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

        .testTarget(name: "BitTorrentTests", dependencies: ["BitTorrent"]),
        .testTarget(name: "SeederTests", dependencies: ["Seeder", "BitTorrent", "EventLoop"]),
        .testTarget(name: "TrackersTests", dependencies: ["Trackers", "BitTorrent"]),
    ],
    swiftLanguageModes: [.v6]
)
