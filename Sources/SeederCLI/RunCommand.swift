import ArgumentParser
import EventLoop
import Logging
import Seeder

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the server: load, check and seed torrents.",
        discussion: """
            Without --config, the embedded default config is used (see Config/seeder.toml).
            Flags override the config. Torrents named on the command line are seeded from
            --data, or from the config's data directory.
            """
    )

    @Option(name: .long, help: "The TOML config file.")
    var config: String?

    @Option(name: .long, help: "TCP and UDP port for peers.")
    var port: Int?

    @Option(name: .long, help: "Data directory (save path) for the torrents named here and the torrents directory.")
    var data: String?

    @Option(name: .customLong("upload-limit"), help: "Global upload limit, e.g. 5MiB/s; 0 is unlimited.")
    var uploadLimit: Rate?

    @Option(name: .customLong("download-limit"), help: "Global download limit, e.g. 5MiB/s; 0 is unlimited.")
    var downloadLimit: Rate?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String?

    @Option(name: .long, help: "Torrents directory to watch: .torrent files that appear there are seeded, removed ones stopped.")
    var watch: String?

    @Option(name: .long, help: "Status endpoint address, e.g. 127.0.0.1:9180; \"\" turns it off.")
    var status: String?

    @Argument(help: "Torrent files to seed.")
    var torrents: [String] = []

    func validate() throws {
        if let status, !status.isEmpty, ListenAddress(status) == nil {
            throw ValidationError("--status \(status): expected ADDRESS:PORT such as 127.0.0.1:9180 or [::1]:9180")
        }
        if let port, !(1...65535).contains(port) { throw ValidationError("--port \(port) is out of range: expected 1 to 65535") }
        if let logLevel, Logger.Level(rawValue: logLevel.lowercased()) == nil {
            throw ValidationError("--log-level \(logLevel): expected trace, debug, info, notice, warning, error or critical")
        }
    }

    func run() throws {
        let settings: SeederConfig
        let origin: String
        do {
            settings = try loadSettings()
        } catch {
            printError("seeder: \(error)")
            throw ExitCode(2)
        }
        origin = config ?? "embedded default config"

        let level = LogLevelSwitch(settings.logLevel)
        LoggingSystem.bootstrap { label in LineLogHandler(label: label, level: level) }
        let logger = Logger(label: "seeder")
        let reload: (() throws(ConfigError) -> SeederConfig)? = config == nil ? nil : { () throws(ConfigError) in try self.loadSettings() }
        try Server.run(config: settings, origin: origin, commandLineTorrents: torrents, commandLineData: data,
                       logger: logger, logLevel: level, reload: reload)
    }

    /// The config file (or the embedded defaults) with the flags on top; SIGHUP calls it
    /// again, so the flags keep winning after a reload.
    private func loadSettings() throws(ConfigError) -> SeederConfig {
        var settings = try config.map { path throws(ConfigError) in try ConfigLoader.load(path: path) } ?? SeederConfig()
        if let port { settings.listenPort = port }
        if let data { settings.dataDirectory = data }
        if let watch { settings.torrentsDirectory = watch }
        if let status { settings.statusAddress = status.isEmpty ? nil : ListenAddress(status) }
        if let uploadLimit { settings.uploadLimit = uploadLimit.bytesPerSecond }
        if let downloadLimit { settings.downloadLimit = downloadLimit.bytesPerSecond }
        if let logLevel { settings.logLevel = Logger.Level(rawValue: logLevel.lowercased())! }
        return settings
    }
}

/// Owns the loop for the lifetime of `seeder run`.
enum Server {
    static func run(config: SeederConfig, origin: String, commandLineTorrents: [String], commandLineData: String?, logger: Logger,
                    logLevel: LogLevelSwitch, reload: (() throws(ConfigError) -> SeederConfig)?) throws {
        logger.info("seeder \(SeederVersion.string) starting", metadata: [
            "config": "\(origin)", "port": "\(config.listenPort)", "data_dir": "\(config.dataDirectory)",
            "torrents_dir": "\(config.torrentsDirectory)",
        ])
        for directory in [config.dataDirectory, config.torrentsDirectory, config.stateDirectory] {
            if let problem = Directories.ensure(directory) {
                logger.critical("cannot create \(directory): \(problem)")
                throw ExitCode(1)
            }
        }
        logger.info("seeding .torrent files found in \(config.torrentsDirectory), data from \(config.dataDirectory)")
        logger.info("bandwidth limits", metadata: [
            "upload_limit": "\(ByteUnits.formatRate(config.uploadLimit))",
            "download_limit": "\(ByteUnits.formatRate(config.downloadLimit))",
            "torrent_upload_limit": "\(ByteUnits.formatRate(config.torrentUploadLimit))",
        ])
        let loop = EventLoop()
        let session = Session(config: config, loop: loop, logger: logger, commandLineTorrents: commandLineTorrents, commandLineData: commandLineData)
        session.logLevel = logLevel
        session.reloadConfig = reload
        session.loadTorrents()
        do {
            try session.start()
        } catch {
            logger.critical("\(error)")
            throw ExitCode(1)
        }
        loop.run()
        session.shutdown()
        logger.info("stopped")
    }
}
