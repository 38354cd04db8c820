// chorus-gateway: the OpenAI-style HTTP API and the web page — chat
// completions as jobs or one role's request, jobs and their events over
// server-sent events, models and status — behind API keys, host checks and
// limits. It reaches the broker through one shared connection.

import ArgumentParser
import Client
import Foundation
import GatewayApp
import Hummingbird
import Logging
import Protocol
import ServiceKit

@main
struct GatewayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chorus-gateway",
        abstract: "Chorus over HTTP: an OpenAI-compatible API and a web page of live jobs.",
        discussion: """
            A client of the broker, like the chorus CLI. It serves:
              POST /v1/chat/completions   model "chorus" runs a job on the last user message (n \
            chains; extra fields rounds, seed, no_memory, memory_namespace); model "generator", \
            "verifier", "refiner" or "critic" sends one request to that role (the verifier, \
            refiner and critic work on the last assistant message, or "answer"; the refiner also \
            needs "critique"). "stream": true answers with server-sent events in OpenAI's chunk \
            format, ending with [DONE].
              GET /v1/models, POST /v1/jobs, GET /v1/jobs/ID (the job with its trajectory), \
            GET /v1/jobs/ID/events (server-sent events), DELETE /v1/jobs/ID (cancel), \
            GET /v1/status (workers, slots and queues).
              /  the web page.
            Requests under /v1 need "Authorization: Bearer KEY" with a key from the file \
            CHORUS_API_KEYS (make one with chorus apikey). Without that file the gateway serves \
            only a loopback address, to anyone on this machine. Stops on SIGINT or SIGTERM.
            """
    )

    @Option(help: ArgumentHelp("Config file (default: $CHORUS_CONFIG or deploy/chorus.conf).", valueName: "path"))
    var config: String?

    @Option(help: ArgumentHelp("Address to serve, host:port (CHORUS_GATEWAY, default 127.0.0.1:8080).", valueName: "address"))
    var address: String?

    @Option(help: ArgumentHelp("The broker's client endpoint (default: CHORUS_FRONTEND); its events are then read from the same host.",
                               valueName: "endpoint"))
    var broker: String?

    @Option(help: ArgumentHelp("File of API keys, one per line (CHORUS_API_KEYS).", valueName: "path"))
    var apiKeys: String?

    @Option(help: ArgumentHelp("Folder of the web page's files (CHORUS_WEB_ROOT, default: the ones built with the gateway).", valueName: "path"))
    var webRoot: String?

    @Option(help: ArgumentHelp("Largest request body in bytes (CHORUS_GATEWAY_MAX_BODY, default: the broker's CHORUS_MAX_BODY_BYTES less 16384 for the envelope).", valueName: "n"))
    var maxBody: Int?

    @Option(help: ArgumentHelp("Other names of this gateway a request's Host may give, comma-separated, each host or host:port (CHORUS_GATEWAY_HOSTS; its own address, and loopback names on loopback, always).", valueName: "names"))
    var hosts: String?

    @Option(help: ArgumentHelp("Seconds a request that is not streamed waits for its answer (CHORUS_GATEWAY_TIMEOUT, default 600).", valueName: "s"))
    var timeout: Double?

    @Option(help: ArgumentHelp("Seconds between keep-alive comments on event streams, so that proxies and clients do not drop a quiet one (CHORUS_GATEWAY_KEEPALIVE, default 15; 0: none).", valueName: "s"))
    var keepAlive: Double?

    @Flag(help: "Log more.")
    var verbose = false

    func run() throws {
        try ServiceBoot.run("gateway", verbose: verbose, config: config, adjust: { c in
            if let broker {
                c.set("CHORUS_EVENTS", BusSettings.frontend(c.string("CHORUS_EVENTS", default: "tcp://127.0.0.1:5557"), besideBackend: broker))
                c.set("CHORUS_FRONTEND", broker)
            }
        }) { c in
            let text = address ?? c.string("CHORUS_GATEWAY", default: "127.0.0.1:8080")
            if text == "off" {
                Log.info("CHORUS_GATEWAY is off: not serving")
                return
            }
            guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
                throw ValidationError("CHORUS_GATEWAY=\(text) is not host:port (e.g. 127.0.0.1:8080), or off")
            }
            let host = String(text[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
            let keysPath = apiKeys.map(c.resolve) ?? c.optionalString("CHORUS_API_KEYS").map(c.resolve)
            let keys = try keysPath.map { path in try APIKeys(path: path) }
            if keys == nil {
                guard GatewayApp.isLoopback(host) else {
                    throw ValidationError("serving \(host), not a loopback address, needs API keys: set CHORUS_API_KEYS to a key file (make one with chorus apikey --file PATH)")
                }
                Log.warning("no API keys (CHORUS_API_KEYS): anyone on this machine can use the gateway")
            }
            let brokerLimit = try c.int("CHORUS_MAX_BODY_BYTES", default: BusProtocol.defaultMaxBodyBytes)
            let maxBody = try self.maxBody ?? c.int("CHORUS_GATEWAY_MAX_BODY", default: max(1024, brokerLimit - 16_384))
            let timeout = try self.timeout ?? c.double("CHORUS_GATEWAY_TIMEOUT", default: 600)
            let keepAlive = try self.keepAlive ?? c.double("CHORUS_GATEWAY_KEEPALIVE", default: 15)
            guard maxBody >= 1024, timeout > 0, keepAlive >= 0 else {
                throw ValidationError("the largest body must be at least 1024 bytes, the timeout positive and the keep-alive interval 0 or more")
            }
            let web = webRoot.map(c.resolve) ?? c.optionalString("CHORUS_WEB_ROOT").map(c.resolve) ?? Self.builtWebRoot()
            if web == nil { Log.warning("the web page's files were not found (set CHORUS_WEB_ROOT); serving the API only") }

            let names = (hosts ?? c.optionalString("CHORUS_GATEWAY_HOSTS") ?? "").split(separator: ",").map(String.init)
            let allowed = GatewayApp.allowedHosts(bound: host, port: port, configured: names)
            if allowed.isEmpty { Log.warning("serving every interface with no CHORUS_GATEWAY_HOSTS: any Host header is accepted") }

            let link = try BrokerClient(settings: try BusSettings(c), maxBodyBytes: brokerLimit)
            link.start()
            let app = GatewayApp(link: link, keys: keys, maxBodyBytes: maxBody, timeout: timeout,
                                 keepAlive: keepAlive > 0 ? .milliseconds(Int64(keepAlive * 1000)) : nil, webRoot: web, hosts: allowed)
            try serve(app, host: host, port: port)
            Log.info("serving http://\(host):\(port) (broker \(link.settings.frontend)\(keys == nil ? "" : ", API keys from \(keys!.path)"))")
            while !StopSignal.isRequested { Thread.sleep(forTimeInterval: 0.2) }
            Log.info("stopping")
            link.stop()
        }
    }

    /// The web files built beside the executable (SwiftPM's resources).
    static func builtWebRoot() -> String? {
        let dir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        let candidates = ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? [])
            .filter { $0.hasSuffix(".resources") && $0.contains("chorus-gateway") }
            .map { dir.appendingPathComponent($0).appendingPathComponent("web").path }
        return candidates.first { FileManager.default.fileExists(atPath: $0 + "/index.html") }
    }

    /// Starts the HTTP server; throws if it cannot listen within 10 s.
    func serve(_ gateway: GatewayApp, host: String, port: Int) throws {
        var logger = Logger(label: "chorus-gateway")
        logger.logLevel = verbose ? .info : .warning
        try ServiceBoot.listen("the API", host: host, port: port, fix: "set CHORUS_GATEWAY to a free address") { ready in
            let app = gateway.buildApplication(host: host, port: port, logger: logger) { _ in ready(nil) }
            Task.detached {
                do { try await app.run() } catch { ready(error) }
            }
        }
    }
}
