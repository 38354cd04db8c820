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
/// is `BrokerLink`'s.
struct Routes: Sendable {
    let link: BrokerLink
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
    static let roleModels = (Role.models + [.echo]).map(\.rawValue)

    func router() -> Router<Context> {
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
        router.get("/v1/models") { _, context in try await models(context.caller) }
        router.post("/v1/chat/completions") { request, context in try await chat(request, context.caller) }
        router.post("/v1/jobs") { request, context in try await submitJob(request, context.caller) }
        router.get("/v1/jobs/:id") { _, context in try await job(context.parameters.require("id"), context.caller) }
        router.delete("/v1/jobs/:id") { _, context in try await cancel(context.parameters.require("id"), context.caller) }
        router.get("/v1/jobs/:id/events") { _, context in try await jobEvents(context.parameters.require("id"), context.caller) }
        router.get("/v1/status") { _, context in try await status(context.caller) }
        return router
    }

    // MARK: Models and status

    func models(_ caller: Caller) async throws -> Response {
        let s = try await bus { try await $0.status(scope: caller.scope) }
        let created = Int(Date().timeIntervalSince1970 - s.uptimeSeconds)
        func model(_ id: String, _ workers: [StatusBody.Worker], about: String) -> JSONValue {
            .object(["id": .string(id), "object": .string("model"), "created": .integer(Int64(created)), "owned_by": .string("chorus"),
                     "chorus": .object(["workers": .integer(Int64(workers.count)), "description": .string(about),
                                        "models": .array(Set(workers.map(\.model)).sorted().map(JSONValue.string))])])
        }
        var data = [model("chorus", s.workers.filter { StageKind(modelRole: $0.role) != nil },
                          about: "a job: n chains of generate, verify, refine and judge, majority-voted")]
        for role in Self.roleModels where s.roles.contains(role) {
            let workers = s.workers.filter { $0.role.rawValue == role }
            if role == Role.echo.rawValue && workers.isEmpty { continue }
            data.append(model(role, workers, about: role == Role.echo.rawValue ? "returns the request it is sent" : "one request to a \(role)"))
        }
        return json(.object(["object": .string("list"), "data": .array(data)]))
    }

    /// Workers, queues and the caller's jobs in flight; the workers' hosts
    /// and process ids only for an admin key.
    func status(_ caller: Caller) async throws -> Response {
        var s = try await bus { try await $0.status(scope: caller.scope) }
        s.callID = nil
        if !caller.admin {
            for i in s.workers.indices {
                s.workers[i].host = ""
                s.workers[i].pid = 0
            }
        }
        return try json(JSONValue(encoding: s))
    }

    // MARK: Chat completions

    func chat(_ request: Request, _ caller: Caller) async throws -> Response {
        let chat = try ChatRequest.parse(try await body(request))
        if chat.model == "chorus" { return try await chatJob(chat, idempotencyKey: idempotencyKey(request), caller: caller) }
        if Self.roleModels.contains(chat.model) { return try await chatRole(chat) }
        throw APIError(status: 404, message: "the model '\(chat.model.prefix(100))' does not exist; the models are chorus, \(Self.roleModels.dropLast().joined(separator: ", ")) (GET /v1/models)",
                       code: "model_not_found", param: "model")
    }

    func chatJob(_ chat: ChatRequest, idempotencyKey: String, caller: Caller) async throws -> Response {
        let spec = try chat.jobSpec()
        let id = try await bus { try await $0.submit(spec, idempotencyKey: idempotencyKey, tenant: caller.tenant) }
        Log.info("chat job \(id): samples \(spec.samples), rounds \(spec.rounds)\(chat.wantsStream ? ", streamed" : "")")
        let events = link.events(of: id)
        let created = Int(Date().timeIntervalSince1970)
        guard chat.wantsStream else {
            guard await Self.ends(events, within: timeout) else {
                throw APIError(status: 504, message: "job \(id) is still running after \(Int(timeout)) s; it goes on: GET /v1/jobs/\(id)",
                               code: "timeout", retryable: false)
            }
            let record = try await bus { try await $0.result(id, scope: caller.scope) }
            try Self.check(record)
            return json(ChatResponse.completion(job: record, created: created), headers: [.chorusJob: id])
        }
        let link = self.link, keepAlive = self.keepAlive
        return sse(headers: [.chorusJob: id]) { writer in
            var translator = JobChatStream(jobID: id, rounds: spec.rounds, created: created)
            for c in translator.opening(samples: spec.samples, jobID: id) { try await writer.write(SSE.event(c)) }
            for await e in pinging(events, every: keepAlive) {
                guard let e else { try await writer.write(SSE.ping); continue }
                for c in translator.translate(e) { try await writer.write(SSE.event(c)) }
            }
            do {
                let record = try await link.result(id, scope: caller.scope)
                try Self.check(record)
                for c in translator.closing(record, includeUsage: chat.wantsUsageChunk) { try await writer.write(SSE.event(c)) }
            } catch {
                try await writer.write(SSE.event(Self.apiError(error).body))
            }
            try await writer.write(SSE.done)
        }
    }

    /// One request to a role's worker.
    func chatRole(_ chat: ChatRequest) async throws -> Response {
        let role = chat.model
        let payload = try JSONValue(encoding: try chat.stagePayload(for: StageKind(modelRole: Role(role)) ?? .generate))
        let id = "chatcmpl-r" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        let created = Int(Date().timeIntervalSince1970)
        let timeout = self.timeout
        guard chat.wantsStream else {
            let result = try await bus { try await $0.request(role: role, payload: payload, queueTimeout: min(timeout, 60), timeout: timeout) }
            return json(ChatResponse.completion(role: role, id: id, result: Self.stageResult(result), created: created))
        }
        enum Output: Sendable { case text(String), final(JSONValue), failed(APIError) }
        let (outputs, feed) = AsyncStream<Output>.makeStream()
        // A client that leaves ends the stream, which cancels the request: its worker stops.
        let work = Task {
            do {
                let result = try await link.request(role: role, payload: payload, queueTimeout: min(timeout, 60), timeout: timeout) {
                    feed.yield(.text($0))
                }
                feed.yield(.final(result))
            } catch {
                feed.yield(.failed(Self.apiError(error)))
            }
            feed.finish()
        }
        feed.onTermination = { _ in work.cancel() }
        // The first output decides the status: an error before any text is an
        // HTTP error (keep-alives before it are not sent: the response has not begun).
        var iterator = pinging(outputs, every: keepAlive).makeAsyncIterator()
        var firstOutput = await iterator.next()
        while case .some(.none) = firstOutput { firstOutput = await iterator.next() }
        if case let .some(.some(.failed(e))) = firstOutput { throw e }
        let first = firstOutput
        let chunks = ChunkMaker(id: id, model: role, created: created)
        let box = IteratorBox(iterator)
        return sse { writer in
            try await writer.write(SSE.event(chunks.chunk(index: 0, role: true, content: "")))
            var next = first
            while let ticked = next {
                guard let output = ticked else {
                    try await writer.write(SSE.ping)
                    next = await box.next()
                    continue
                }
                switch output {
                case let .text(t): try await writer.write(SSE.event(chunks.chunk(index: 0, content: t)))
                case let .final(value):
                    let r = Self.stageResult(value)
                    try await writer.write(SSE.event(chunks.chunk(index: 0, finish: ChatResponse.finishReason(r.stopReason),
                                                                  extras: ChatResponse.roleExtras(r))))
                    if chat.wantsUsageChunk {
                        try await writer.write(SSE.event(chunks.usageChunk(ChatResponse.usage(prompt: r.promptTokens, completion: r.completionTokens))))
                    }
                case let .failed(e): try await writer.write(SSE.event(e.body))
                }
                next = await box.next()
            }
            try await writer.write(SSE.done)
        }
    }

    /// A role's result as a stage result; a result of another shape (echo's)
    /// becomes its JSON text.
    static func stageResult(_ value: JSONValue) -> StageResult {
        if let r = try? value.decode(as: StageResult.self) { return r }
        let encoder = JSONCoding.encoder()
        let text = (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        return StageResult(text: text, prompt: "", sampling: SamplingRecord(temperature: 0, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, maxTokens: 0, seed: 0),
                           model: "echo", promptTokens: 0, completionTokens: 0, promptSeconds: 0, generationSeconds: 0, stopReason: "echo")
    }

    // MARK: Jobs

    func submitJob(_ request: Request, _ caller: Caller) async throws -> Response {
        let data = try await body(request)
        let spec: JobSpec
        do { spec = try JSONDecoder().decode(JobSpec.self, from: data) } catch let e as DecodingError {
            throw APIError.invalid("the body is not a job: \(Self.describe(e)); send {\"question\": ..., \"samples\"?, \"rounds\"?, \"seed\"?, \"no_memory\"?}")
        } catch {
            throw APIError.invalid("the body is not JSON: \(error)")
        }
        do { try spec.validate() } catch { throw APIError.invalid(error.message) }
        let key = idempotencyKey(request)
        let id = try await bus { try await $0.submit(spec, idempotencyKey: key, tenant: caller.tenant) }
        Log.info("job \(id) submitted over HTTP")
        return json(.object(["id": .string(id), "state": .string("running"), "job": .string("/v1/jobs/\(id)"),
                             "events": .string("/v1/jobs/\(id)/events")]), status: .accepted, headers: [.chorusJob: id])
    }

    func job(_ id: String, _ caller: Caller) async throws -> Response {
        let record = try await bus { try await $0.result(id, scope: caller.scope) }
        return try json(JSONValue(encoding: record))
    }

    func cancel(_ id: String, _ caller: Caller) async throws -> Response {
        let record = try await bus { try await $0.cancel(id, scope: caller.scope) }
        return try json(JSONValue(encoding: record))
    }

    /// A job's events as server-sent events named by kind: those so far and
    /// new ones until the job ends; for a finished job, its end at once.
    func jobEvents(_ id: String, _ caller: Caller) async throws -> Response {
        let record = try await bus { try await $0.result(id, scope: caller.scope) }
        let events = link.events(of: id), keepAlive = self.keepAlive
        return sse(headers: [.chorusJob: id]) { writer in
            if record.state != .running {
                let kind: JobEvent.Kind = record.state == .done ? .jobDone : record.state == .failed ? .jobFailed : .jobCancelled
                try await writer.write(SSE.event(encoding: JobEvent(jobID: id, kind: kind, answer: record.answer, error: record.error,
                                                                    time: record.finishedAt ?? record.createdAt), name: kind.rawValue))
                return
            }
            for await e in pinging(events, every: keepAlive) {
                guard let e else { try await writer.write(SSE.ping); continue }
                try await writer.write(SSE.event(encoding: e, name: e.kind.rawValue))
            }
        }
    }

    // MARK: Helpers

    /// A bus call, its errors as API errors.
    func bus<T: Sendable>(_ work: (BrokerLink) async throws -> T) async throws -> T {
        do { return try await work(link) } catch { throw Self.apiError(error) }
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

    /// Whether `events` ends within `seconds`.
    static func ends(_ events: AsyncStream<JobEvent>, within seconds: Double) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                for await _ in events {}
                return true
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(seconds))
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }

    /// A job that did not finish well is an error.
    static func check(_ record: JobRecord) throws {
        switch record.state {
        case .done: return
        case .failed:
            throw APIError(status: 502, message: "job \(record.id) failed: \(record.error ?? "unknown error")", code: "job_failed", retryable: false)
        case .cancelled:
            throw APIError(status: 409, message: "job \(record.id) was cancelled", code: "job_cancelled", retryable: false)
        case .running:
            throw APIError(status: 504, message: "job \(record.id) is still running", code: "timeout", retryable: false)
        }
    }

    static func apiError(_ error: Error) -> APIError {
        switch error {
        case let e as APIError: return e
        case let e as ClientError:
            switch e {
            case .noReply: return APIError(status: 503, message: "\(e)", code: "broker_unavailable")
            case .refused: return APIError(status: 503, message: "the broker refused the gateway: \(e)", code: "broker_refused", retryable: false)
            case let .unexpected(m): return APIError(status: 502, message: m, code: "bad_gateway")
            case let .remote(body):
                let m = body.message
                switch body.code {
                case .notFound: return APIError(status: 404, message: m, code: "not_found")
                case .unknownRole: return APIError(status: 404, message: m, code: "model_not_found", param: "model")
                case .noWorker: return APIError(status: 503, message: m, code: "no_worker")
                case .busy: return APIError(status: 429, message: m, code: "busy")
                case .tooLarge: return APIError(status: 413, message: m, code: "request_too_large")
                case .conflict: return APIError(status: 422, message: m, code: "idempotency_key_reused", retryable: false)
                case .contextLengthExceeded: return APIError(status: 400, message: m, code: "context_length_exceeded", param: "messages")
                case .badRequest, .malformed: return APIError(status: 400, message: m, code: "invalid_request")
                case .workerFailed: return APIError(status: 502, message: m, code: "worker_failed", retryable: false)
                case .cancelled: return APIError(status: 409, message: m, code: "cancelled", retryable: false)
                case .unauthorized: return APIError(status: 503, message: "the broker refused the gateway: \(m)", code: "broker_refused", retryable: false)
                default: return APIError(status: 502, message: m, code: body.code.rawValue)
                }
            }
        default: return APIError(status: 500, message: "\(error)", code: "internal_error")
        }
    }

    static func describe(_ e: DecodingError) -> String {
        switch e {
        case let .keyNotFound(key, _): return "'\(key.stringValue)' is required"
        case let .typeMismatch(_, c), let .valueNotFound(_, c), let .dataCorrupted(c):
            let at = c.codingPath.map(\.stringValue).joined(separator: ".")
            return at.isEmpty ? "not valid JSON" : "'\(at)' is not valid: \(c.debugDescription)"
        @unknown default: return "\(e)"
        }
    }
}

// MARK: Responses

func json(_ value: JSONValue, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
    let encoder = JSONCoding.encoder()
    let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
    var h = headers
    h[.contentType] = "application/json"
    return Response(status: status, headers: h, body: .init(byteBuffer: ByteBuffer(bytes: data)))
}

/// A server-sent event stream; a client that leaves ends it quietly.
func sse(headers: HTTPFields = [:], _ write: @escaping @Sendable (inout SSEWriter) async throws -> Void) -> Response {
    var h = headers
    h[.contentType] = "text/event-stream"
    h[.cacheControl] = "no-cache"
    return Response(status: .ok, headers: h, body: ResponseBody { writer in
        var w = SSEWriter(writer: writer)
        do { try await write(&w) } catch {
            Log.debug("an event stream ended early: \(error)")
            return
        }
        try await w.writer.finish(nil)
    })
}

/// The elements of `stream`, with a `nil` each time `interval` passes (a
/// keep-alive for the stream's reader), ending when `stream` ends or the
/// reader leaves. Without an interval, the elements alone.
func pinging<T: Sendable>(_ stream: AsyncStream<T>, every interval: Duration?) -> AsyncStream<T?> {
    let (out, feed) = AsyncStream<T?>.makeStream()
    let task = Task {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await element in stream { feed.yield(element) }
            }
            if let interval {
                group.addTask {
                    while (try? await Task.sleep(for: interval)) != nil { feed.yield(nil) }
                }
            }
            await group.next()
            group.cancelAll()
        }
        feed.finish()
    }
    feed.onTermination = { _ in task.cancel() }
    return out
}

struct SSEWriter {
    var writer: any ResponseBodyWriter
    mutating func write(_ text: String) async throws { try await writer.write(ByteBuffer(string: text)) }
}

final class IteratorBox<I: AsyncIteratorProtocol>: @unchecked Sendable {
    var iterator: I
    init(_ iterator: I) { self.iterator = iterator }
    func next() async -> I.Element? { try? await iterator.next() }
}

extension HTTPField.Name {
    static let chorusJob = HTTPField.Name("X-Chorus-Job")!
    static let idempotencyKey = HTTPField.Name("Idempotency-Key")!
    static let shouldRetry = HTTPField.Name("x-should-retry")!
}

func errorResponse(_ e: APIError) -> Response {
    var headers: HTTPFields = [.shouldRetry: e.retryable ? "true" : "false"]
    if e.status == 401 { headers[.wwwAuthenticate] = "Bearer" }
    // Busy (the broker's job or request limits): when to try again.
    if e.status == 429 { headers[.retryAfter] = "1" }
    return json(e.body, status: HTTPResponse.Status(code: e.status), headers: headers)
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
            return errorResponse(Routes.apiError(error))
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
