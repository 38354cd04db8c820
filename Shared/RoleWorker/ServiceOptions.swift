import ArgumentParser
import ServiceKit

/// The options every service that connects out to the broker shares, and the
/// start they imply (`ServiceBoot`: logging, signal handling, the
/// configuration with the broker endpoint from the command line).
public struct ServiceOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Config file (default: $CHORUS_CONFIG or deploy/chorus.conf).", valueName: "path"))
    public var config: String?

    @Option(help: ArgumentHelp("The broker's worker endpoint (CHORUS_BACKEND). A service that also sends requests through the broker (memory) reaches its frontend on the same host, unless CHORUS_FRONTEND names another.",
                               valueName: "endpoint"))
    public var broker: String?

    @Flag(help: "Log more.")
    public var verbose = false

    public init() {}

    /// Runs the service `name` through the one boot routine (`ServiceBoot`),
    /// its configuration with the broker endpoint from the command line.
    public func run(_ name: String, exitCode: (Error) -> Int32 = { _ in 1 }, _ body: (Configuration) throws -> Void) throws {
        try ServiceBoot.run(name, verbose: verbose, config: config, adjust: { c in
            if let broker {
                c.set("CHORUS_BACKEND", broker)
                c.set("CHORUS_FRONTEND", BusSettings.frontend(c.string("CHORUS_FRONTEND", default: "tcp://127.0.0.1:5555"), besideBackend: broker))
            }
        }, exitCode: exitCode, body)
    }
}
