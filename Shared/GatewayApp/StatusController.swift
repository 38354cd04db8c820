import Hummingbird
import Protocol

/// GET /v1/status: workers, queues and the caller's jobs in flight.
struct StatusController: Sendable {
    let app: GatewayApp

    func register(on router: Router<GatewayContext>) {
        router.get("/v1/status") { _, context in try await status(context.caller) }
    }

    /// Workers, queues and the caller's jobs in flight; the workers' hosts
    /// and process ids only for an admin key.
    func status(_ caller: Caller) async throws -> Response {
        var s = try await app.bus { try await $0.status(scope: caller.scope) }
        s.callID = nil
        if !caller.admin {
            for i in s.workers.indices {
                s.workers[i].host = ""
                s.workers[i].pid = 0
            }
        }
        return try json(JSONValue(encoding: s))
    }
}
