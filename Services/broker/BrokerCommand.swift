// chorus-broker: the broker's command line — its options and settings, then
// BrokerCore's Broker runs until SIGINT or SIGTERM.

import ArgumentParser
import BrokerCore
import Foundation
import Protocol
import ServiceKit

extension RefinePolicy: ExpressibleByArgument {}

@main
struct BrokerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chorus-broker",
        abstract: "The Chorus message broker: routes requests to role workers and runs jobs from a durable journal.",
        discussion: """
            Binds a ROUTER for clients, a ROUTER for workers and a PUB socket for job events \
            (docs/PROTOCOL.md). Every job and stage result is written to a SQLite journal before \
            it is acknowledged; unfinished jobs resume when the broker restarts. Settings come \
            from the config file (deploy/chorus.conf) and the environment; options override both. \
            Stops on SIGINT or SIGTERM.
            """
    )

    @Option(help: ArgumentHelp("Config file (default: $CHORUS_CONFIG or deploy/chorus.conf).", valueName: "path"))
    var config: String?

    @Option(help: ArgumentHelp("Endpoint for clients (CHORUS_FRONTEND).", valueName: "endpoint"))
    var frontend: String?

    @Option(help: ArgumentHelp("Endpoint for workers (CHORUS_BACKEND).", valueName: "endpoint"))
    var backend: String?

    @Option(help: ArgumentHelp("Endpoint for job events (CHORUS_EVENTS).", valueName: "endpoint"))
    var events: String?

    @Option(help: ArgumentHelp("SQLite journal file (CHORUS_JOURNAL, default var/journal.sqlite).", valueName: "path"))
    var journal: String?

    @Option(help: ArgumentHelp("Seconds between heartbeats (CHORUS_HEARTBEAT_INTERVAL, default 1).", valueName: "s"))
    var heartbeatInterval: Double?

    @Option(help: ArgumentHelp("Missed heartbeats before a worker is dead (CHORUS_HEARTBEAT_LIVENESS, default 3).", valueName: "n"))
    var liveness: Int?

    @Option(help: ArgumentHelp("Seconds a request waits while no worker of its role is registered (CHORUS_QUEUE_TIMEOUT, default 60); while one is, however busy, it waits its turn.", valueName: "s"))
    var queueTimeout: Double?

    @Option(help: ArgumentHelp("Unfinished jobs the broker holds; a SUBMIT beyond them is refused as busy (CHORUS_MAX_QUEUED_JOBS, default 1000).", valueName: "n"))
    var maxQueuedJobs: Int?

    @Option(help: ArgumentHelp("When a pipeline job that does not say refines: always (MALT's: after every verification) or checked (only when the verifier reaches another answer or the arithmetic checker finds a wrong computation) (CHORUS_REFINE, default always).", valueName: "policy"))
    var refine: RefinePolicy?

    @Option(help: ArgumentHelp("Clients' requests that may wait per role; beyond, a REQUEST is refused as busy (CHORUS_MAX_QUEUED_REQUESTS, default 1000).", valueName: "n"))
    var maxQueuedRequests: Int?

    @Option(help: ArgumentHelp("Requests one client may have open at once; beyond, refused as busy (CHORUS_MAX_CLIENT_REQUESTS, default 500; the gateway is one client).", valueName: "n"))
    var maxClientRequests: Int?

    @Option(help: ArgumentHelp("Seconds a client with requests open may stay silent before its requests are dropped; clients send HEARTBEAT while they wait (CHORUS_CLIENT_TIMEOUT, default 10).", valueName: "s"))
    var clientTimeout: Double?

    @Option(help: ArgumentHelp("Attempts before a request whose workers keep dying fails (CHORUS_MAX_ATTEMPTS, default 3).", valueName: "n"))
    var maxAttempts: Int?

    @Option(help: ArgumentHelp("Largest accepted message body in bytes (CHORUS_MAX_BODY_BYTES, default 1048576).", valueName: "n"))
    var maxBodyBytes: Int?

    @Option(help: ArgumentHelp("Comma-separated role names (CHORUS_ROLES).", valueName: "roles"))
    var roles: String?

    @Option(help: ArgumentHelp("Address of the Prometheus /metrics listener, host:port or off (CHORUS_METRICS, default 127.0.0.1:9464).", valueName: "address"))
    var metrics: String?

    @Flag(help: "Log more.")
    var verbose = false

    /// The broker's CURVE secret key: CHORUS_CURVE_SECRET_KEY, or the file CHORUS_CURVE_SECRET_KEY_FILE.
    static func secretKey(_ c: Configuration) throws -> String? {
        if let key = c.optionalString("CHORUS_CURVE_SECRET_KEY") {
            guard KeyFile.isKey(key) else {
                throw ValidationError("CHORUS_CURVE_SECRET_KEY is not a 40-character Z85 key (quote it in the config file: keys may hold '#' and '=')")
            }
            return key
        }
        return try c.optionalString("CHORUS_CURVE_SECRET_KEY_FILE").map {
            try KeyFile.read(c.resolve($0), what: "secret key file (CHORUS_CURVE_SECRET_KEY_FILE)")
        }
    }

    func run() throws {
        try ServiceBoot.run("broker", verbose: verbose, config: config, adjust: { c in
            if let frontend { c.set("CHORUS_FRONTEND", frontend) }
            if let backend { c.set("CHORUS_BACKEND", backend) }
            if let events { c.set("CHORUS_EVENTS", events) }
            if let heartbeatInterval { c.set("CHORUS_HEARTBEAT_INTERVAL", String(heartbeatInterval)) }
            if let liveness { c.set("CHORUS_HEARTBEAT_LIVENESS", String(liveness)) }
        }) { c in
            let roleList = (roles ?? c.string("CHORUS_ROLES", default: BusProtocol.defaultRoles.joined(separator: ",")))
                .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            for r in roleList where !BusProtocol.isValidRoleName(r) {
                throw ValidationError("'\(r)' is not a valid role name (a-z, 0-9 and -, starting with a letter)")
            }
            let refineText = c.string("CHORUS_REFINE", default: RefinePolicy.always.rawValue)
            guard let defaultRefine = refine ?? RefinePolicy(rawValue: refineText) else {
                throw ValidationError("CHORUS_REFINE is '\(refineText)'; it takes always or checked")
            }
            var settings = BrokerSettings(
                bus: try BusSettings(c),
                journalPath: journal.map(c.resolve) ?? c.path("CHORUS_JOURNAL", default: "var/journal.sqlite"),
                roles: Set(roleList),
                queueTimeout: try queueTimeout ?? c.double("CHORUS_QUEUE_TIMEOUT", default: 60),
                maxAttempts: try maxAttempts ?? c.int("CHORUS_MAX_ATTEMPTS", default: 3),
                maxBodyBytes: try maxBodyBytes ?? c.int("CHORUS_MAX_BODY_BYTES", default: BusProtocol.defaultMaxBodyBytes),
                maxQueuedJobs: try maxQueuedJobs ?? c.int("CHORUS_MAX_QUEUED_JOBS", default: 1000),
                maxQueuedRequests: try maxQueuedRequests ?? c.int("CHORUS_MAX_QUEUED_REQUESTS", default: 1000),
                maxClientRequests: try maxClientRequests ?? c.int("CHORUS_MAX_CLIENT_REQUESTS", default: 500),
                clientTimeout: try clientTimeout ?? c.double("CHORUS_CLIENT_TIMEOUT", default: 10),
                curveSecretKey: try Self.secretKey(c),
                clientKeys: c.optionalString("CHORUS_CLIENT_KEYS").map(c.resolve),
                workerKeys: c.optionalString("CHORUS_WORKER_KEYS").map(c.resolve),
                metrics: try BrokerMetrics.address(metrics ?? c.string("CHORUS_METRICS", default: "127.0.0.1:9464")))
            settings.defaultRefine = defaultRefine
            guard settings.queueTimeout > 0, settings.maxAttempts >= 1, settings.maxBodyBytes >= 1024, settings.maxQueuedJobs >= 1,
                  settings.maxQueuedRequests >= 1, settings.maxClientRequests >= 1, settings.clientTimeout > 0 else {
                throw ValidationError("queue timeout must be positive, max attempts at least 1, max body at least 1024 bytes, max queued jobs, queued requests and client requests at least 1, the client timeout positive")
            }
            // A bus open to the network without CURVE lets anyone submit, read
            // every job and register as any worker: refused unless asked for.
            let exposed = [settings.bus.frontend, settings.bus.backend, settings.bus.events].filter { !BusSettings.isLocalOnly($0) }
            if settings.curveSecretKey == nil, !exposed.isEmpty, ProcessInfo.processInfo.environment["CHORUS_INSECURE"] != "1",
               c.optionalString("CHORUS_INSECURE") != "1" {
                throw ValidationError("""
                    \(exposed.joined(separator: ", ")) can be reached from the network, and the bus has no CURVE: anyone there could \
                    submit, read every job and serve as any worker. Secure it (README, "Across hosts, securely": \
                    CHORUS_CURVE_SECRET_KEY_FILE, CHORUS_CLIENT_KEYS, CHORUS_WORKER_KEYS), bind loopback addresses, \
                    or set CHORUS_INSECURE=1 on a network you trust
                    """)
            }
            let broker = try Broker(settings: settings)
            try broker.run()
        }
    }
}
