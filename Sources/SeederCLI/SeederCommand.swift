import ArgumentParser
import Seeder

@main
struct SeederCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "seeder",
        abstract: "A BitTorrent seeding server for seedboxes and mirrors.",
        version: SeederVersion.string,
        subcommands: [RunCommand.self, StatusCommand.self, CreateCommand.self, InfoCommand.self, VerifyCommand.self],
        defaultSubcommand: nil
    )
}

/// `262144`, `256KiB`, `4MiB`.
struct Size: ExpressibleByArgument {
    let bytes: Int64
    init?(argument: String) {
        guard let bytes = ByteUnits.parseSize(argument) else { return nil }
        self.bytes = bytes
    }
    static var defaultValueDescription: String { "bytes, or a number with a unit: 262144, 256KiB, 4MiB" }
}

/// `5MiB/s`, `10MB/s`, `0` for unlimited.
struct Rate: ExpressibleByArgument {
    let bytesPerSecond: Int64
    init?(argument: String) {
        guard let rate = ByteUnits.parseRate(argument) else { return nil }
        bytesPerSecond = rate
    }
}
