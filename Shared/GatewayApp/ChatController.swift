import Foundation
import Hummingbird
import OpenAI
import Protocol
import ServiceKit

/// POST /v1/chat/completions: model `chorus` runs a job (streamed as its
/// first chain's text, or answered when it ends); a role's name sends one
/// request to that role.
struct ChatController: Sendable {
    let app: GatewayApp

    func register(on router: Router<GatewayContext>) {
        router.post("/v1/chat/completions") { request, context in try await chat(request, context.caller) }
    }

    func chat(_ request: Request, _ caller: Caller) async throws -> Response {
        let chat = try ChatRequest.parse(try await app.body(request))
        if chat.model == "chorus" { return try await chatJob(chat, idempotencyKey: app.idempotencyKey(request), caller: caller) }
        if GatewayApp.roleModels.contains(chat.model) { return try await chatRole(chat) }
        throw APIError(status: 404, message: "the model '\(chat.model.prefix(100))' does not exist; the models are chorus, \(GatewayApp.roleModels.dropLast().joined(separator: ", ")) (GET /v1/models)",
                       code: "model_not_found", param: "model")
    }

    func chatJob(_ chat: ChatRequest, idempotencyKey: String, caller: Caller) async throws -> Response {
        let spec = try chat.jobSpec()
        let id = try await app.bus { try await $0.submit(spec, idempotencyKey: idempotencyKey, tenant: caller.tenant) }
        Log.info("chat job \(id): samples \(spec.samples), rounds \(spec.rounds)\(chat.wantsStream ? ", streamed" : "")")
        let events = app.link.events(of: id)
        let created = Int(Date().timeIntervalSince1970)
        guard chat.wantsStream else {
            guard await ChatController.ends(events, within: app.timeout) else {
                throw APIError(status: 504, message: "job \(id) is still running after \(Int(app.timeout)) s; it goes on: GET /v1/jobs/\(id)",
                               code: "timeout", retryable: false)
            }
            let record = try await app.bus { try await $0.result(id, scope: caller.scope) }
            try ChatController.check(record)
            return json(ChatResponse.completion(job: record, created: created), headers: [.chorusJob: id])
        }
        let link = app.link, keepAlive = app.keepAlive
        return sse(headers: [.chorusJob: id]) { writer in
            var translator = JobChatStream(jobID: id, rounds: spec.rounds, created: created)
            for c in translator.opening(samples: spec.samples, jobID: id) { try await writer.write(SSE.event(c)) }
            for await e in pinging(events, every: keepAlive) {
                guard let e else { try await writer.write(SSE.ping); continue }
                for c in translator.translate(e) { try await writer.write(SSE.event(c)) }
            }
            do {
                let record = try await link.result(id, scope: caller.scope)
                try ChatController.check(record)
                for c in translator.closing(record, includeUsage: chat.wantsUsageChunk) { try await writer.write(SSE.event(c)) }
            } catch {
                try await writer.write(SSE.event(APIErrors.apiError(error).body))
            }
            try await writer.write(SSE.done)
        }
    }

    /// One request to a role's worker.
    func chatRole(_ chat: ChatRequest) async throws -> Response {
        let role = chat.model
        let payload = try chat.stagePayload(for: StageKind(modelRole: Role(role)) ?? .generate)
        let id = "chatcmpl-r" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        let created = Int(Date().timeIntervalSince1970)
        let timeout = app.timeout
        guard chat.wantsStream else {
            let result = try await app.bus {
                try await $0.request(role: role, payload: payload, as: RoleAnswer.self, queueTimeout: min(timeout, 60), timeout: timeout)
            }
            return json(ChatResponse.completion(role: role, id: id, result: result.stageResult, created: created))
        }
        enum Output: Sendable { case text(String), final(RoleAnswer), failed(APIError) }
        let (outputs, feed) = AsyncStream<Output>.makeStream()
        // A client that leaves ends the stream, which cancels the request: its worker stops.
        let work = Task {
            do {
                let result = try await app.link.request(role: role, payload: payload, as: RoleAnswer.self, queueTimeout: min(timeout, 60),
                                                        timeout: timeout) {
                    feed.yield(.text($0))
                }
                feed.yield(.final(result))
            } catch {
                feed.yield(.failed(APIErrors.apiError(error)))
            }
            feed.finish()
        }
        feed.onTermination = { _ in work.cancel() }
        // The first output decides the status: an error before any text is an
        // HTTP error (keep-alives before it are not sent: the response has not begun).
        var iterator = pinging(outputs, every: app.keepAlive).makeAsyncIterator()
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
                    let r = value.stageResult
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

    /// What a role answers: a stage's result, or a result of another shape
    /// (echo's), shown as its JSON text. Decoded once, from the FINAL's bytes.
    enum RoleAnswer: Decodable, Sendable {
        case stage(StageResult)
        case other(JSONValue)

        init(from decoder: Decoder) throws {
            if let r = try? StageResult(from: decoder) { self = .stage(r) } else { self = .other(try JSONValue(from: decoder)) }
        }

        var stageResult: StageResult {
            switch self {
            case let .stage(r): return r
            case let .other(value): return ChatController.echoResult(value)
            }
        }
    }

    static func echoResult(_ value: JSONValue) -> StageResult {
        let text = (try? JSONCoding.string(value)) ?? ""
        return StageResult(text: text, prompt: "", sampling: SamplingRecord(temperature: 0, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, maxTokens: 0, seed: 0),
                           model: "echo", promptTokens: 0, completionTokens: 0, promptSeconds: 0, generationSeconds: 0, stopReason: "echo")
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
}
