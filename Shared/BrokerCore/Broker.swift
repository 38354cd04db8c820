import Bus
import Foundation
import JobEngine
import Journal
import Protocol
import ServiceKit

/// A configuration error the broker reports as it is.
struct ValidationErrorText: Error, CustomStringConvertible {
    let description: String
    init(_ text: String) { description = text }
}

/// Broker settings.
public struct BrokerSettings: Sendable {
    public var bus: BusSettings
    public var journalPath: String
    public var roles: Set<String>
    public var queueTimeout: Double
    public var maxAttempts: Int
    public var maxBodyBytes: Int
    /// Unfinished jobs held at once; a SUBMIT beyond them is refused (`busy`).
    public var maxQueuedJobs: Int
    public var defaultRefine: RefinePolicy = .always
    /// Clients' requests waiting per role, and open per client (beyond: `busy`).
    public var maxQueuedRequests: Int
    public var maxClientRequests: Int
    /// Seconds a client with open requests may stay silent.
    public var clientTimeout: Double
    /// CURVE secret key of the broker; when set, the frontend, the backend and
    /// the events socket are CURVE servers that admit only listed keys.
    public var curveSecretKey: String?
    /// Folders of the public keys admitted as clients and as workers (required with CURVE).
    public var clientKeys: String?
    public var workerKeys: String?
    /// Where `/metrics` is served (CHORUS_METRICS); nil for off.
    public var metrics: (host: String, port: Int)?

    public init(bus: BusSettings, journalPath: String, roles: Set<String>, queueTimeout: Double, maxAttempts: Int,
                maxBodyBytes: Int, maxQueuedJobs: Int, defaultRefine: RefinePolicy = .always, maxQueuedRequests: Int,
                maxClientRequests: Int, clientTimeout: Double, curveSecretKey: String? = nil, clientKeys: String? = nil,
                workerKeys: String? = nil, metrics: (host: String, port: Int)? = nil) {
        self.bus = bus
        self.journalPath = journalPath
        self.roles = roles
        self.queueTimeout = queueTimeout
        self.maxAttempts = maxAttempts
        self.maxBodyBytes = maxBodyBytes
        self.maxQueuedJobs = maxQueuedJobs
        self.defaultRefine = defaultRefine
        self.maxQueuedRequests = maxQueuedRequests
        self.maxClientRequests = maxClientRequests
        self.clientTimeout = clientTimeout
        self.curveSecretKey = curveSecretKey
        self.clientKeys = clientKeys
        self.workerKeys = workerKeys
        self.metrics = metrics
    }
}

/// The broker: the router (workers, queues, dispatch, heartbeats, retries)
/// and the job engine (the journal and the MALT pipeline) behind one
/// frontend. Clients' REQUESTs go to the router as they came; SUBMIT and
/// RESULT to the engine; the engine's stages go to the router under tags,
/// and how each one ends goes back to the engine, whose events are published.
public final class Broker: RouterDelegate {
    let settings: BrokerSettings
    let context = BusContext()
    let frontend: BusSocket
    let backend: BusSocket
    let events: BusSocket
    let engine: JobEngine
    let router: Router
    /// With CURVE: who may connect and send what, and the ZAP handler asking it.
    let gatekeeper: Gatekeeper?
    let zap: ZAPHandler?
    let warnings = RateLimitedLog()
    let metrics: BrokerMetrics?
    let started = Date().timeIntervalSince1970

    public init(settings: BrokerSettings) throws {
        self.settings = settings
        // A busy database holds the loop for at most half a heartbeat: the write
        // then fails (and with it the job), instead of workers and clients
        // being declared dead while the broker waits.
        let busyTimeout = Int32(min(5000, max(50, settings.bus.heartbeatInterval * 500)))
        engine = JobEngine(journal: try JobJournal(path: settings.journalPath, busyTimeoutMilliseconds: busyTimeout), maxJobs: settings.maxQueuedJobs,
                           defaultRefine: settings.defaultRefine)
        if settings.curveSecretKey != nil {
            guard let clients = settings.clientKeys, let workers = settings.workerKeys else {
                throw ValidationErrorText("CURVE is on (CHORUS_CURVE_SECRET_KEY) but CHORUS_CLIENT_KEYS or CHORUS_WORKER_KEYS is not set: set both to folders of the public keys (.pub files from chorus keygen --out) the broker admits")
            }
            gatekeeper = try Gatekeeper(clientFolder: clients, workerFolder: workers)
            // Bound before any socket listens: a CURVE server without a handler admits every key.
            zap = try ZAPHandler(context)
        } else {
            gatekeeper = nil
            zap = nil
        }
        frontend = try BusSocket(context, .router)
        backend = try BusSocket(context, .router)
        // XPUB: a PUB that also hears subscriptions, to confirm them (JobEvent.syncTopicPrefix).
        events = try BusSocket(context, .xpub)
        for (socket, domain) in [(frontend, Gatekeeper.Domain.frontend), (backend, .backend), (events, .events)] {
            if let secret = settings.curveSecretKey {
                try socket.makeCurveServer(secretKey: secret)
                try socket.setZAPDomain(domain.rawValue)
            }
            if socket === events { continue }
            // What a peer can make the broker hold: at most 1000 queued
            // messages of at most four times the body limit (a body over the
            // limit is still answered as too large; far over it, libzmq drops the peer).
            try socket.setMaximumMessageSize(min(BusProtocol.transportLimitBytes, Int64(settings.maxBodyBytes) * 4 + 65_536))
            try socket.setRouterMandatory(true)
            try socket.setHighWaterMark(send: 10_000, receive: 1000)
        }
        try events.setHighWaterMark(send: 100_000, receive: 1000)
        // Each subscription is the broker's to apply: a subscriber gets its own jobs' events only.
        try events.setManualSubscriptions()
        try frontend.bind(settings.bus.frontend)
        try backend.bind(settings.bus.backend)
        try events.bind(settings.bus.events)
        let frontend = self.frontend
        router = Router(settings: Router.Settings(roles: settings.roles, heartbeatInterval: settings.bus.heartbeatInterval,
                                                  heartbeatLiveness: settings.bus.heartbeatLiveness, queueTimeout: settings.queueTimeout,
                                                  maxAttempts: settings.maxAttempts, maxBodyBytes: settings.maxBodyBytes,
                                                  maxQueuedRequests: settings.maxQueuedRequests, maxClientRequests: settings.maxClientRequests,
                                                  clientTimeout: settings.clientTimeout),
                        backend: backend) { identity, frames in Self.reply(frontend, identity, frames) }
        if let address = settings.metrics {
            let m = BrokerMetrics()
            try m.serve(host: address.host, port: address.port)
            router.onBadMessage = { m.count("chorus_bad_messages_total", [("socket", "backend")]) }
            router.onRequestEnd = { role, tagged, seconds in
                m.time(tagged ? "chorus_stage_seconds" : "chorus_request_seconds", [("role", role)], seconds: seconds)
            }
            router.onWorkerCounters = { role, grown in
                let r = [("role", role)]
                m.count("chorus_worker_requests_total", r, by: grown.requests ?? 0)
                m.count("chorus_tokens_generated_total", r, by: grown.tokensGenerated ?? 0)
                m.count("chorus_prompt_tokens_total", r, by: grown.promptTokens ?? 0)
                m.count("chorus_prompt_tokens_reused_total", r, by: grown.promptTokensReused ?? 0)
            }
            metrics = m
            Log.info("metrics at http://\(address.host):\(address.port)/metrics")
        } else {
            metrics = nil
        }
        router.delegate = self
        updateGauges()
    }

    /// Queue depth per role and workers per role and state, for the metrics.
    func updateGauges() {
        guard let metrics else { return }
        let (workers, queues) = router.status()
        var values: [(label: String, dimensions: [(String, String)], value: Double)] = []
        for role in settings.roles.union(queues.keys).sorted() {
            values.append(("chorus_queue_depth", [("role", role)], Double(queues[role] ?? 0)))
            for state in WorkerState.allCases {
                values.append(("chorus_workers", [("role", role), ("state", state.rawValue)],
                               Double(workers.filter { $0.role.rawValue == role && $0.state == state }.count)))
            }
        }
        values.append(("chorus_jobs_in_flight", [], Double(engine.unfinishedJobIDs.count)))
        metrics.setGauges(values)
    }

    var now: Double { Date().timeIntervalSince1970 }

    // MARK: Main loop

    public func run() throws {
        apply(try engine.resume())
        Log.info("listening: clients \(settings.bus.frontend), workers \(settings.bus.backend), events \(settings.bus.events); journal \(settings.journalPath); roles \(settings.roles.sorted().joined(separator: ", "))")
        var poller = Poller()
        poller.add(frontend)
        poller.add(backend)
        poller.add(events)
        if let zap { poller.add(zap.socket) }
        var nextTick = now + settings.bus.heartbeatInterval
        while !StopSignal.isRequested {
            let wait = max(0, min(nextTick - now, settings.bus.heartbeatInterval))
            var ready = Poller.Ready.none
            do {
                ready = try poller.poll(timeout: wait)
            } catch {
                // A signal interrupted the wait: go round and look at the stop flag.
                if error.code != EINTR { throw error }
            }
            if ready.contains(2) { handleSubscriptions() }
            if ready.contains(3), let zap, let gatekeeper {
                let before = gatekeeper.refusals
                try zap.handlePending(gatekeeper.decide)
                if gatekeeper.refusals > before { metrics?.count("chorus_auth_refusals_total", by: gatekeeper.refusals - before) }
            }
            if ready.contains(0) { try drain(frontend, "frontend") { try self.clientMessage($0, from: $1) } }
            if ready.contains(1) { try drain(backend, "backend") { self.workerMessage($0, from: $1) } }
            if now >= nextTick {
                gatekeeper?.refresh()
                engine.recordUnrecorded()
                router.tick()
                updateGauges()
                nextTick = now + settings.bus.heartbeatInterval
            }
            router.dispatch()
        }
        Log.info("stopping; \(engine.unfinishedJobIDs.count) unfinished job(s) stay in the journal and resume on restart")
        router.disconnectAll()
    }

    /// Handles every message waiting on a socket (a bounded number per turn),
    /// with its sender's ZAP user id when CURVE is on.
    private func drain(_ socket: BusSocket, _ name: String, _ handle: ([Data], String?) throws -> Void) throws {
        var received = 0
        defer { if received > 0 { metrics?.count("chorus_bus_messages_total", [("socket", name)], by: received) } }
        for _ in 0..<1000 {
            let frames: [Data], userID: String?
            if gatekeeper != nil {
                guard let (f, u) = try socket.receiveNowWithUserID() else { return }
                (frames, userID) = (f, u)
            } else {
                guard let f = try socket.receiveNow() else { return }
                (frames, userID) = (f, nil)
            }
            received += 1
            do { try handle(frames, userID) } catch {
                Log.error("internal error handling a message: \(error)")
            }
        }
    }

    // MARK: Workers

    /// A backend message: with CURVE, only from a listed worker key, and a
    /// READY only for a role the key may serve.
    func workerMessage(_ frames: [Data], from userID: String?) {
        guard let gatekeeper, frames.count >= 2 else { return router.workerMessage(frames) }
        let identity = frames[0]
        guard let member = gatekeeper.worker(userID) else {
            metrics?.count("chorus_bad_messages_total", [("socket", "backend")])
            gatekeeper.warn("dropped a backend message from \(userID ?? "an unauthenticated peer"): not a listed worker key")
            router.evict(identity: identity, reason: "its key is no longer listed")
            Self.reply(backend, identity, Envelope.frames(.error, ErrorBody(code: .unauthorized, message: "this key is not a listed worker key")))
            return
        }
        if let header = Header.parseValid(frames[1]), header.command == .ready, let role = header.role, !member.allows(role: role) {
            metrics?.count("chorus_bad_messages_total", [("socket", "backend")])
            gatekeeper.warn("worker key '\(member.name)' may not serve \(role) (its roles: \(member.roles?.sorted().joined(separator: ", ") ?? "any"))")
            Self.reply(backend, identity, Envelope.frames(.error, ErrorBody(code: .unauthorized,
                message: "the key '\(member.name)' may not serve \(role); its .pub file's roles line allows \(member.roles?.sorted().joined(separator: ", ") ?? "")")))
            Self.reply(backend, identity, Envelope.frames(.disconnect))
            return
        }
        router.workerMessage(frames)
    }

    // MARK: Clients

    func clientMessage(_ frames: [Data], from userID: String?) throws {
        guard frames.count >= 2 else { return } // not even an identity and a frame: nothing to answer
        let identity = frames[0]
        if let gatekeeper, !gatekeeper.isClient(userID) {
            metrics?.count("chorus_bad_messages_total", [("socket", "frontend")])
            gatekeeper.warn("dropped a frontend message from \(userID ?? "an unauthenticated peer"): not a listed client key")
            reply(identity, Envelope.frames(.error, ErrorBody(code: .unauthorized, message: "this key is not a listed client key")))
            return
        }
        // Jobs belong to the client that submitted them: its key with CURVE, one local client without.
        let client = userID ?? JobOwner.localClient
        let envelope: Envelope
        do {
            envelope = try Envelope(frames: frames.dropFirst(), maxBodyBytes: settings.maxBodyBytes)
        } catch {
            metrics?.count("chorus_bad_messages_total", [("socket", "frontend")])
            warnings.warning("bad client message: \(error)")
            reply(identity, Envelope.frames(.error, ErrorBody(error)))
            return
        }
        // Every answer to a command carries the command's call id, so that a
        // client with several in flight matches each answer to its command.
        // (Read only for commands: a REQUEST's answers carry its request id.)
        var callID: String? { envelope.fields?.string("call_id") }
        func refuse(_ error: ErrorBody) {
            var e = error
            e.callID = callID
            reply(identity, Envelope.frames(.error, e))
        }
        func notFound(_ jobID: String) { refuse(ErrorBody(code: .notFound, message: "no job '\(jobID.prefix(100))'")) }
        switch envelope.header.command {
        case .submit:
            let body: SubmitBody
            do { body = try envelope.decode(SubmitBody.self); try body.validate() } catch {
                return refuse(ErrorBody(error))
            }
            do {
                let (jobID, effects) = try engine.submit(body.job, memoryAvailable: router.hasWorker(Role.memory.rawValue),
                                                         owner: JobOwner(client: client, tenant: body.tenant),
                                                         idempotencyKey: body.idempotencyKey)
                reply(identity, Envelope.frames(.accepted, JobIDBody(jobID: jobID, callID: callID)))
                apply(effects)
            } catch let refused as SubmitRefused {
                refuse(refused.error)
            } catch {
                Log.error("could not accept a job: \(error)")
                refuse(ErrorBody(code: .internalError, message: "the broker could not journal the job: \(error)"))
            }
        case .request:
            let role = envelope.header.role!
            // Routing needs only the id and the timeout; the payload passes through as it came.
            let requestID: String, requestTimeout: Double?
            do {
                requestID = try envelope.requiredString("request_id")
                requestTimeout = try envelope.optionalNumber("timeout")
                try envelope.require("payload")
            } catch {
                reply(identity, Envelope.frames(.error, ErrorBody(error)))
                return
            }
            guard settings.roles.contains(role) else {
                reply(identity, Envelope.frames(.error, ErrorBody(requestID: requestID, code: .unknownRole, message: router.unknownRole(role))))
                return
            }
            let timeout = min(max(requestTimeout ?? settings.queueTimeout, 0), 3600)
            if let refused = router.enqueueClient(identity: identity, requestID: requestID, role: role, body: envelope.body,
                                                    fields: envelope.fields, timeout: timeout) {
                reply(identity, Envelope.frames(.error, refused))
            }
        case .heartbeat:
            router.heard(client: identity) // a client waiting for its requests
        case .status:
            let scope = (try? envelope.decode(StatusRequest.self))?.scope ?? TenantScope()
            let (workers, queues) = router.status()
            reply(identity, Envelope.frames(.status, StatusBody(workers: workers, queues: queues,
                                                                jobsInFlight: engine.unfinishedJobIDs(seenBy: client, in: scope),
                                                                roles: settings.roles.sorted(), uptimeSeconds: now - started, callID: callID)))
        case .result:
            let body: JobIDBody
            do { body = try envelope.decode(JobIDBody.self) } catch {
                return refuse(ErrorBody(error))
            }
            do {
                guard let record = try engine.job(body.jobID), body.scope.sees(record.owner, client: client) else { return notFound(body.jobID) }
                reply(identity, Envelope.frames(.result, ResultBody(job: record, callID: callID)))
            } catch {
                Log.error("could not read job \(body.jobID) from the journal: \(error)")
                refuse(ErrorBody(code: .internalError, message: "the broker could not read job \(body.jobID.prefix(100)) from its journal: \(error)"))
            }
        case .cancel:
            // A REQUEST of this client's, by its id: answered `cancelled` if it was open; CANCEL itself has no reply then.
            if envelope.fields?.has("job_id") != true, let requestID = envelope.fields?.string("request_id") {
                if router.withdraw(client: identity, requestID: requestID) { Log.info("request \(requestID) cancelled by its client") }
                return
            }
            let body: JobIDBody
            do { body = try envelope.decode(JobIDBody.self) } catch {
                return refuse(ErrorBody(error))
            }
            do {
                guard let found = try engine.job(body.jobID), body.scope.sees(found.owner, client: client) else { return notFound(body.jobID) }
                let (record, effects) = try engine.cancel(body.jobID)
                apply(effects)
                reply(identity, Envelope.frames(.result, ResultBody(job: record ?? found, callID: callID)))
            } catch {
                refuse(ErrorBody(code: .internalError, message: "could not cancel \(body.jobID.prefix(100)): \(error)"))
            }
        default:
            refuse(ErrorBody(code: .unknownCommand,
                message: "\(envelope.header.command.rawValue) is not a command a client can send"))
        }
    }

    func reply(_ identity: Data, _ frames: [Data]) { Self.reply(frontend, identity, frames) }

    static func reply(_ socket: BusSocket, _ identity: Data, _ frames: [Data]) {
        do { try socket.send(to: identity, frames, wait: false) } catch {
            Log.debug("peer gone before its reply: \(error)")
        }
    }

    // MARK: The engine's requests

    /// Carries out what the engine asks: requests queued or withdrawn, events published.
    func apply(_ effects: [EngineEffect]) {
        for effect in effects {
            switch effect {
            case let .dispatch(tag, role, payload): router.enqueue(tag: tag, role: role.rawValue, payload: payload)
            case let .withdraw(tag): router.withdraw(tag: tag)
            case let .publish(event, owner):
                publish(event, owner: owner)
                switch event.kind {
                case .accepted: metrics?.count("chorus_jobs_accepted_total")
                case .jobDone: metrics?.count("chorus_jobs_done_total")
                case .jobFailed: metrics?.count("chorus_jobs_failed_total")
                case .jobCancelled: metrics?.count("chorus_jobs_cancelled_total")
                default: break
                }
            }
        }
    }

    /// Runs an engine call; an error in it (the journal failing, say) is logged
    /// and the broker goes on.
    private func engineCall(_ what: String, _ call: () throws -> [EngineEffect]) {
        do { apply(try call()) } catch { Log.error("\(what): \(error)") }
    }

    public func requestStarted(_ tag: String, role: String, worker: String, queued: Double) {
        apply(engine.started(tag, role: Role(role), worker: worker, queued: queued))
    }

    public func requestPartial(_ tag: String, role: String, text: String) {
        apply(engine.partial(tag, role: Role(role), text: text))
    }

    public func requestFinished(_ tag: String, attempt: Int, result: RawJSON, worker: String, queued: Double, seconds: Double) {
        engineCall("recording \(tag)") {
            try engine.finished(tag, attempt: attempt, result: result, worker: worker, queued: queued, seconds: seconds)
        }
    }

    public func requestFailed(_ tag: String, error: ErrorBody, worker: String?, queued: Double, seconds: Double) {
        engineCall("recording the failure of \(tag)") {
            try engine.failed(tag, error: error, worker: worker, queued: queued, seconds: seconds)
        }
    }

    /// Applies each subscription to the subscriber's own jobs (`job.` and
    /// `job.<id>` become its owner topics; anything else is not applied), and
    /// answers a subscription to a `sync.` topic with one message on it, so
    /// that a subscriber knows its earlier subscriptions are live.
    func handleSubscriptions() {
        for _ in 0..<1000 {
            let received: (frames: [Data], userID: String?)?
            if gatekeeper != nil { received = try? events.receiveNowWithUserID() } else { received = (try? events.receiveNow()).flatMap { $0 }.map { ($0, nil) } }
            guard let (frames, userID) = received else { return }
            // A subscription is one frame: 1 (0 to unsubscribe), then the topic.
            guard frames.count == 1, let first = frames[0].first, first <= 1, frames[0].count <= 1024 else { continue }
            let subscribe = first == 1
            let requested = String(decoding: frames[0].dropFirst(), as: UTF8.self)
            let client = userID ?? JobOwner.localClient
            if requested.hasPrefix(JobEvent.syncTopicPrefix) {
                if subscribe {
                    try? events.subscribe(requested)
                    _ = try? events.send([Data(requested.utf8), Header(.event).frame, Data("{}".utf8)], wait: false)
                } else {
                    try? events.unsubscribe(requested)
                }
            } else if let own = JobEvent.ownTopic(requested, client: client) {
                if subscribe { try? events.subscribe(own) } else { try? events.unsubscribe(own) }
            }
        }
    }

    func publish(_ event: JobEvent, owner: JobOwner?) {
        let encoder = JSONCoding.encoder()
        guard let body = try? encoder.encode(event) else { return }
        let topic = JobEvent.publishedTopic(jobID: event.jobID, client: owner?.client ?? JobOwner.localClient)
        _ = try? events.send([Data(topic.utf8), Header(.event).frame, body], wait: false)
    }
}
