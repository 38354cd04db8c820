import ArgumentParser
import ServiceKit

/// The options every service that connects out to the broker shares, and the
/// start-up they imply: logging, signal handling, the configuration with the
/// broker endpoint from the command line.
public struct ServiceOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Config file (default: $CHORUS_CONFIG or deploy/chorus.conf).", valueName: "path"))
    public var config: String?

    @Option(help: ArgumentHelp("The broker's worker endpoint (CHORUS_BACKEND).", valueName: "endpoint"))
    public var broker: String?

    @Flag(help: "Log more.")
    public var verbose = false

    public init() {}

    /// Names the log, installs the stop signals and loads the configuration.
    public func start(_ name: String) throws -> Configuration {
        Log.name = name
        Log.verbose = verbose
        StopSignal.install()
        var c = try Configuration(path: config)
        if let broker { c.set("CHORUS_BACKEND", broker) }
        return c
    }
}
