import Bus
import Foundation
import Journal
import Pipeline
import Protocol
import ServiceKit

/// Broker settings.
struct BrokerSettings {
    var bus: BusSettings
    var journalPath: String
    var roles: Set<String>
    var queueTimeout: Double
    var maxAttempts: Int
    var maxBodyBytes: Int
    /// Unfinished jobs held at once; a SUBMIT beyond them is refused (`busy`).
    var maxQueuedJobs: Int
    /// CURVE secret key of the broker; when set, frontend and backend are CURVE servers.
    var curveSecretKey: String?
}

/// The broker (after the ZeroMQ guide's Majordomo broker): one queue of
/// requests and one list of idle workers per role, least-recently-used
/// dispatch, heartbeats both ways, re-sending a dead worker's request, and
/// the job engine that runs the MALT pipeline from the journal.
final class Broker {
    let settings: BrokerSettings
    let context = BusContext()
    let frontend: BusSocket
    let backend: BusSocket
    let events: BusSocket
    let journal: JobJournal
    let started = Date().timeIntervalSince1970

    var workers: [Data: Worker] = [:]
    var services: [String: Service] = [:]
    var jobs: [String: ActiveJob] = [:]
    var nextHeartbeat = 0.0

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
            case client(identity: Data, requestID: String)
            case job(jobID: String, key: StageKey, round: Int)
        }
        let role: String
        let payload: JSONValue
        /// A client's REQUEST body, passed to the worker as it came.
        var clientBody: Data?
        /// For a job's stage: what the plan asked for.
        var stage: StagePayload?
        let origin: Origin
        var attempt: Int
        let enqueuedAt: Double
        /// When it fails as `no_worker` unless a worker of its role is
        /// registered by then (which moves it on by `timeout`).
        var deadline: Double
        /// How long it waits while no worker of its role is registered.
        let timeout: Double
        var startedAt: Double?
        var worker: String?
        init(role: String, payload: JSONValue, origin: Origin, attempt: Int, now: Double, deadline: Double) {
            self.role = role
            self.payload = payload
            self.origin = origin
            self.attempt = attempt
            enqueuedAt = now
            self.deadline = deadline
            timeout = max(0, deadline - now)
        }

        /// The id workers see: a client's own id, or `<job>/<chain>/<step>/<attempt>`.
        var id: String {
            switch origin {
            case let .client(_, requestID): return requestID
            case let .job(jobID, key, _): return "\(jobID)/\(key.chain)/\(key.step)/\(attempt)"
            }
        }
    }

    final class Service {
        var requests: [Request] = []
        /// Idle workers, least recently used first.
        var idle: [Worker] = []
        /// The header of this role's REQUEST messages, built once.
        let requestHeader: Data
        init(role: String) { requestHeader = Header(.request, role: role).frame }
    }

    /// The queue and idle workers of `role`, made on first use.
    func service(_ role: String) -> Service {
        if let s = services[role] { return s }
        let s = Service(role: role)
        services[role] = s
        return s
    }

    final class ActiveJob {
        var record: JobRecord
        let plan: JobPlan
        var finished: [StageKey: StageRecord] = [:]
        var inFlight: [StageKey: Request] = [:]
        init(record: JobRecord, plan: JobPlan) {
            self.record = record
            self.plan = plan
        }
    }

    init(settings: BrokerSettings) throws {
        self.settings = settings
        journal = try JobJournal(path: settings.journalPath)
        frontend = try BusSocket(context, .router)
        backend = try BusSocket(context, .router)
        events = try BusSocket(context, .pub)
        for socket in [frontend, backend] {
            try socket.setMaximumMessageSize(BusProtocol.transportLimitBytes)
            try socket.setRouterMandatory(true)
            try socket.setHighWaterMark(send: 10_000, receive: 10_000)
            if let secret = settings.curveSecretKey { try socket.makeCurveServer(secretKey: secret) }
        }
        try events.setHighWaterMark(send: 100_000, receive: 1000)
        try frontend.bind(settings.bus.frontend)
        try backend.bind(settings.bus.backend)
        try events.bind(settings.bus.events)
        for role in settings.roles { services[role] = Service(role: role) }
    }

    var now: Double { Date().timeIntervalSince1970 }
    var expiryWindow: Double { settings.bus.heartbeatInterval * Double(settings.bus.heartbeatLiveness) }

    // MARK: Main loop

    func run() throws {
        try resumeJobs()
        Log.info("listening: clients \(settings.bus.frontend), workers \(settings.bus.backend), events \(settings.bus.events); journal \(settings.journalPath); roles \(settings.roles.sorted().joined(separator: ", "))")
        var poller = Poller()
        poller.add(frontend)
        poller.add(backend)
        nextHeartbeat = now + settings.bus.heartbeatInterval
        while !StopSignal.isRequested {
            let wait = max(0, min(nextHeartbeat - now, settings.bus.heartbeatInterval))
            var ready = Poller.Ready.none
            do {
                ready = try poller.poll(timeout: wait)
            } catch {
                // A signal interrupted the wait: go round and look at the stop flag.
                if error.code != EINTR { throw error }
            }
            if ready.contains(0) { try drain(frontend) { try self.clientMessage($0) } }
            if ready.contains(1) { try drain(backend) { try self.workerMessage($0) } }
            if now >= nextHeartbeat {
                heartbeat()
                purgeWorkers()
                expireRequests()
                nextHeartbeat = now + settings.bus.heartbeatInterval
            }
            dispatch()
        }
        Log.info("stopping; \(jobs.count) unfinished job(s) stay in the journal and resume on restart")
        for worker in workers.values { send(worker, Envelope.frames(.disconnect)) }
    }

    /// Handles every message waiting on a socket (a bounded number per turn).
    private func drain(_ socket: BusSocket, _ handle: ([Data]) throws -> Void) throws {
        for _ in 0..<1000 {
            guard let frames = try socket.receiveNow() else { return }
            do { try handle(frames) } catch {
                Log.error("internal error handling a message: \(error)")
            }
        }
    }

    // MARK: Clients

    func clientMessage(_ frames: [Data]) throws {
        guard frames.count >= 2 else { return } // not even an identity and a frame: nothing to answer
        let identity = frames[0]
        let envelope: Envelope
        do {
            envelope = try Envelope(frames: frames.dropFirst(), maxBodyBytes: settings.maxBodyBytes)
        } catch {
            Log.warning("bad client message: \(error)")
            reply(identity, Envelope.frames(.error, ErrorBody(error)))
            return
        }
        switch envelope.header.command {
        case .submit:
            let body: SubmitBody
            do { body = try envelope.decode(SubmitBody.self); try body.job.validate() } catch {
                reply(identity, Envelope.frames(.error, ErrorBody(error)))
                return
            }
            try submit(body.job, identity: identity)
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
                reply(identity, Envelope.frames(.error, ErrorBody(requestID: requestID, code: .unknownRole,
                    message: "unknown role '\(role)' (known: \(settings.roles.sorted().joined(separator: ", ")))")))
                return
            }
            let timeout = min(max(requestTimeout ?? settings.queueTimeout, 0), 3600)
            let r = Request(role: role, payload: .null, origin: .client(identity: identity, requestID: requestID),
                            attempt: 1, now: now, deadline: now + timeout)
            r.clientBody = envelope.body
            enqueue(r)
        case .status:
            reply(identity, Envelope.frames(.status, status()))
        case .result:
            let body: JobIDBody
            do { body = try envelope.decode(JobIDBody.self) } catch {
                reply(identity, Envelope.frames(.error, ErrorBody(error)))
                return
            }
            if let active = jobs[body.jobID] {
                reply(identity, Envelope.frames(.result, ResultBody(job: active.record)))
            } else if let record = try journal.job(id: body.jobID) {
                reply(identity, Envelope.frames(.result, ResultBody(job: record)))
            } else {
                reply(identity, Envelope.frames(.error, ErrorBody(code: .notFound, message: "no job '\(body.jobID)'")))
            }
        default:
            reply(identity, Envelope.frames(.error, ErrorBody(code: .unknownCommand,
                message: "\(envelope.header.command.rawValue) is not a command a client can send")))
        }
    }

    func reply(_ identity: Data, _ frames: [Data]) {
        do { try frontend.send(to: identity, frames, wait: false) } catch {
            Log.debug("client gone before its reply: \(error)")
        }
    }

    func status() -> StatusBody {
        let t = now
        let ws = workers.values.sorted { ($0.role, $0.info.workerID) < ($1.role, $1.info.workerID) }.map { w in
            StatusBody.Worker(workerID: w.info.workerID, role: w.role, state: w.inFlight.isEmpty ? "idle" : "busy",
                              host: w.info.host, pid: w.info.pid, model: w.info.model, requestID: w.inFlight.first?.id,
                              served: w.served, idleSeconds: w.inFlight.isEmpty ? t - w.idleSince : 0)
        }
        var queues: [String: Int] = [:]
        for (role, s) in services { queues[role] = s.requests.count }
        return StatusBody(workers: ws, queues: queues, jobsInFlight: jobs.keys.sorted(), roles: settings.roles.sorted(),
                          uptimeSeconds: t - started)
    }

    // MARK: Workers

    func workerMessage(_ frames: [Data]) throws {
        guard frames.count >= 2 else { return }
        let identity = frames[0]
        let worker = workers[identity]
        let envelope: Envelope
        do {
            envelope = try Envelope(frames: frames.dropFirst(), maxBodyBytes: settings.maxBodyBytes)
        } catch {
            Log.warning("bad worker message: \(error)")
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
                Log.warning("worker \(info.workerID) offered unknown role '\(role)'")
                sendRaw(identity, Envelope.frames(.error, ErrorBody(code: .unknownRole,
                    message: "unknown role '\(role)' (known: \(settings.roles.sorted().joined(separator: ", ")))")))
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
            Log.info("worker \(info.workerID) ready for \(role) (pid \(info.pid) on \(info.host), model \(info.model))")
        case .heartbeat:
            if worker == nil { sendRaw(identity, Envelope.frames(.disconnect)) }
        case .partial:
            guard let requestID = try? envelope.requiredString("request_id"), let text = envelope.fields?.string("text") else { return }
            if let w = worker, let r = w.request(requestID) { partial(r, text: text, raw: envelope.body) }
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
                try complete(r, final: envelope, worker: w.info.workerID)
            } else {
                // A result for a request this broker did not give this worker: from
                // before a restart, or for a request already handed to another
                // worker. Keep it if its job stage is still open.
                try lateResult(requestID: requestID, final: envelope, worker: worker?.info.workerID ?? "unregistered")
                if let w = worker, w.inFlight.count < w.capacity { makeIdle(w) }
                if worker == nil { sendRaw(identity, Envelope.frames(.disconnect)) }
            }
        case .error:
            let body = (try? envelope.decode(ErrorBody.self)) ?? ErrorBody(code: .workerFailed, message: "worker error")
            if let w = worker, let r = body.requestID.flatMap(w.request) ?? (w.capacity == 1 ? w.inFlight.first : nil) {
                finishWork(w, r)
                if body.code == .internalError {
                    // The worker could not take the request (busy, say): another one may.
                    retry(r, reason: "\(w.role) worker \(w.info.workerID) could not serve it: \(body.message)")
                } else {
                    fail(r, ErrorBody(requestID: r.id, code: .workerFailed, message: "\(w.role) worker \(w.info.workerID) failed: \(body.message)"))
                }
            } else {
                Log.warning("worker error: \(body.message)")
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

    func removeWorker(_ w: Worker, reason: String) {
        workers[w.identity] = nil
        services[w.role]?.idle.removeAll { $0 === w }
        Log.info("worker \(w.info.workerID) (\(w.role)) removed: \(reason)")
        let lost = w.inFlight
        w.inFlight.removeAll()
        for r in lost.reversed() { retry(r, reason: "its \(w.role) worker \(w.info.workerID) \(reason)") }
    }

    /// Puts a request whose worker went away back at the front of its queue.
    func retry(_ r: Request, reason: String) {
        if case let .job(jobID, key, _) = r.origin, jobs[jobID]?.inFlight[key] !== r { return }
        guard r.attempt < settings.maxAttempts else {
            fail(r, ErrorBody(requestID: r.id, code: .workerFailed,
                              message: "gave up after \(r.attempt) attempts: \(reason)"))
            return
        }
        r.attempt += 1
        r.startedAt = nil
        r.worker = nil
        r.deadline = now + settings.queueTimeout
        service(r.role).requests.insert(r, at: 0)
        Log.info("request \(r.id) re-queued: \(reason)")
    }

    func sendRaw(_ identity: Data, _ frames: [Data]) {
        do { try backend.send(to: identity, frames, wait: false) } catch {
            Log.debug("worker gone: \(error)")
        }
    }

    func send(_ w: Worker, _ frames: [Data]) {
        w.lastSent = now
        do { try backend.send(to: w.identity, frames, wait: false) } catch {
            Log.debug("send to worker \(w.info.workerID) failed: \(error)")
        }
    }

    func heartbeat() {
        let t = now
        for w in workers.values where t - w.lastSent >= settings.bus.heartbeatInterval * 0.9 {
            send(w, Envelope.frames(.heartbeat))
        }
    }

    func purgeWorkers() {
        let t = now
        for w in workers.values where w.expiry < t {
            removeWorker(w, reason: "missed \(settings.bus.heartbeatLiveness) heartbeats")
        }
    }

    /// Fails the requests of roles that have had no registered worker for
    /// their whole timeout. A request whose role has a worker, however busy,
    /// waits its turn (backpressure): its deadline moves on.
    func expireRequests() {
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

    func enqueue(_ r: Request) {
        service(r.role).requests.append(r)
    }

    /// Hands queued requests to workers with room, least recently used first
    /// (a worker that takes several at once goes to the back after each).
    func dispatch() {
        for (role, s) in services {
            while let r = s.requests.first, let w = s.idle.first {
                s.requests.removeFirst()
                s.idle.removeFirst()
                w.inFlight.append(r)
                if w.inFlight.count < w.capacity { s.idle.append(w) }
                r.worker = w.info.workerID
                let t = now
                r.startedAt = t
                do {
                    w.lastSent = t
                    let frames = r.clientBody.map { [s.requestHeader, $0] }
                        ?? Envelope.frames(.request, role: role, RequestBody(requestID: r.id, payload: r.payload))
                    try backend.send(to: w.identity, frames, wait: false)
                } catch {
                    w.inFlight.removeAll { $0 === r }
                    s.requests.insert(r, at: 0)
                    removeWorker(w, reason: "unreachable (\(error))")
                    continue
                }
                if case let .job(jobID, key, _) = r.origin {
                    publish(JobEvent(jobID: jobID, kind: .stageStarted, chain: key.chain, step: key.step, role: role,
                                     worker: w.info.workerID, queuedSeconds: t - r.enqueuedAt))
                }
            }
        }
    }

    // MARK: Results

    func partial(_ r: Request, text: String, raw: Data) {
        switch r.origin {
        case let .client(identity, _):
            reply(identity, [Header(.partial).frame, raw])
        case let .job(jobID, key, _):
            publish(JobEvent(jobID: jobID, kind: .partial, chain: key.chain, step: key.step, role: r.role, text: text))
        }
    }

    /// A worker's FINAL: passed to the client as it came, or recorded as a job stage.
    func complete(_ r: Request, final: Envelope, worker: String) throws {
        switch r.origin {
        case let .client(identity, _):
            reply(identity, [Header(.final).frame, final.body])
        case let .job(jobID, key, round):
            guard let job = jobs[jobID] else { return }
            let body: FinalBody
            do { body = try final.decode(FinalBody.self) } catch {
                failJob(job, "the \(r.role) worker \(worker) returned an unreadable result: \(error)")
                return
            }
            try finishStage(r, jobID: jobID, key: key, round: round, result: body.result, worker: worker)
        }
    }

    /// Records the result of a job's request as its stage, timed from the request.
    func finishStage(_ r: Request, jobID: String, key: StageKey, round: Int, result: JSONValue, worker: String) throws {
        let t = now, start = r.startedAt ?? t
        try stageFinished(jobID: jobID, key: key, round: round, attempt: r.attempt, result: result, worker: worker,
                          queued: start - r.enqueuedAt, seconds: t - start)
    }

    func fail(_ r: Request, _ error: ErrorBody) {
        switch r.origin {
        case let .client(identity, requestID):
            var e = error
            e.requestID = requestID
            reply(identity, Envelope.frames(.error, e))
        case let .job(jobID, key, round):
            guard let job = jobs[jobID] else { return }
            if r.role == "memory" {
                // Memory helps a job but is not needed for it: carry on without it.
                Log.warning("job \(jobID): memory stage failed, continuing without it: \(error.message)")
                do {
                    try finishStage(r, jobID: jobID, key: key, round: round, result: .object(["error": .string(error.message)]),
                                    worker: r.worker ?? "none")
                } catch {
                    failJob(job, "\(error)")
                }
                return
            }
            failJob(job, error.message)
        }
    }

    func lateResult(requestID: String, final: Envelope, worker: String) throws {
        let parts = requestID.split(separator: "/")
        guard parts.count == 4, let chain = Int(parts[1]), let step = Int(parts[2]), let attempt = Int(parts[3]),
              let job = jobs[String(parts[0])] else { return }
        let key = StageKey(chain: chain, step: step)
        guard job.finished[key] == nil, let r = job.inFlight[key] else { return }
        // The stage is still open: take this result and withdraw the request if it
        // is still queued (a worker already running it finishes and is ignored).
        services[r.role]?.requests.removeAll { $0 === r }
        guard let body = try? final.decode(FinalBody.self) else { return }
        Log.info("kept late result for \(requestID)")
        try stageFinished(jobID: job.record.id, key: key, round: JobPlan.stage(at: step).round, attempt: attempt,
                          result: body.result, worker: worker, queued: 0, seconds: now - (r.startedAt ?? r.enqueuedAt))
    }

    // MARK: Jobs

    func submit(_ request: JobSpec, identity: Data) throws {
        guard jobs.count < settings.maxQueuedJobs else {
            reply(identity, Envelope.frames(.error, ErrorBody(code: .busy, message:
                "the broker already holds \(jobs.count) unfinished jobs, its limit (CHORUS_MAX_QUEUED_JOBS); submit again once some finish")))
            return
        }
        var spec = request
        // Without a memory worker the job runs without memory (decided once, and journaled).
        if !(spec.noMemory ?? false) && !workers.values.contains(where: { $0.role == "memory" }) { spec.noMemory = true }
        let id = Self.newJobID()
        let seed = spec.seed ?? UInt64.random(in: 0...UInt64(Int64.max))
        let created = now
        try journal.insertJob(id: id, spec: spec, seed: seed, createdAt: created)
        reply(identity, Envelope.frames(.accepted, JobIDBody(jobID: id)))
        Log.info("job \(id) accepted: samples \(spec.samples), rounds \(spec.rounds), seed \(seed)")
        let record = JobRecord(id: id, spec: spec, seed: seed, state: .running, answer: nil, chainAnswers: [], firstAnswers: [],
                               error: nil, createdAt: created, finishedAt: nil, stages: [])
        publish(JobEvent(jobID: id, kind: .accepted))
        let job = ActiveJob(record: record, plan: JobPlan(spec: spec, seed: seed, jobID: id))
        jobs[id] = job
        try advance(job)
    }

    static func newJobID() -> String {
        let t = UInt64(Date().timeIntervalSince1970 * 1000)
        return "j" + String(t, radix: 36) + String(UInt32.random(in: 0...UInt32.max), radix: 36)
    }

    func resumeJobs() throws {
        let unfinished = try journal.unfinishedJobs()
        for record in unfinished {
            let job = ActiveJob(record: record, plan: JobPlan(spec: record.spec, seed: record.seed, jobID: record.id))
            for s in record.stages { job.finished[StageKey(chain: s.chain, step: s.step)] = s }
            jobs[record.id] = job
            Log.info("resuming job \(record.id) with \(record.stages.count) finished stage(s)")
            try advance(job)
        }
    }

    func stageFinished(jobID: String, key: StageKey, round: Int, attempt: Int, result: JSONValue, worker: String,
                       queued: Double, seconds: Double) throws {
        guard let job = jobs[jobID] else { return }
        guard let request = job.inFlight[key], let payload = request.stage else { return }
        let kind = payload.stage
        let stageResult: StageResult
        if kind.role == "memory" {
            let sampling = SamplingRecord(temperature: 0, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, maxTokens: 0, seed: 0)
            stageResult = StageResult(text: Self.memorySummary(kind, result), prompt: "", sampling: sampling, model: "memory",
                                      promptTokens: 0, completionTokens: 0, promptSeconds: 0, generationSeconds: 0,
                                      stopReason: result["error"] == nil ? "done" : "failed", data: result)
        } else {
            do { stageResult = try result.decode(as: StageResult.self) } catch {
                failJob(job, "the \(request.role) worker \(worker) returned an unreadable result: \(error)")
                return
            }
        }
        let extracted = kind == .generate || kind == .refine ? AnswerExtractor.extract(stageResult.text) : nil
        let record = StageRecord(chain: key.chain, step: key.step, round: round, stage: kind, role: kind.role, attempt: attempt,
                                 worker: worker, payload: payload, result: stageResult, extracted: extracted,
                                 queuedSeconds: queued, seconds: seconds, finishedAt: now)
        // The journal first: a stage counts once it is stored, and only once.
        let stored = try journal.insertStage(jobID: jobID, record)
        job.inFlight[key] = nil
        if stored {
            job.finished[key] = record
            job.record.stages.append(record)
            publish(JobEvent(jobID: jobID, kind: .stageDone, chain: key.chain, step: key.step, role: kind.role, worker: worker,
                             seconds: seconds, queuedSeconds: queued, promptTokens: stageResult.promptTokens,
                             completionTokens: stageResult.completionTokens, answer: extracted,
                             reusedPromptTokens: stageResult.reusedPromptTokens))
        }
        try advance(job)
    }

    func advance(_ job: ActiveJob) throws {
        switch job.plan.decide(finished: job.finished) {
        case let .run(pending):
            for p in pending {
                let key = StageKey(chain: p.chain, step: p.step)
                if job.inFlight[key] != nil { continue }
                let payload = p.role == "memory" ? (p.payload.memory ?? .null) : try JSONValue(encoding: p.payload)
                let r = Request(role: p.role, payload: payload, origin: .job(jobID: job.record.id, key: key, round: p.round),
                                attempt: 1, now: now, deadline: now + settings.queueTimeout)
                r.stage = p.payload
                job.inFlight[key] = r
                enqueue(r)
            }
        case let .done(answer, chainAnswers, firstAnswers):
            let t = now
            try journal.finishJob(id: job.record.id, state: .done, answer: answer, chainAnswers: chainAnswers,
                                  firstAnswers: firstAnswers, error: nil, finishedAt: t)
            job.record.state = .done
            job.record.answer = answer
            job.record.chainAnswers = chainAnswers
            job.record.firstAnswers = firstAnswers
            job.record.finishedAt = t
            jobs[job.record.id] = nil
            Log.info("job \(job.record.id) done: answer \(answer ?? "none") in \(String(format: "%.1f", t - job.record.createdAt)) s")
            publish(JobEvent(jobID: job.record.id, kind: .jobDone, answer: answer))
        }
    }

    /// One line for a memory stage's trajectory entry.
    static func memorySummary(_ kind: StageKind, _ result: JSONValue) -> String {
        if let error = result["error"]?.stringValue { return "memory unavailable: \(error)" }
        func count(_ key: String) -> Int {
            if case let .array(a)? = result[key] { return a.count }
            return 0
        }
        switch kind {
        case .retrieve: return "\(count("examples")) example(s) and \(count("reflections")) reflection(s) retrieved"
        default: return "stored \(count("stored")) memor\(count("stored") == 1 ? "y" : "ies")"
        }
    }

    func failJob(_ job: ActiveJob, _ message: String) {
        let t = now
        do {
            try journal.finishJob(id: job.record.id, state: .failed, answer: nil, chainAnswers: [], firstAnswers: [],
                                  error: message, finishedAt: t)
        } catch {
            Log.error("could not record the failure of job \(job.record.id): \(error)")
        }
        job.record.state = .failed
        job.record.error = message
        job.record.finishedAt = t
        for r in job.inFlight.values { services[r.role]?.requests.removeAll { $0 === r } }
        job.inFlight.removeAll()
        jobs[job.record.id] = nil
        Log.warning("job \(job.record.id) failed: \(message)")
        publish(JobEvent(jobID: job.record.id, kind: .jobFailed, error: message))
    }

    func publish(_ event: JobEvent) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let body = try? encoder.encode(event) else { return }
        _ = try? events.send([Data(JobEvent.topic(event.jobID).utf8), Header(.event).frame, body], wait: false)
    }
}
