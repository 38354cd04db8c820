import Foundation
import Hummingbird
import OpenAI
import Protocol
import ServiceKit

/// /v1/jobs: submit a job, read it, cancel it, follow its events.
struct JobsController: Sendable {
    let app: GatewayApp

    func register(on router: Router<GatewayContext>) {
        router.post("/v1/jobs") { request, context in try await submitJob(request, context.caller) }
        router.get("/v1/jobs/:id") { _, context in try await job(context.parameters.require("id"), context.caller) }
        router.delete("/v1/jobs/:id") { _, context in try await cancel(context.parameters.require("id"), context.caller) }
        router.get("/v1/jobs/:id/events") { _, context in try await jobEvents(context.parameters.require("id"), context.caller) }
    }

    func submitJob(_ request: Request, _ caller: Caller) async throws -> Response {
        let data = try await app.body(request)
        let spec: JobSpec
        do { spec = try JSONDecoder().decode(JobSpec.self, from: data) } catch let e as DecodingError {
            throw APIError.invalid("the body is not a job: \(APIErrors.describe(e)); send {\"question\": ..., \"samples\"?, \"rounds\"?, \"seed\"?, \"no_memory\"?}")
        } catch {
            throw APIError.invalid("the body is not JSON: \(error)")
        }
        do { try spec.validate() } catch { throw APIError.invalid(error.message) }
        let key = app.idempotencyKey(request)
        let id = try await app.bus { try await $0.submit(spec, idempotencyKey: key, tenant: caller.tenant) }
        Log.info("job \(id) submitted over HTTP")
        return json(.object(["id": .string(id), "state": .string("running"), "job": .string("/v1/jobs/\(id)"),
                             "events": .string("/v1/jobs/\(id)/events")]), status: .accepted, headers: [.chorusJob: id])
    }

    func job(_ id: String, _ caller: Caller) async throws -> Response {
        let record = try await app.bus { try await $0.result(id, scope: caller.scope) }
        return try json(JSONValue(encoding: record))
    }

    func cancel(_ id: String, _ caller: Caller) async throws -> Response {
        let record = try await app.bus { try await $0.cancel(id, scope: caller.scope) }
        return try json(JSONValue(encoding: record))
    }

    /// A job's events as server-sent events named by kind: those so far and
    /// new ones until the job ends; for a finished job, its end at once.
    func jobEvents(_ id: String, _ caller: Caller) async throws -> Response {
        let record = try await app.bus { try await $0.result(id, scope: caller.scope) }
        let events = app.link.events(of: id), keepAlive = app.keepAlive
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
}
