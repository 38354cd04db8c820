// GatewayApp: the OpenAI-style HTTP API as a library — a controller per
// resource (chat completions, jobs, models, status), the middlewares (errors,
// request guards, API keys, the web page's files) and server-sent events,
// reaching the broker through Client's BrokerClient, one connection every
// request shares. It knows HTTP and OpenAI's shapes; it must not know how
// jobs are planned.

import Client
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import OpenAI
import Protocol
import ServiceKit

typealias Context = GatewayContext

/// The HTTP API: OpenAI's chat completions and models, Chorus's jobs and
/// status, and the web page's files. Knows HTTP and OpenAI's shapes; the bus
/// is `BrokerClient`'s.
public struct GatewayApp: Sendable {
    let link: BrokerClient
    let keys: APIKeys?
    let maxBodyBytes: Int
    /// Seconds a non-streaming request waits for its job or role's answer.
    let timeout: Double
    /// How often an event stream gets a keep-alive comment; nil: never.
    let keepAlive: Duration?
    let webRoot: String?
    /// host:port names a request's Host may give (empty: any).
    let hosts: Set<String>

    /// Roles served as models, besides `chorus`; `echo` returns what it is sent (for benchmarks).
    public static let roleModels = (Role.models + [.echo]).map(\.rawValue)

    public init(link: BrokerClient, keys: APIKeys?, maxBodyBytes: Int, timeout: Double, keepAlive: Duration?, webRoot: String?,
                hosts: Set<String>) {
        self.link = link
        self.keys = keys
        self.maxBodyBytes = maxBodyBytes
        self.timeout = timeout
        self.keepAlive = keepAlive
        self.webRoot = webRoot
        self.hosts = hosts
    }

    /// The host:port names a request's Host may give (DNS rebinding's guard):
    /// the address served and the configured names; empty (any) when every
    /// interface is served with no names configured.
    public static func allowedHosts(bound host: String, port: Int, configured: [String]) -> Set<String> {
        RequestGuard.allowedHosts(bound: host, port: port, configured: configured)
    }

    /// Whether `host` names this machine's loopback interface.
    public static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    /// Every route, behind the middlewares.
    public func router() -> Router<GatewayContext> {
        let router = Router(context: Context.self)
        router.middlewares.add(ErrorMiddleware())
        router.middlewares.add(RequestGuard(hosts: hosts))
        router.middlewares.add(AuthMiddleware(keys: keys))
        if let webRoot {
            var logger = Logger(label: "chorus-gateway.files")
            logger.logLevel = .warning
            router.middlewares.add(WebMiddleware(files: FileMiddleware(webRoot, searchForIndexHtml: true, logger: logger)))
        }
        router.get("/healthz") { _, _ in Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "ok\n"))) }
        ModelsController(app: self).register(on: router)
        StatusController(app: self).register(on: router)
        ChatController(app: self).register(on: router)
        JobsController(app: self).register(on: router)
        return router
    }

    /// The HTTP server of these routes on `host`:`port` (Hummingbird's
    /// `buildApplication`); `onServerRunning` runs once it listens.
    public func buildApplication(host: String, port: Int, logger: Logger,
                                 onServerRunning: @escaping @Sendable (any Channel) async -> Void) -> some ApplicationProtocol {
        Application(router: router(), configuration: .init(address: .hostname(host, port: port), serverName: "chorus-gateway"),
                    onServerRunning: onServerRunning, logger: logger)
    }

    /// A bus call, its errors as API errors.
    func bus<T: Sendable>(_ work: (BrokerClient) async throws -> T) async throws -> T {
        do { return try await work(link) } catch { throw APIErrors.apiError(error) }
    }

    func body(_ request: Request) async throws -> Data {
        if let length = request.headers[.contentLength].flatMap(Int.init), length > maxBodyBytes { throw tooLarge() }
        do {
            let buffer = try await request.body.collect(upTo: maxBodyBytes)
            return Data(buffer.readableBytesView)
        } catch is NIOTooManyBytesError {
            throw tooLarge()
        }
    }

    func tooLarge() -> APIError {
        APIError(status: 413, message: "the body is larger than \(maxBodyBytes) bytes (CHORUS_GATEWAY_MAX_BODY)", code: "request_too_large")
    }

    /// The client's `Idempotency-Key` (OpenAI's clients send one, the same on
    /// every retry), so that a retried request gets the same job.
    func idempotencyKey(_ request: Request) -> String {
        if let key = request.headers[.idempotencyKey], (1...120).contains(key.utf8.count) { return "http:" + key }
        return BusClient.newSubmissionKey()
    }
}
