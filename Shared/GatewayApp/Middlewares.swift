import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import OpenAI
import Protocol
import ServiceKit

/// A request's context: Hummingbird's, and who is calling.
public struct GatewayContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// Set by `AuthMiddleware` for requests under /v1.
    var caller = Caller.local

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
    }
}

/// Who sent a request: the tenant of its API key, or (without a key file)
/// the one local user.
struct Caller: Sendable {
    /// The key's name, sent to the broker as the jobs' tenant; nil without keys.
    let tenant: String?
    /// Sees every tenant's jobs and the workers' hosts.
    let admin: Bool

    /// A gateway without API keys serves loopback only: one user, who sees everything it made.
    static let local = Caller(tenant: nil, admin: true)

    /// The jobs it may read and cancel.
    var scope: TenantScope { admin ? TenantScope(tenant: tenant, allTenants: true) : .only(tenant) }
}

/// Refuses what a browser could be tricked into sending, and paths that
/// could slip past a check made on another spelling of them:
/// - a path that is not in canonical form (`//`, `.` or `..` segments,
///   percent-escapes, backslashes): 400, never routed, so that every check
///   sees the path the router sees;
/// - a `Host` that is not this gateway's (DNS rebinding): 421;
/// - an `Origin` of another site (a page the user visits posting here): 403;
/// - a body that is not `application/json`: 415 (a form or `text/plain` post
///   needs no CORS preflight; JSON does).
struct RequestGuard: RouterMiddleware {
    typealias Context = GatewayContext
    /// host:port pairs (lowercased) a request may name; empty: any.
    let hosts: Set<String>

    /// The names this gateway answers to: its address, loopback names when it
    /// serves loopback, and `configured` (CHORUS_GATEWAY_HOSTS, each `host` or
    /// `host:port`). A gateway bound to every interface with none configured
    /// accepts any Host (it needs API keys there).
    static func allowedHosts(bound host: String, port: Int, configured: [String]) -> Set<String> {
        var names: Set<String> = []
        let wildcard = host == "0.0.0.0" || host == "::" || host.isEmpty
        if !wildcard { names.insert(hostPort(host, port)) }
        if wildcard || GatewayApp.isLoopback(host) {
            for name in ["localhost", "127.0.0.1", "::1"] { names.insert(hostPort(name, port)) }
        }
        for entry in configured {
            let e = entry.trimmingCharacters(in: .whitespaces).lowercased()
            guard !e.isEmpty else { continue }
            if e.hasPrefix("[") || e.filter({ $0 == ":" }).count != 1 {
                names.insert(e.hasPrefix("[") ? e : hostPort(e, port))
            } else {
                names.insert(e)
            }
            if !e.contains(":") { names.insert(hostPort(e, port)) }
        }
        return wildcard && configured.isEmpty ? [] : names
    }

    static func hostPort(_ host: String, _ port: Int) -> String {
        let h = host.lowercased()
        return h.contains(":") && !h.hasPrefix("[") ? "[\(h)]:\(port)" : "\(h):\(port)"
    }

    /// A Content-Type's media type, lowercased, without parameters or spaces.
    static func mediaType(_ header: String) -> String {
        var bytes: [UInt8] = []
        for b in header.utf8 {
            if b == UInt8(ascii: ";") { break }
            if b == UInt8(ascii: " ") || b == UInt8(ascii: "\t") { continue }
            bytes.append(b >= 65 && b <= 90 ? b + 32 : b)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Whether `path` is in the one form the router and the checks both see.
    static func isCanonical(_ path: String) -> Bool {
        // One pass over the bytes (on every request: no Foundation searches).
        var bytes = path.utf8.makeIterator()
        guard bytes.next() == UInt8(ascii: "/") else { return false }
        var segment = 0, dots = 0 // the current segment's length, and how many of it are dots
        for b in path.utf8.dropFirst() {
            switch b {
            case UInt8(ascii: "/"):
                if segment == 0 || dots == segment && segment <= 2 { return false } // "//", "/./", "/../"
                segment = 0
                dots = 0
            case UInt8(ascii: "%"), UInt8(ascii: "\\"):
                return false
            default:
                segment += 1
                if b == UInt8(ascii: ".") { dots += 1 }
            }
        }
        return !(segment > 0 && dots == segment && segment <= 2) // a trailing "/." or "/.."
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        guard Self.isCanonical(path) else {
            throw APIError(status: 400, message: "the path '\(path.prefix(200))' is not in canonical form (no '//', '.', '..', '%' escapes or '\\')",
                           code: "invalid_path")
        }
        if !hosts.isEmpty {
            let host = request.head.authority?.lowercased() ?? ""
            // A Host without a port names port 80.
            let named = host.hasSuffix("]") || !host.utf8.contains(UInt8(ascii: ":")) ? host + ":80" : host
            guard hosts.contains(named) else {
                throw APIError(status: 421, message: "this gateway does not serve the host '\(host.prefix(200))'; add it to CHORUS_GATEWAY_HOSTS if it is this gateway's name",
                               code: "misdirected_request")
            }
        }
        if let origin = request.headers[.origin], origin != "null" || request.method != .get {
            let site = origin.lowercased().split(separator: "/", omittingEmptySubsequences: true).dropFirst().first.map(String.init) ?? ""
            let own = request.head.authority?.lowercased() ?? ""
            guard site == own || (!hosts.isEmpty && hosts.contains(site)) else {
                throw APIError(status: 403, message: "a request from the page at '\(origin.prefix(200))' is refused: the gateway serves its own page and API clients only",
                               code: "cross_origin")
            }
        }
        if request.method == .post || request.method == .put || request.method == .patch {
            let type = Self.mediaType(request.headers[.contentType] ?? "")
            guard type == "application/json" else {
                throw APIError(status: 415, message: "a request body must be JSON, sent with Content-Type: application/json (got '\(type.prefix(100))')",
                               code: "unsupported_media_type")
            }
        }
        return try await next(request, context)
    }
}

/// API keys: every request under /v1 needs `Authorization: Bearer KEY`; the
/// key's tenant goes into the context. Without a key file every caller is
/// the one local user.
struct AuthMiddleware: RouterMiddleware {
    typealias Context = GatewayContext
    let keys: APIKeys?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        let path = request.uri.path
        if let keys, path == "/v1" || path.hasPrefix("/v1/") {
            guard let entry = keys.entry(authorization: request.headers[.authorization]) else {
                let sent = request.headers[.authorization] != nil
                throw APIError(status: 401, message: sent ? "the API key is not valid (keys are listed in the gateway's CHORUS_API_KEYS file)"
                                   : "no API key: send Authorization: Bearer KEY (a key from the gateway's CHORUS_API_KEYS file)",
                               code: "invalid_api_key")
            }
            context.caller = Caller(tenant: entry.name, admin: entry.admin)
        }
        return try await next(request, context)
    }
}

/// Every error as an OpenAI-style error object.
struct ErrorMiddleware: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let e as APIError {
            if e.status >= 500 { Log.warning("\(request.method) \(request.uri.path): \(e)") }
            return errorResponse(e)
        } catch let e as HTTPError {
            if e.status == .notFound {
                return errorResponse(APIError(status: 404, message: "no \(request.method) \(request.uri.path.prefix(200)); the API is under /v1 (see README)", code: "not_found"))
            }
            return errorResponse(APIError(status: Int(e.status.code), message: e.body ?? e.status.reasonPhrase, code: "http_\(e.status.code)"))
        } catch is NIOTooManyBytesError {
            return errorResponse(APIError(status: 413, message: "the body is too large", code: "request_too_large"))
        } catch {
            Log.warning("\(request.method) \(request.uri.path): \(error)")
            return errorResponse(APIErrors.apiError(error))
        }
    }
}

/// The web page's files, for every path outside the API.
struct WebMiddleware: RouterMiddleware {
    let files: FileMiddleware<Context, LocalFileSystem>
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if request.uri.path.hasPrefix("/v1/") || request.uri.path == "/healthz" { return try await next(request, context) }
        return try await files.handle(request, context: context, next: next)
    }
}
