import Foundation

// Bodies of the commands in docs/PROTOCOL.md. Keys are snake_case on the wire.

public struct EmptyBody: Codable, Sendable {
    public init() {}
}

/// Who a client acts for. A client that serves several tenants (the
/// gateway: one per API key) names the tenant; `allTenants` reads every job
/// of the sending client's own (an admin key at the gateway, the operator's
/// command line). A job is another client's, or another tenant's, and is
/// then "not found".
public struct TenantScope: Codable, Sendable, Equatable {
    public var tenant: String?
    public var allTenants: Bool?
    enum CodingKeys: String, CodingKey { case tenant, allTenants = "all_tenants" }
    public init(tenant: String? = nil, allTenants: Bool? = nil) {
        self.tenant = tenant
        self.allTenants = allTenants
    }
    /// One tenant's jobs (nil: the client's own, untenanted).
    public static func only(_ tenant: String?) -> TenantScope { TenantScope(tenant: tenant) }
    /// Every job of the sending client.
    public static let everyTenant = TenantScope(allTenants: true)

    public static let maxTenantBytes = 128

    /// Whether a job owned by `owner` is visible to `client` asking in this scope.
    public func sees(_ owner: JobOwner?, client: String) -> Bool {
        let owner = owner ?? JobOwner(client: JobOwner.localClient)
        return owner.client == client && (allTenants == true || owner.tenant == tenant)
    }
}

/// Who a job belongs to: the client that submitted it (its CURVE user id, or
/// `local` on a bus without CURVE) and the tenant it named, if any.
public struct JobOwner: Codable, Sendable, Equatable, CustomStringConvertible {
    public var client: String
    public var tenant: String?
    public init(client: String, tenant: String? = nil) {
        self.client = client
        self.tenant = tenant
    }
    /// The client of a bus without CURVE: every process on it is the same one.
    public static let localClient = "local"
    public var description: String { tenant.map { "\(client) (tenant \($0))" } ?? client }
}

public struct SubmitBody: Codable, Sendable {
    public var job: JobSpec
    /// Chosen by the client: a SUBMIT repeated with the same key (after a
    /// lost ACCEPTED, say) gets the job the first one created, not a second.
    /// Keys are the client's and tenant's own, and bound to the job they
    /// made: the same key with another job is refused (`conflict`).
    public var idempotencyKey: String?
    /// The tenant the job is for (the gateway's API key).
    public var tenant: String?
    /// Echoed in the reply, so that a client with several commands in flight
    /// matches each reply to its command.
    public var callID: String?
    enum CodingKeys: String, CodingKey { case job, idempotencyKey = "idempotency_key", tenant, callID = "call_id" }
    public init(job: JobSpec, idempotencyKey: String? = nil, tenant: String? = nil, callID: String? = nil) {
        self.job = job
        self.idempotencyKey = idempotencyKey
        self.tenant = tenant
        self.callID = callID
    }

    public static let maxKeyBytes = 128

    /// Checks the job, the key and the tenant.
    public func validate() throws(ProtocolError) {
        try job.validate()
        if let key = idempotencyKey, key.isEmpty || key.utf8.count > Self.maxKeyBytes {
            throw ProtocolError(.badRequest, "idempotency_key must be 1 to \(Self.maxKeyBytes) bytes")
        }
        try Self.validate(tenant: tenant)
    }

    public static func validate(tenant: String?) throws(ProtocolError) {
        if let tenant, tenant.isEmpty || tenant.utf8.count > TenantScope.maxTenantBytes {
            throw ProtocolError(.badRequest, "tenant must be 1 to \(TenantScope.maxTenantBytes) bytes")
        }
    }
}

/// RESULT and CANCEL of a job (and the ACCEPTED answering a SUBMIT).
public struct JobIDBody: Codable, Sendable {
    public var jobID: String
    public var tenant: String?
    public var allTenants: Bool?
    public var callID: String?
    enum CodingKeys: String, CodingKey { case jobID = "job_id", tenant, allTenants = "all_tenants", callID = "call_id" }
    public init(jobID: String, scope: TenantScope = TenantScope(), callID: String? = nil) {
        self.jobID = jobID
        tenant = scope.tenant
        allTenants = scope.allTenants
        self.callID = callID
    }
    public var scope: TenantScope { TenantScope(tenant: tenant, allTenants: allTenants) }
}

/// STATUS: the jobs in flight it lists are those the scope sees.
public struct StatusRequest: Codable, Sendable {
    public var tenant: String?
    public var allTenants: Bool?
    public var callID: String?
    enum CodingKeys: String, CodingKey { case tenant, allTenants = "all_tenants", callID = "call_id" }
    public init(scope: TenantScope = TenantScope(), callID: String? = nil) {
        tenant = scope.tenant
        allTenants = scope.allTenants
        self.callID = callID
    }
    public var scope: TenantScope { TenantScope(tenant: tenant, allTenants: allTenants) }
}

/// A worker's HEARTBEAT: its counters since it started (the broker's
/// metrics add up what grew since the last one).
public struct HeartbeatBody: Codable, Sendable, Equatable {
    public var requests: Int?
    public var tokensGenerated: Int?
    public var promptTokens: Int?
    public var promptTokensReused: Int?
    enum CodingKeys: String, CodingKey {
        case requests, tokensGenerated = "tokens_generated", promptTokens = "prompt_tokens", promptTokensReused = "prompt_tokens_reused"
    }
    public init(requests: Int? = nil, tokensGenerated: Int? = nil, promptTokens: Int? = nil, promptTokensReused: Int? = nil) {
        self.requests = requests
        self.tokensGenerated = tokensGenerated
        self.promptTokens = promptTokens
        self.promptTokensReused = promptTokensReused
    }
}

/// The broker's CANCEL to a worker: stop this request.
public struct RequestIDBody: Codable, Sendable {
    public var requestID: String
    enum CodingKeys: String, CodingKey { case requestID = "request_id" }
    public init(requestID: String) { self.requestID = requestID }
}

/// A REQUEST: `payload` is what the role's handler reads (a `StagePayload`,
/// a memory or index request, any JSON for echo), typed where the request is
/// made and where it is used, and carried as bytes between (`RawJSON`).
public struct RequestBody<Payload> {
    public var requestID: String
    public var payload: Payload
    /// Seconds the request may wait for a worker (client requests only).
    public var timeout: Double?
    enum CodingKeys: String, CodingKey { case requestID = "request_id", payload, timeout }
    public init(requestID: String, payload: Payload, timeout: Double? = nil) {
        self.requestID = requestID
        self.payload = payload
        self.timeout = timeout
    }
}

extension RequestBody: Encodable where Payload: Encodable {}
extension RequestBody: Decodable where Payload: Decodable {}
extension RequestBody: Sendable where Payload: Sendable {}

public struct PartialBody: Codable, Sendable {
    public var requestID: String
    public var text: String
    enum CodingKeys: String, CodingKey { case requestID = "request_id", text }
    public init(requestID: String, text: String) {
        self.requestID = requestID
        self.text = text
    }
}

/// A FINAL: the handler's result, typed where it is made and where it is read.
public struct FinalBody<Result> {
    public var requestID: String
    public var result: Result
    enum CodingKeys: String, CodingKey { case requestID = "request_id", result }
    public init(requestID: String, result: Result) {
        self.requestID = requestID
        self.result = result
    }
}

extension FinalBody: Encodable where Result: Encodable {}
extension FinalBody: Decodable where Result: Decodable {}
extension FinalBody: Sendable where Result: Sendable {}

/// The bytes of one JSON value, carried as they are: a payload or a result
/// that passes through a process which does not read it (the router, the
/// worker's socket thread). It is made by one encode where its value is made
/// and read by one decode where the value is used; nothing in between parses it.
public struct RawJSON: Sendable, Equatable, CustomStringConvertible {
    public let bytes: Data
    /// Bytes already checked to be one JSON value (a member of a scanned body).
    public init(checked bytes: Data) { self.bytes = bytes }
    /// `value` encoded with Chorus's one configuration.
    public init<T: Encodable>(encoding value: T) throws { bytes = try JSONCoding.encoder().encode(value) }
    /// The value as `T`.
    public func decode<T: Decodable>(_ type: T.Type) throws -> T { try JSONDecoder().decode(T.self, from: bytes) }
    public var description: String { String(decoding: bytes, as: UTF8.self) }
}

extension Envelope {
    /// A REQUEST carrying a payload already encoded, spliced into the body
    /// as it is (the body `RequestBody` would write: keys sorted).
    public static func requestFrames(role: String, requestID: String, payload: RawJSON) -> [Data] {
        var body = Data(#"{"payload":"#.utf8)
        body.append(payload.bytes)
        body.append(contentsOf: #","request_id":"#.utf8)
        body.append(JSONCoding.quoted(requestID))
        body.append(UInt8(ascii: "}"))
        return [Header(.request, role: role).frame, body]
    }

    /// A FINAL carrying a result already encoded (keys sorted).
    public static func finalFrames(requestID: RawJSON, result: RawJSON) -> [Data] {
        var body = Data(#"{"request_id":"#.utf8)
        body.append(requestID.bytes)
        body.append(contentsOf: #","result":"#.utf8)
        body.append(result.bytes)
        body.append(UInt8(ascii: "}"))
        return [Header(.final).frame, body]
    }

    /// A FINAL with `result` encoded in it: one encode of the whole body.
    public static func finalFrames<Result: Encodable>(requestID: String, result: Result) -> [Data] {
        frames(.final, FinalBody(requestID: requestID, result: result))
    }
}

public struct ErrorBody: Codable, Sendable, Error, CustomStringConvertible {
    /// What the error answers: a REQUEST by its id, a command by its call id.
    public var requestID: String?
    public var callID: String?
    public var code: ErrorCode
    public var message: String
    enum CodingKeys: String, CodingKey { case requestID = "request_id", callID = "call_id", code, message }
    public init(requestID: String? = nil, callID: String? = nil, code: ErrorCode, message: String) {
        self.requestID = requestID
        self.callID = callID
        self.code = code
        self.message = message
    }
    public init(_ error: ProtocolError, requestID: String? = nil) {
        self.init(requestID: requestID, code: error.code, message: error.message)
    }
    public var description: String { message }
}

public struct ReadyBody: Codable, Sendable {
    public var workerID: String
    public var host: String
    public var pid: Int
    public var model: String
    /// Requests the worker takes at once (default 1).
    public var capacity: Int?
    enum CodingKeys: String, CodingKey { case workerID = "worker_id", host, pid, model, capacity }
    public init(workerID: String, host: String, pid: Int, model: String, capacity: Int? = nil) {
        self.workerID = workerID
        self.host = host
        self.pid = pid
        self.model = model
        self.capacity = capacity
    }
}

/// The broker's answer to STATUS.
public struct StatusBody: Codable, Sendable {
    public struct Worker: Codable, Sendable {
        public var workerID: String
        public var role: Role
        public var state: WorkerState
        public var host: String
        public var pid: Int
        public var model: String
        public var requestID: String?
        public var served: Int
        public var idleSeconds: Double
        /// Requests it takes at once (its slots), and how many it has now.
        public var capacity: Int?
        public var inFlight: Int?
        enum CodingKeys: String, CodingKey {
            case workerID = "worker_id", role, state, host, pid, model, requestID = "request_id", served
            case idleSeconds = "idle_seconds", capacity, inFlight = "in_flight"
        }
        public init(workerID: String, role: Role, state: WorkerState, host: String, pid: Int, model: String,
                    requestID: String?, served: Int, idleSeconds: Double, capacity: Int? = nil, inFlight: Int? = nil) {
            self.capacity = capacity
            self.inFlight = inFlight
            self.workerID = workerID
            self.role = role
            self.state = state
            self.host = host
            self.pid = pid
            self.model = model
            self.requestID = requestID
            self.served = served
            self.idleSeconds = idleSeconds
        }
    }

    public var workers: [Worker]
    /// Requests waiting per role.
    public var queues: [String: Int]
    /// Jobs accepted and not finished.
    public var jobsInFlight: [String]
    public var roles: [String]
    public var uptimeSeconds: Double
    public var callID: String?
    enum CodingKeys: String, CodingKey {
        case workers, queues, jobsInFlight = "jobs_in_flight", roles, uptimeSeconds = "uptime_seconds", callID = "call_id"
    }
    public init(workers: [Worker], queues: [String: Int], jobsInFlight: [String], roles: [String], uptimeSeconds: Double,
                callID: String? = nil) {
        self.callID = callID
        self.workers = workers
        self.queues = queues
        self.jobsInFlight = jobsInFlight
        self.roles = roles
        self.uptimeSeconds = uptimeSeconds
    }
}

public struct ResultBody: Codable, Sendable {
    public var job: JobRecord
    public var callID: String?
    enum CodingKeys: String, CodingKey { case job, callID = "call_id" }
    public init(job: JobRecord, callID: String? = nil) {
        self.job = job
        self.callID = callID
    }
}
