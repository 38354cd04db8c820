import ArgumentParser
import Foundation
import Protocol
import ServiceKit

/// The command line every role worker executable shares.
public struct WorkerCommand: ParsableCommand {
    /// Set by each executable before parsing.
    nonisolated(unsafe) public static var role = Role.generator

    public static var configuration: CommandConfiguration {
        CommandConfiguration(
            commandName: "chorus-\(role)",
            abstract: "The Chorus \(role) worker: serves \(role) requests from the broker, several at once.",
            discussion: """
                Connects out to the broker's worker endpoint (CHORUS_BACKEND), so it can run on any host, \
                and registers as a \(role). \(role == .echo ? "It returns every payload unchanged (for benchmarks)." : "It loads its model once (\(role.settingsPrefix)_MODEL, default CHORUS_MODEL), builds prompts from deploy/prompts/\(role).txt (read again for every request) and streams generated text back. It serves \(role.settingsPrefix)_SLOTS requests at once (default 4), each in a slot with its own KV cache of \(role.settingsPrefix)_CONTEXT tokens, decoded together one token per step; a slot keeps its cache, and a request goes to the slot that shares the longest prompt prefix with it.") \
                Settings come from the config file and the environment; options override them. \
                Stops on SIGINT or SIGTERM.
                """
        )
    }

    @OptionGroup var service: ServiceOptions

    @Option(help: ArgumentHelp("Model file (overrides <ROLE>_MODEL).", valueName: "path"))
    var model: String?

    @Option(help: ArgumentHelp("Inference threads (overrides <ROLE>_THREADS).", valueName: "n"))
    var threads: Int?

    public init() {}

    /// The exit status of a worker whose model does not load.
    public static let modelLoadFailure: Int32 = 3

    public func run() throws {
        let role = Self.role
        // A model that does not load ends the worker before it registers: deploy/up.sh sees the exit status and reports the last line.
        try service.run(role.rawValue, exitCode: { $0 is ModelLoadError ? Self.modelLoadFailure : 1 }) { configuration in
            var c = configuration
            let prefix = role.settingsPrefix + "_"
            if let model { c.set(prefix + "MODEL", model) }
            if let threads { c.set(prefix + "THREADS", String(threads)) }
            let bus = try BusSettings(c)
            let handler: WorkerHandler
            switch role {
            case .echo: handler = .requests(EchoHandler())
            case .critic: handler = .model(try CriticHandler(settings: RoleSettings(role: role, configuration: c)))
            default: handler = .model(try StageHandler(settings: RoleSettings(role: role, configuration: c)))
            }
            if case let .model(h) = handler { try SlotScheduler.checkMemory(h) }
            try RoleWorker(role: role, bus: bus, handler: handler).run()
        }
    }
}
