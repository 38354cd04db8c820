import Foundation
import Hummingbird
import Protocol

/// GET /v1/models: `chorus` (a job) and each model role the broker serves.
struct ModelsController: Sendable {
    let app: GatewayApp

    func register(on router: Router<GatewayContext>) {
        router.get("/v1/models") { _, context in try await models(context.caller) }
    }

    func models(_ caller: Caller) async throws -> Response {
        let s = try await app.bus { try await $0.status(scope: caller.scope) }
        let created = Int(Date().timeIntervalSince1970 - s.uptimeSeconds)
        func model(_ id: String, _ workers: [StatusBody.Worker], about: String) -> JSONValue {
            .object(["id": .string(id), "object": .string("model"), "created": .integer(Int64(created)), "owned_by": .string("chorus"),
                     "chorus": .object(["workers": .integer(Int64(workers.count)), "description": .string(about),
                                        "models": .array(Set(workers.map(\.model)).sorted().map(JSONValue.string))])])
        }
        var data = [model("chorus", s.workers.filter { StageKind(modelRole: $0.role) != nil },
                          about: "a job: n chains of generate, verify, refine and judge, majority-voted")]
        for role in GatewayApp.roleModels where s.roles.contains(role) {
            let workers = s.workers.filter { $0.role.rawValue == role }
            if role == Role.echo.rawValue && workers.isEmpty { continue }
            data.append(model(role, workers, about: role == Role.echo.rawValue ? "returns the request it is sent" : "one request to a \(role)"))
        }
        return json(.object(["object": .string("list"), "data": .array(data)]))
    }
}
