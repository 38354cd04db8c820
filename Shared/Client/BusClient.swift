import Bus
import Foundation
import Protocol
import ServiceKit

public enum ClientError: Error, CustomStringConvertible {
    case noReply(endpoint: String, seconds: Double)
    /// The broker's CURVE handshake refused this client.
    case refused(endpoint: String, reason: String)
    case remote(ErrorBody)
    case unexpected(String)

    public var description: String {
        switch self {
        case let .noReply(endpoint, seconds):
            return "no reply from the broker at \(endpoint) within \(Int(seconds)) s; is it running? (start it with deploy/up.sh)"
        case let .refused(endpoint, reason):
            return "\(reason) at \(endpoint): list this client's public key (the .pub beside CHORUS_CLIENT_KEY_FILE) in the broker's CHORUS_CLIENT_KEYS folder"
        case let .remote(e): return "\(e.message) [\(e.code.rawValue)]"
        case let .unexpected(m): return m
        }
    }
}

/// A client of the broker: a DEALER to its frontend for commands and, when
/// watching jobs, a SUB to its events. Not thread-safe.
public final class BusClient {
    public let settings: BusSettings
    let context = BusContext()
    public let socket: BusSocket
    var events: BusSocket?
    /// Events that arrived while `subscribe` waited for its confirmation.
    private var pendingEvents: [[Data]] = []
    let keys: CurveKeyPair?
    /// What the CURVE handshakes of `socket` came to.
    let handshakes: AuthMonitor?
    private var counter = 0

    /// Connects to the broker's frontend; with CURVE on, authenticated by the
    /// secret key in `settings.clientKeyFile`.
    public init(settings: BusSettings) throws {
        self.settings = settings
        keys = try settings.secretKey(asWorker: false).map { try CurveKeyPair(secretKey: $0) }
        socket = try BusSocket(context, .dealer)
        try socket.setMaximumMessageSize(BusProtocol.transportLimitBytes)
        if let server = settings.curveServerKey, let keys {
            handshakes = try socket.makeMonitoredCurveClient(serverKey: server, keys: keys)
        } else {
            handshakes = nil
        }
        try socket.connect(BusSettings.connectable(settings.frontend))
    }

    /// Sends a command and returns the first reply that is not a PARTIAL
    /// (PARTIALs go to `onPartial`). An ERROR reply is thrown. With a
    /// `callID`, replies to other commands (one that timed out earlier, say)
    /// are passed over.
    public func call(_ frames: [Data], callID: String? = nil, timeout: Double, onPartial: (PartialBody) -> Void = { _ in }) throws -> Envelope {
        try socket.send(frames)
        let deadline = Date().addingTimeInterval(timeout)
        var beat = Date()
        while true {
            let left = deadline.timeIntervalSinceNow
            // A client that waits says so: the broker drops the requests of one gone silent.
            if Date().timeIntervalSince(beat) >= settings.heartbeatInterval {
                beat = Date()
                try socket.send(Envelope.frames(.heartbeat), wait: false)
            }
            guard left > 0, let reply = try socket.receive(timeout: min(left, 0.25, settings.heartbeatInterval)) else {
                if let refusal = handshakes?.update() { throw ClientError.refused(endpoint: settings.frontend, reason: refusal) }
                if left > 0.25 { continue }
                throw ClientError.noReply(endpoint: settings.frontend, seconds: timeout)
            }
            let envelope: Envelope
            do { envelope = try Envelope(frames: reply, maxBodyBytes: Int(BusProtocol.transportLimitBytes)) } catch {
                throw ClientError.unexpected("bad reply from the broker: \(error)")
            }
            if let callID, envelope.header.command != .partial, let answered = envelope.fields?.string("call_id"), answered != callID {
                continue
            }
            switch envelope.header.command {
            case .partial:
                if let p = try? envelope.decode(PartialBody.self) { onPartial(p) }
            case .error:
                throw ClientError.remote((try? envelope.decode(ErrorBody.self)) ?? ErrorBody(code: .internalError, message: "unreadable error"))
            default:
                return envelope
            }
        }
    }

    private func nextCallID() -> String {
        counter += 1
        return "c\(getpid())-\(counter)"
    }

    /// Submits a job and returns its id. With an idempotency key, a SUBMIT
    /// whose ACCEPTED does not come within `timeout` is sent again, up to
    /// `attempts` times: the broker gives every copy the same job. `tenant`
    /// names whom the job is for, when this client acts for several.
    public func submit(_ spec: JobSpec, idempotencyKey: String? = nil, tenant: String? = nil, timeout: Double = 10,
                       attempts: Int = 1) throws -> String {
        var attempt = 1
        while true {
            let id = nextCallID()
            let frames = Envelope.frames(.submit, SubmitBody(job: spec, idempotencyKey: idempotencyKey, tenant: tenant, callID: id))
            do { return try call(frames, callID: id, timeout: timeout).decode(JobIDBody.self).jobID } catch ClientError.noReply where idempotencyKey != nil && attempt < attempts {
                attempt += 1
            }
        }
    }

    /// A fresh idempotency key.
    public static func newSubmissionKey() -> String {
        "k\(getpid())-\(UInt64(Date().timeIntervalSince1970 * 1000))-\(UInt64.random(in: 0...UInt64.max))"
    }

    /// A job as it stands. By default any job of this client's (every tenant).
    public func result(_ jobID: String, scope: TenantScope = .everyTenant, timeout: Double = 10) throws -> JobRecord {
        let id = nextCallID()
        return try call(Envelope.frames(.result, JobIDBody(jobID: jobID, scope: scope, callID: id)), callID: id, timeout: timeout)
            .decode(ResultBody.self).job
    }

    /// Cancels a job; returns it as it stands after (a finished job unchanged).
    public func cancel(_ jobID: String, scope: TenantScope = .everyTenant, timeout: Double = 10) throws -> JobRecord {
        let id = nextCallID()
        return try call(Envelope.frames(.cancel, JobIDBody(jobID: jobID, scope: scope, callID: id)), callID: id, timeout: timeout)
            .decode(ResultBody.self).job
    }

    public func status(scope: TenantScope = .everyTenant, timeout: Double = 5) throws -> StatusBody {
        let id = nextCallID()
        return try call(Envelope.frames(.status, StatusRequest(scope: scope, callID: id)), callID: id, timeout: timeout).decode(StatusBody.self)
    }

    /// One request to one worker of `role`, outside any job: the payload
    /// encoded once into the REQUEST, the result decoded once as `Result`.
    public func request<Payload: Encodable, Result: Decodable>(
        role: String, payload: Payload, as: Result.Type, queueTimeout: Double? = nil, timeout: Double = 300,
        onPartial: (String) -> Void = { _ in }
    ) throws -> Result {
        counter += 1
        let id = "r\(getpid())-\(counter)-\(UInt32.random(in: 0...UInt32.max))"
        let reply = try call(Envelope.frames(.request, role: role, RequestBody(requestID: id, payload: payload, timeout: queueTimeout)),
                             timeout: timeout) { onPartial($0.text) }
        guard let answered = reply.fields?.string("request_id"), answered == id else {
            throw ClientError.unexpected("reply for another request (\(reply.fields?.string("request_id") ?? "no id"))")
        }
        do { return try reply.decode(FinalBody<Result>.self).result } catch {
            throw ClientError.unexpected("the \(role) worker's result is not what was asked for: \(error)")
        }
    }

    /// One request with any JSON as its payload, its result read as any JSON.
    public func request(role: String, payload: JSONValue, queueTimeout: Double? = nil, timeout: Double = 300,
                        onPartial: (String) -> Void = { _ in }) throws -> JSONValue {
        try request(role: role, payload: payload, as: JSONValue.self, queueTimeout: queueTimeout, timeout: timeout, onPartial: onPartial)
    }

    /// Subscribes to the events of one job (or all jobs with nil). With
    /// `confirmWithin`, returns only once the broker is known to send this
    /// subscription's events (it confirms a `sync.` subscription made after
    /// it), and throws `noReply` if that does not happen in time: events
    /// published after this call returns are not missed.
    public func subscribe(_ jobID: String?, confirmWithin seconds: Double? = nil) throws {
        if events == nil {
            let s = try BusSocket(context, .sub)
            if let server = settings.curveServerKey, let keys { try s.makeCurveClient(serverKey: server, keys: keys) }
            try s.connect(BusSettings.connectable(settings.events))
            events = s
        }
        try events!.subscribe(jobID.map(JobEvent.topic) ?? "job.")
        guard let seconds else { return }
        counter += 1
        let token = JobEvent.syncTopicPrefix + "\(getpid())-\(counter)-\(UInt64.random(in: 0...UInt64.max))"
        try events!.subscribe(token)
        defer { try? events!.unsubscribe(token) }
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { throw ClientError.noReply(endpoint: settings.events, seconds: seconds) }
            guard let frames = try events!.receive(timeout: min(left, 0.25)) else { continue }
            if frames.first == Data(token.utf8) { return }
            // An event that came first is kept for nextEvent.
            pendingEvents.append(frames)
        }
    }

    /// The events socket, once `subscribe` made it: for callers that poll it
    /// beside other sockets.
    public var eventSocket: BusSocket? { events }

    /// What the CURVE handshakes of the command socket came to: a refusal's
    /// reason, or nil.
    public func handshakeRefusal() -> String? { handshakes?.update() }

    /// The next event, or nil after `timeout` seconds.
    public func nextEvent(timeout: Double) throws -> JobEvent? {
        if !pendingEvents.isEmpty {
            let frames = pendingEvents.removeFirst()
            return frames.count == 3 ? try? JSONDecoder().decode(JobEvent.self, from: frames[2]) : nil
        }
        guard let events, let frames = try events.receive(timeout: timeout), frames.count == 3 else { return nil }
        return try? JSONDecoder().decode(JobEvent.self, from: frames[2])
    }
}
