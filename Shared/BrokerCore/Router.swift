import Bus
import Foundation
import Protocol
import ServiceKit

/// How requests the broker itself queued (a job's stages) end; the router
/// knows them only by their tags.
public protocol RouterDelegate: AnyObject {
    func requestStarted(_ tag: String, role: String, worker: String, queued: Double)
    func requestPartial(_ tag: String, role: String, text: String)
    func requestFinished(_ tag: String, attempt: Int, result: RawJSON, worker: String, queued: Double, seconds: Double)
    func requestFailed(_ tag: String, error: ErrorBody, worker: String?, queued: Double, seconds: Double)
}

/// The router (after the ZeroMQ guide's Majordomo broker): one queue of
/// requests and one list of workers with room per role, least-recently-used
/// dispatch, heartbeats both ways, and re-sending the requests of a worker
/// that died or could not take them. A request comes from a client (its
/// answer goes back to that client as it came) or from the broker under a
/// tag (its end goes to the delegate). It knows nothing of jobs.
public final class Router {
    public struct Settings: Sendable {
        public var roles: Set<String>
        public var heartbeatInterval: Double
        public var heartbeatLiveness: Int
        public var queueTimeout: Double
        public var maxAttempts: Int
        public var maxBodyBytes: Int
        /// Clients' requests waiting per role, and open per client, at most
        /// (beyond: `busy`).
        public var maxQueuedRequests: Int = 1000
        public var maxClientRequests: Int = 500
        /// Seconds a client with open requests may stay silent before it is
        /// taken as gone and its requests dropped.
        public var clientTimeout: Double = 10

        public init(roles: Set<String>, heartbeatInterval: Double, heartbeatLiveness: Int, queueTimeout: Double, maxAttempts: Int,
                    maxBodyBytes: Int, maxQueuedRequests: Int = 1000, maxClientRequests: Int = 500, clientTimeout: Double = 10) {
            self.roles = roles
            self.heartbeatInterval = heartbeatInterval
            self.heartbeatLiveness = heartbeatLiveness
            self.queueTimeout = queueTimeout
            self.maxAttempts = maxAttempts
            self.maxBodyBytes = maxBodyBytes
            self.maxQueuedRequests = maxQueuedRequests
            self.maxClientRequests = maxClientRequests
            self.clientTimeout = clientTimeout
        }
    }

    let settings: Settings
    let backend: BusSocket
    /// Sends frames to a client of the broker's frontend.
    let replyToClient: (Data, [Data]) -> Void
    public weak var delegate: RouterDelegate?
    let warnings = RateLimitedLog()
    /// For metrics: a message that broke the protocol; a request that ended
    /// (its role, whether the broker queued it, seconds from start to end);
    /// what a worker's counters grew by since its last heartbeat.
    public var onBadMessage: () -> Void = {}
    public var onRequestEnd: (_ role: String, _ tagged: Bool, _ seconds: Double) -> Void = { _, _, _ in }
    public var onWorkerCounters: (_ role: String, _ grown: HeartbeatBody) -> Void = { _, _ in }

    private var workers: [Data: Worker] = [:]
    private var services: [String: Service] = [:]
    /// Open tagged requests by the ids they were sent under (one per attempt),
    /// so that a late answer to an earlier attempt finds its request.
    private var issued: [String: (request: Request, attempt: Int)] = [:]
    private var tagged: [String: Request] = [:]
    /// The worker connection each request id (each attempt's) was sent to:
    /// only that connection may answer it.
    private var dispatchedTo: [String: Data] = [:]
    /// Clients with requests open (and, for a while, those just answered), by
    /// connection: their open requests by their own ids, and when each was
    /// last heard from. The last one used is kept at hand: most requests come
    /// from the client that sent the one before.
    private var clients: [ClientID: Client] = [:]
    private var lastClient: (identity: Data, state: Client)?
    /// Clients with at least one request open: with one, no two clients' ids can meet.
    private var busyClients = 0
    private var issuedCount: UInt64 = 0

    final class Client {
        var open: [String: Request] = [:]
        var lastSeen: Double
        init(now: Double) { lastSeen = now }
    }

    /// A client connection's identity, hashed cheaply: ZeroMQ's own identities
    /// are 5 bytes, packed into an integer; a longer one (chosen by the peer)
    /// is kept whole.
    enum ClientID: Hashable {
        case short(UInt64)
        case long(Data)
        init(_ identity: Data) {
            if identity.count <= 7 {
                self = .short(identity.withUnsafeBytes { raw in
                    var v = UInt64(raw.count)
                    for b in raw { v = v << 8 | UInt64(b) }
                    return v
                })
            } else {
                self = .long(identity)
            }
        }
    }

    final class Worker {
        let identity: Data
        let role: String
        let info: ReadyBody
        var expiry: Double
        var lastSent: Double
        /// Requests handed to this worker and not yet finished, oldest first.
        var inFlight: [Request] = []
        /// Requests it takes at once (a model worker's slots).
        let capacity: Int
        var served = 0
        var idleSince: Double
        /// The counters of its last heartbeat.
        var counters = HeartbeatBody()
        func request(_ id: String) -> Request? { inFlight.first { $0.id == id } }
        init(identity: Data, role: String, info: ReadyBody, now: Double, expiry: Double) {
            self.identity = identity
            self.role = role
            self.info = info
            capacity = min(max(info.capacity ?? 1, 1), 1024)
            self.expiry = expiry
            lastSent = now
            idleSince = now
        }
    }

    final class Request {
        enum Origin {
            /// A client's REQUEST, passed to the worker as it came. Workers see
            /// `workerID`: the client's own id while no other open request has
            /// it, else one the broker issued (then `rawID` is the client's id
            /// as it wrote it, to put back in the answers), so that two clients'
            /// ids never meet at a worker.
            case client(identity: Data, requestID: String, rawID: Data?, workerID: String, body: Data)
            /// One the broker queued; workers see `<tag>/<attempt>`.
            case tagged(tag: String, payload: RawJSON)
        }
        let role: String
        private(set) var origin: Origin
        /// The attempt, and the id workers see for it (kept, not rebuilt per look-up).
        private(set) var attempt = 1
        private(set) var id: String
        /// The client connection that sent it, for a client's request.
        let clientIdentity: Data?
        let enqueuedAt: Double
        /// When it fails as `no_worker` unless a worker of its role is
        /// registered by then (which moves it on by `timeout`).
        var deadline: Double
        /// How long it waits while no worker of its role is registered.
        let timeout: Double
        var startedAt: Double?
        var worker: String?
        /// A client's request: its client's state (open count, renamed ids).
        var client: Client?
        /// False once answered, failed or withdrawn: a worker still running it is ignored.
        var open = true
        init(role: String, origin: Origin, now: Double, timeout: Double) {
            self.role = role
            self.origin = origin
            switch origin {
            case let .client(identity, _, _, workerID, _):
                id = workerID
                clientIdentity = identity
            case let .tagged(tag, _):
                id = "\(tag)/1"
                clientIdentity = nil
            }
            enqueuedAt = now
            self.timeout = max(0, timeout)
            deadline = now + self.timeout
        }

        var isTagged: Bool { clientIdentity == nil }

        /// A client's request, as the worker is to get it under another id.
        func rename(_ renamed: Origin, id: String) {
            origin = renamed
            self.id = id
        }

        /// Counts another attempt (a tagged request's id changes with it).
        func nextAttempt() {
            attempt += 1
            if case let .tagged(tag, _) = origin { id = "\(tag)/\(attempt)" }
        }

    }

    final class Service {
        var requests: [Request] = []
        /// Workers with room, least recently used first.
        var idle: [Worker] = []
        /// The header of this role's REQUEST messages, built once.
        let requestHeader: Data
        init(role: String) { requestHeader = Header(.request, role: role).frame }
    }

    public init(settings: Settings, backend: BusSocket, replyToClient: @escaping (Data, [Data]) -> Void) {
        self.settings = settings
        self.backend = backend
        self.replyToClient = replyToClient
        for role in settings.roles { services[role] = Service(role: role) }
    }

    var now: Double { Date().timeIntervalSince1970 }
    var expiryWindow: Double { settings.heartbeatInterval * Double(settings.heartbeatLiveness) }

    /// The queue and workers of `role`, made on first use.
    private func service(_ role: String) -> Service {
        if let s = services[role] { return s }
        let s = Service(role: role)
        services[role] = s
        return s
    }

    public func unknownRole(_ role: String) -> String {
        "unknown role '\(role)' (known: \(settings.roles.sorted().joined(separator: ", ")))"
    }

    // MARK: Requests in

    /// Queues a client's REQUEST (`body` passed to the worker untouched but
    /// for its id). Refused (the error to send back) when the client already
    /// has a request open under this id, or too many open, or the role's
    /// queue is full.
    public func enqueueClient(identity: Data, requestID: String, role: String, body: Data, fields: JSONObjectScan?, timeout: Double) -> ErrorBody? {
        let client = clientState(identity)
        let open = client?.open.count ?? 0
        if open >= settings.maxClientRequests {
            return ErrorBody(requestID: requestID, code: .busy,
                             message: "this client has \(open) requests open, its limit (CHORUS_MAX_CLIENT_REQUESTS); send more as they finish")
        }
        let s = service(role)
        if s.requests.count >= settings.maxQueuedRequests {
            return ErrorBody(requestID: requestID, code: .busy,
                             message: "\(s.requests.count) requests wait for a \(role) worker, the limit (CHORUS_MAX_QUEUED_REQUESTS); try again shortly")
        }
        let r = Request(role: role, origin: .client(identity: identity, requestID: requestID, rawID: nil, workerID: requestID, body: body),
                        now: now, timeout: timeout)
        let state = client ?? Client(now: r.enqueuedAt)
        if let previous = state.open.updateValue(r, forKey: requestID) {
            state.open[requestID] = previous
            return ErrorBody(requestID: requestID, code: .conflict,
                             message: "this client already has a request open under the id '\(requestID.prefix(100))'; use a new id for each request")
        }
        if client == nil {
            clients[ClientID(identity)] = state
            lastClient = (identity, state)
        }
        if state.open.count == 1 { busyClients += 1 }
        // An id that could pass for one of the broker's goes to the worker
        // renamed; so does one that meets another open request's at its worker
        // (`dispatch`).
        if Self.couldPassForBrokers(requestID), !rename(r, fields: fields) {
            state.open[requestID] = nil
            if state.open.isEmpty { busyClients -= 1 }
            return ErrorBody(requestID: requestID, code: .malformed, message: "the REQUEST body has no request_id")
        }
        r.client = state
        state.lastSeen = r.enqueuedAt
        s.requests.append(r)
        return nil
    }

    /// The state of the client on this connection, if it has one.
    private func clientState(_ identity: Data) -> Client? {
        if let last = lastClient, last.identity == identity { return last.state }
        guard let state = clients[ClientID(identity)] else { return nil }
        lastClient = (identity, state)
        return state
    }

    /// Gives a client's request an id of the broker's, in the body the worker
    /// gets; its answers go back under the client's own. False when the body
    /// has no id to replace.
    private func rename(_ r: Request, fields: JSONObjectScan?) -> Bool {
        guard case let .client(identity, requestID, _, _, body) = r.origin,
              let scan = fields ?? (try? JSONObjectScan(body)), let rawID = scan.raw("request_id") else { return false }
        issuedCount += 1
        let workerID = "~\(issuedCount)"
        guard let renamed = scan.replacing("request_id", withRaw: Data("\"\(workerID)\"".utf8)) else { return false }
        r.rename(.client(identity: identity, requestID: requestID, rawID: Data(rawID), workerID: workerID, body: renamed), id: workerID)
        return true
    }

    /// Whether a client's id could be taken for one the broker issues ('/'
    /// is in stages' ids, '~' starts the ids it gives clients' requests).
    static func couldPassForBrokers(_ id: String) -> Bool {
        var id = id
        return id.withUTF8 { b in b.first == UInt8(ascii: "~") || b.contains(UInt8(ascii: "/")) }
    }


    /// A client was heard from: its open requests are still wanted.
    public func heard(client identity: Data) {
        clientState(identity)?.lastSeen = now
    }

    /// Queues a request of the broker's own under `tag`.
    public func enqueue(tag: String, role: String, payload: RawJSON) {
        let r = Request(role: role, origin: .tagged(tag: tag, payload: payload), now: now, timeout: settings.queueTimeout)
        tagged[tag] = r
        issued[r.id] = (r, r.attempt)
        service(role).requests.append(r)
    }

    /// Withdraws the request queued under `tag`; a worker already running it
    /// is told to stop (CANCEL), and whatever it sends for it is ignored.
    public func withdraw(tag: String) {
        guard let r = tagged[tag] else { return }
        close(r)
        stopWorkers(r)
    }

    /// Withdraws a REQUEST of the client at `identity`, which asked by CANCEL:
    /// out of its queue or its worker told to stop, and the client answered
    /// `ERROR` (`cancelled`) for it. False when no such request is open
    /// (answered already, or another client's).
    public func withdraw(client identity: Data, requestID: String) -> Bool {
        guard let r = clientState(identity)?.open[requestID], r.open else { return false }
        stopWorkers(r)
        fail(r, ErrorBody(code: .cancelled, message: "request \(requestID) was cancelled"))
        return true
    }

    /// Tells the workers running `r` to stop it.
    private func stopWorkers(_ r: Request) {
        for w in workers.values where w.inFlight.contains(where: { $0 === r }) {
            send(w, Envelope.frames(.cancel, RequestIDBody(requestID: r.id)))
        }
    }

    /// Marks a request answered: out of its queue, its ids forgotten.
    private func close(_ r: Request) {
        r.open = false
        services[r.role]?.requests.removeAll { $0 === r }
        switch r.origin {
        case let .tagged(tag, _):
            tagged[tag] = nil
            for attempt in 1...r.attempt {
                issued["\(tag)/\(attempt)"] = nil
                dispatchedTo["\(tag)/\(attempt)"] = nil
            }
        case let .client(_, requestID, _, _, _):
            // (A client left with none open is forgotten by the timer, not here:
            // the next request of a busy client finds it.)
            if let client = r.client, client.open.removeValue(forKey: requestID) != nil, client.open.isEmpty { busyClients -= 1 }
        }
    }

    // MARK: Workers

    public func workerMessage(_ frames: [Data]) {
        guard frames.count >= 2 else { return }
        let identity = frames[0]
        let worker = workers[identity]
        let envelope: Envelope
        do {
            envelope = try Envelope(frames: frames.dropFirst(), maxBodyBytes: settings.maxBodyBytes)
        } catch {
            onBadMessage()
            warnings.warning("bad worker message: \(error)")
            sendRaw(identity, Envelope.frames(.error, ErrorBody(error)))
            return
        }
        worker?.expiry = now + expiryWindow
        switch envelope.header.command {
        case .ready:
            let role = envelope.header.role!
            let info: ReadyBody
            do { info = try envelope.decode(ReadyBody.self) } catch {
                sendRaw(identity, Envelope.frames(.error, ErrorBody(error)))
                return
            }
            guard settings.roles.contains(role) else {
                warnings.warning("worker \(info.workerID) offered unknown role '\(role)'")
                sendRaw(identity, Envelope.frames(.error, ErrorBody(code: .unknownRole, message: unknownRole(role))))
                sendRaw(identity, Envelope.frames(.disconnect))
                return
            }
            if let existing = worker, existing.role == role {
                // The same connection registering again: its READY crossed a
                // request on the wire. It keeps the requests it has.
                if existing.inFlight.count < existing.capacity { makeIdle(existing) }
                return
            }
            if let old = worker { removeWorker(old, reason: "registered again for another role") }
            let w = Worker(identity: identity, role: role, info: info, now: now, expiry: now + expiryWindow)
            workers[identity] = w
            service(role).idle.append(w)
            Log.info("worker \(info.workerID) ready for \(role) (pid \(info.pid) on \(info.host), model \(info.model), \(w.capacity) at once)")
        case .heartbeat:
            guard let w = worker else { return sendRaw(identity, Envelope.frames(.disconnect)) }
            if let c = try? envelope.decode(HeartbeatBody.self), c != HeartbeatBody() {
                // Growth since the last heartbeat (all of it after a restart of the worker's counters).
                func grown(_ new: Int?, _ old: Int?) -> Int? {
                    guard let new else { return nil }
                    return new >= (old ?? 0) ? new - (old ?? 0) : new
                }
                let delta = HeartbeatBody(requests: grown(c.requests, w.counters.requests),
                                          tokensGenerated: grown(c.tokensGenerated, w.counters.tokensGenerated),
                                          promptTokens: grown(c.promptTokens, w.counters.promptTokens),
                                          promptTokensReused: grown(c.promptTokensReused, w.counters.promptTokensReused))
                w.counters = c
                onWorkerCounters(w.role, delta)
            }
        case .partial:
            guard let requestID = try? envelope.requiredString("request_id"), let text = envelope.fields?.string("text") else { return }
            if let w = worker, let r = w.request(requestID), r.open { partial(r, text: text, envelope: envelope) }
        case .final:
            let requestID: String
            do {
                requestID = try envelope.requiredString("request_id")
                try envelope.require("result")
            } catch {
                sendRaw(identity, Envelope.frames(.error, ErrorBody(error)))
                return
            }
            if let w = worker, let r = w.request(requestID) {
                finishWork(w, r)
                if r.open { complete(r, attempt: r.attempt, final: envelope, worker: w.info.workerID) }
            } else if let (r, attempt) = issued[requestID], dispatchedTo[requestID] == identity {
                // A late answer from the connection an earlier attempt went to (it
                // was given up on, the request handed to another): kept if still open.
                if r.open {
                    Log.info("kept late result for \(requestID)")
                    complete(r, attempt: attempt, final: envelope, worker: worker?.info.workerID ?? "unregistered")
                }
                if let w = worker, w.inFlight.count < w.capacity { makeIdle(w) }
                if worker == nil { sendRaw(identity, Envelope.frames(.disconnect)) } // register again
            } else {
                // Not this connection's to answer: never taken as a result.
                onBadMessage()
                warnings.warning("refused a FINAL for \(requestID.prefix(100)) from \(worker.map { "worker \($0.info.workerID)" } ?? "an unregistered connection"): it was not sent that request")
                sendRaw(identity, Envelope.frames(.error, ErrorBody(requestID: requestID, code: .unauthorized,
                    message: "this connection was not sent the request '\(requestID.prefix(100))'")))
                if worker == nil { sendRaw(identity, Envelope.frames(.disconnect)) }
            }
        case .error:
            let body = (try? envelope.decode(ErrorBody.self)) ?? ErrorBody(code: .workerFailed, message: "worker error")
            if let w = worker, let r = body.requestID.flatMap(w.request) ?? (w.capacity == 1 ? w.inFlight.first : nil) {
                finishWork(w, r)
                guard r.open else { return }
                if body.code == .internalError {
                    // The worker could not take the request (busy, say): another one may.
                    retry(r, reason: "\(w.role) worker \(w.info.workerID) could not serve it: \(body.message)")
                } else {
                    // A request the worker says is wrong keeps its code: sending it again cannot help.
                    let code: ErrorCode = [.badRequest, .notFound, .contextLengthExceeded].contains(body.code) ? body.code : .workerFailed
                    fail(r, ErrorBody(requestID: r.id, code: code, message: "\(w.role) worker \(w.info.workerID) failed: \(body.message)"))
                }
            } else {
                warnings.warning("worker error: \(body.message)")
            }
        case .disconnect:
            if let w = worker { removeWorker(w, reason: "disconnected") }
        default:
            sendRaw(identity, Envelope.frames(.error, ErrorBody(code: .unknownCommand,
                message: "\(envelope.header.command.rawValue) is not a command a worker can send")))
        }
    }

    /// The worker has finished a request and has room for another.
    private func finishWork(_ w: Worker, _ r: Request) {
        w.inFlight.removeAll { $0 === r }
        w.served += 1
        makeIdle(w)
    }

    private func makeIdle(_ w: Worker) {
        w.idleSince = now
        let s = service(w.role)
        if !s.idle.contains(where: { $0 === w }) { s.idle.append(w) }
    }

    /// Removes the worker on this connection, if one is registered there.
    public func evict(identity: Data, reason: String) {
        if let w = workers[identity] { removeWorker(w, reason: reason) }
    }

    private func removeWorker(_ w: Worker, reason: String) {
        workers[w.identity] = nil
        services[w.role]?.idle.removeAll { $0 === w }
        Log.info("worker \(w.info.workerID) (\(w.role)) removed: \(reason)")
        let lost = w.inFlight
        w.inFlight.removeAll()
        for r in lost.reversed() where r.open { retry(r, reason: "its \(w.role) worker \(w.info.workerID) \(reason)") }
    }

    /// Puts a request back at the front of its queue, as its next attempt.
    private func retry(_ r: Request, reason: String) {
        guard r.attempt < settings.maxAttempts else {
            fail(r, ErrorBody(requestID: r.id, code: .workerFailed, message: "gave up after \(r.attempt) attempts: \(reason)"))
            return
        }
        r.nextAttempt()
        r.startedAt = nil
        r.worker = nil
        r.deadline = now + r.timeout
        if case .tagged = r.origin { issued[r.id] = (r, r.attempt) }
        service(r.role).requests.insert(r, at: 0)
        Log.info("request \(r.id) re-queued: \(reason)")
    }

    private func sendRaw(_ identity: Data, _ frames: [Data]) {
        do { try backend.send(to: identity, frames, wait: false) } catch {
            Log.debug("worker gone: \(error)")
        }
    }

    private func send(_ w: Worker, _ frames: [Data]) {
        w.lastSent = now
        do { try backend.send(to: w.identity, frames, wait: false) } catch {
            Log.debug("send to worker \(w.info.workerID) failed: \(error)")
        }
    }

    /// Heartbeats idle connections, gives up on silent workers, and fails
    /// requests whose role has had no worker for their whole timeout.
    public func tick() {
        let t = now
        for w in workers.values where t - w.lastSent >= settings.heartbeatInterval * 0.9 { send(w, Envelope.frames(.heartbeat)) }
        for w in workers.values where w.expiry < t {
            removeWorker(w, reason: "missed \(settings.heartbeatLiveness) heartbeats")
        }
        dropRequestsOfSilentClients()
        expireRequests()
    }

    /// A client waiting for requests sends something (a HEARTBEAT) at least
    /// every heartbeat interval; the requests of one silent for the client
    /// timeout are dropped and their workers told to stop: no one would read
    /// their answers.
    private func dropRequestsOfSilentClients() {
        let t = now
        for (key, client) in clients where t - client.lastSeen > settings.clientTimeout {
            for (requestID, r) in client.open where r.open {
                stopWorkers(r)
                close(r)
                Log.info("request \(requestID.prefix(100)) dropped: its client has been silent for \(Int(settings.clientTimeout.rounded())) s")
            }
            clients[key] = nil
            if lastClient?.state === client { lastClient = nil }
        }
    }

    /// A request whose role has a worker, however busy, waits its turn
    /// (backpressure): its deadline moves on.
    private func expireRequests() {
        let t = now
        let staffed = Set(workers.values.map(\.role))
        for (role, s) in services {
            if staffed.contains(role) {
                for r in s.requests { r.deadline = max(r.deadline, t + r.timeout) }
                continue
            }
            let expired = s.requests.filter { $0.deadline < t }
            guard !expired.isEmpty else { continue }
            s.requests.removeAll { $0.deadline < t }
            for r in expired {
                let waited = Int((t - r.enqueuedAt).rounded())
                fail(r, ErrorBody(requestID: r.id, code: .noWorker,
                                  message: "no \(role) worker has been registered for the last \(Int(r.timeout.rounded())) s (the request waited \(waited) s); start one with deploy/scale.sh \(role) 1"))
            }
        }
    }

    /// Hands queued requests to workers with room, least recently used first
    /// (a worker that takes several at once goes to the back after each).
    public func dispatch() {
        for (role, s) in services {
            while let r = s.requests.first, let w = s.idle.first {
                s.requests.removeFirst()
                s.idle.removeFirst()
                // Two clients' requests with one id never meet at a worker.
                if busyClients > 1, !r.isTagged, w.request(r.id) != nil, !rename(r, fields: nil) {
                    fail(r, ErrorBody(code: .malformed, message: "the REQUEST body has no request_id"))
                    s.idle.insert(w, at: 0)
                    continue
                }
                w.inFlight.append(r)
                if w.inFlight.count < w.capacity { s.idle.append(w) }
                r.worker = w.info.workerID
                // A broker's own request may be answered late by this connection (a client's never is).
                if r.isTagged { dispatchedTo[r.id] = w.identity }
                let t = now
                r.startedAt = t
                do {
                    w.lastSent = t
                    let frames: [Data]
                    switch r.origin {
                    case let .client(_, _, _, _, body): frames = [s.requestHeader, body]
                    case let .tagged(_, payload):
                        frames = Envelope.requestFrames(role: role, requestID: r.id, payload: payload)
                    }
                    try backend.send(to: w.identity, frames, wait: false)
                } catch {
                    w.inFlight.removeAll { $0 === r }
                    s.requests.insert(r, at: 0)
                    removeWorker(w, reason: "unreachable (\(error))")
                    continue
                }
                if case let .tagged(tag, _) = r.origin {
                    delegate?.requestStarted(tag, role: role, worker: w.info.workerID, queued: t - r.enqueuedAt)
                }
            }
        }
    }

    /// Tells every worker the broker is going.
    public func disconnectAll() {
        for worker in workers.values { send(worker, Envelope.frames(.disconnect)) }
    }

    /// Whether a worker of `role` is registered.
    public func hasWorker(_ role: String) -> Bool { workers.values.contains { $0.role == role } }

    /// Workers and queue lengths, for STATUS.
    public func status() -> (workers: [StatusBody.Worker], queues: [String: Int]) {
        let t = now
        let ws = workers.values.sorted { ($0.role, $0.info.workerID) < ($1.role, $1.info.workerID) }.map { w in
            StatusBody.Worker(workerID: w.info.workerID, role: Role(w.role), state: w.inFlight.isEmpty ? .idle : .busy,
                              host: w.info.host, pid: w.info.pid, model: w.info.model, requestID: w.inFlight.first?.id,
                              served: w.served, idleSeconds: w.inFlight.isEmpty ? t - w.idleSince : 0,
                              capacity: w.capacity, inFlight: w.inFlight.count)
        }
        var queues: [String: Int] = [:]
        for (role, s) in services { queues[role] = s.requests.count }
        return (ws, queues)
    }

    // MARK: Answers out

    /// A worker's message for a client's request, with the client's own id in it again.
    private func forClient(_ envelope: Envelope, _ rawID: Data?) -> Data {
        guard let rawID else { return envelope.body }
        return envelope.fields?.replacing("request_id", withRaw: rawID) ?? envelope.body
    }

    private func partial(_ r: Request, text: String, envelope: Envelope) {
        switch r.origin {
        case let .client(identity, _, rawID, _, _): replyToClient(identity, [Header(.partial).frame, forClient(envelope, rawID)])
        case let .tagged(tag, _): delegate?.requestPartial(tag, role: r.role, text: text)
        }
    }

    /// A worker's FINAL: passed to the client as it came, or its result to the delegate.
    private func complete(_ r: Request, attempt: Int, final: Envelope, worker: String) {
        close(r)
        onRequestEnd(r.role, r.isTagged, now - (r.startedAt ?? r.enqueuedAt))
        switch r.origin {
        case let .client(identity, _, rawID, _, _):
            replyToClient(identity, [Header(.final).frame, forClient(final, rawID)])
        case let .tagged(tag, _):
            let t = now, start = r.startedAt ?? r.enqueuedAt
            // The result goes on as the worker wrote it: the engine decodes it once.
            guard let result = final.fields?.raw("result") else {
                delegate?.requestFailed(tag, error: ErrorBody(code: .workerFailed,
                    message: "the \(r.role) worker \(worker) returned a FINAL without a result"),
                    worker: worker, queued: start - r.enqueuedAt, seconds: t - start)
                return
            }
            delegate?.requestFinished(tag, attempt: attempt, result: RawJSON(checked: result), worker: worker, queued: start - r.enqueuedAt,
                                      seconds: t - start)
        }
    }

    private func fail(_ r: Request, _ error: ErrorBody) {
        close(r)
        if let start = r.startedAt { onRequestEnd(r.role, r.isTagged, now - start) }
        switch r.origin {
        case let .client(identity, requestID, _, _, _):
            var e = error
            e.requestID = requestID
            replyToClient(identity, Envelope.frames(.error, e))
        case let .tagged(tag, _):
            let t = now, start = r.startedAt ?? t
            delegate?.requestFailed(tag, error: error, worker: r.worker, queued: start - r.enqueuedAt, seconds: t - start)
        }
    }
}
