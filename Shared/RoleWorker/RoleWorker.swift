// RoleWorker: one role worker process — registers with the broker, heartbeats,
// serves several requests at once in slots, and turns a stage payload into a
// prompt and a result with its model (or scores it, for the critic). It must
// not know jobs beyond the one stage it is asked for.

import Bus
import Foundation
import Protocol
import ServiceKit

/// What a worker serves requests with.
/// (Handed to the inference thread once, at start.)
public enum WorkerHandler: @unchecked Sendable {
    /// One request at a time on the inference thread, or many at once on the
    /// socket thread when the handler `runsInline`.
    case requests(RequestHandler)
    /// A model's slots, on the inference thread (`SlotScheduler`).
    case model(ModelHandler)

    var modelName: String {
        switch self {
        case let .requests(h): return h.modelName
        case let .model(h): return h.modelName
        }
    }

    /// Whether requests are answered on the socket thread (no inference thread).
    var runsInline: Bool {
        if case let .requests(h) = self { return h.runsInline }
        return false
    }

    /// Requests the worker takes at once, which READY reports to the broker.
    var capacity: Int {
        switch self {
        case .requests: return runsInline ? 256 : 1
        case let .model(h): return h.settings.slots
        }
    }
}

/// A role worker (after 6/PPP's Paranoid Pirate worker): connects out to the
/// broker's backend, registers with READY and its capacity (its slots),
/// serves that many requests at once on an inference thread while the main
/// thread keeps heartbeating and forwards the streamed text, and reconnects
/// when the broker falls silent.
public final class RoleWorker {
    let role: Role
    let bus: BusSettings
    let handler: WorkerHandler
    let workerID: String
    let context = BusContext()
    var socket: BusSocket
    let pipe: BusSocket
    let pipeEndpoint: String
    let curveKeys: CurveKeyPair?

    /// The requests being served.
    var inFlight: Set<String> = []
    /// What this worker has done since it started, reported in heartbeats.
    let counters = WorkerCounters()
    /// The broker asked us to register again while we were busy.
    var registerWhenIdle = false
    var lastSent = 0.0
    var brokerDeadline = 0.0

    /// Work handed to the inference thread.
    private let jobs = JobQueue { $0.requestID }
    /// A model worker's prepared requests, between its preparing and inference threads.
    private let prepared = WorkQueue<Admission> { $0.requestID }

    public init(role: Role, bus: BusSettings, handler: WorkerHandler) throws {
        self.role = role
        self.bus = bus
        self.handler = handler
        workerID = "\(role)-\(ProcessInfo.processInfo.hostName)-\(getpid())"
        curveKeys = try bus.secretKey(asWorker: true).map { try CurveKeyPair(secretKey: $0) }
        pipeEndpoint = "inproc://worker-\(UUID().uuidString)"
        pipe = try BusSocket(context, .pair)
        try pipe.bind(pipeEndpoint)
        (socket, handshakes) = try RoleWorker.connect(context, bus, curveKeys)
    }

    /// What the CURVE handshakes with the broker came to (nil without CURVE).
    var handshakes: AuthMonitor?
    /// The refusal last logged, so that each is logged once.
    var loggedRefusal: String?

    static func connect(_ context: BusContext, _ bus: BusSettings, _ keys: CurveKeyPair?) throws -> (BusSocket, AuthMonitor?) {
        let s = try BusSocket(context, .dealer)
        try s.setMaximumMessageSize(BusProtocol.transportLimitBytes)
        var monitor: AuthMonitor?
        if let server = bus.curveServerKey, let keys { monitor = try s.makeMonitoredCurveClient(serverKey: server, keys: keys) }
        try s.connect(bus.backend)
        return (s, monitor)
    }

    /// Logs a refused handshake once (libzmq keeps retrying: the key may be
    /// added to the broker's list later).
    func checkHandshakes() {
        guard let handshakes else { return }
        let refusal = handshakes.update()
        if let refusal, refusal != loggedRefusal {
            Log.error("\(refusal) at \(bus.backend): list this worker's public key (\(CurveKeyPair.fingerprint(curveKeys?.publicKey ?? ""))..., the .pub beside CHORUS_WORKER_KEY_FILE) in the broker's CHORUS_WORKER_KEYS folder; retrying")
        }
        if refusal == nil && loggedRefusal != nil { Log.info("the broker accepted this worker's key") }
        loggedRefusal = refusal
    }

    var now: Double { Date().timeIntervalSince1970 }

    func send(_ frames: [Data]) {
        lastSent = now
        do { try socket.send(frames, wait: false) } catch {
            Log.warning("could not send to the broker: \(error)")
        }
    }

    func ready() {
        send(Envelope.frames(.ready, role: role.rawValue, ReadyBody(workerID: workerID, host: ProcessInfo.processInfo.hostName,
                                                           pid: Int(getpid()), model: handler.modelName,
                                                           capacity: handler.capacity)))
    }

    /// Waits on the broker's socket (index 0) and the inference thread's pipe (index 1).
    private func makePoller() -> Poller {
        var poller = Poller()
        poller.add(socket)
        poller.add(pipe)
        return poller
    }

    /// Serves until SIGINT or SIGTERM.
    public func run() throws {
        if !handler.runsInline { startInferenceThread() }
        ready()
        brokerDeadline = now + bus.heartbeatInterval * Double(bus.heartbeatLiveness)
        Log.info("\(workerID) serving \(role) for \(bus.backend) with model \(handler.modelName)")
        var poller = makePoller()
        while !StopSignal.isRequested {
            var ready = Poller.Ready.none
            do {
                ready = try poller.poll(timeout: max(0.01, min(bus.heartbeatInterval, lastSent + bus.heartbeatInterval - now)))
            } catch {
                if error.code != EINTR { throw error }
            }
            if ready.contains(0) {
                while let frames = try socket.receiveNow() { try brokerMessage(frames) }
            }
            if ready.contains(1) {
                while let frames = try pipe.receiveNow() { fromInference(frames) }
            }
            if now > brokerDeadline {
                Log.warning("the broker has been silent for \(bus.heartbeatLiveness) heartbeats; reconnecting")
                socket.close()
                (socket, handshakes) = try RoleWorker.connect(context, bus, curveKeys)
                poller = makePoller()
                // A busy worker registers once its request is done (the result
                // goes to the broker first, which keeps it if still wanted).
                if inFlight.isEmpty { self.ready() } else { registerWhenIdle = true }
                brokerDeadline = now + bus.heartbeatInterval * Double(bus.heartbeatLiveness)
            }
            if now - lastSent >= bus.heartbeatInterval {
                checkHandshakes() // once a heartbeat, off the path of every forwarded token
                send(Envelope.frames(.heartbeat, counters.snapshot))
            }
        }
        Log.info("stopping")
        send(Envelope.frames(.disconnect))
    }

    func brokerMessage(_ frames: [Data]) throws {
        brokerDeadline = now + bus.heartbeatInterval * Double(bus.heartbeatLiveness)
        let envelope: Envelope
        do { envelope = try Envelope(frames: frames) } catch {
            Log.warning("bad message from the broker: \(error)")
            return
        }
        switch envelope.header.command {
        case .request:
            if case let .requests(h) = handler, handler.runsInline {
                serveInline(h, envelope)
                return
            }
            // The payload goes to the handler as it came: the handler decodes it once.
            guard let body = IncomingRequest(envelope) else {
                send(Envelope.frames(.error, ErrorBody(code: .malformed, message: "REQUEST body is not a request")))
                return
            }
            if inFlight.contains(body.requestID) { return } // the same request again: its result is on the way
            guard inFlight.count < handler.capacity else {
                send(Envelope.frames(.error, ErrorBody(requestID: body.requestID, code: .internalError,
                                                       message: "\(workerID) is busy: its \(handler.capacity) slot(s) serve \(inFlight.sorted().joined(separator: ", "))")))
                return
            }
            inFlight.insert(body.requestID)
            jobs.put(body)
        case .cancel:
            guard let id = (try? envelope.decode(RequestIDBody.self))?.requestID, inFlight.contains(id) else { return }
            if jobs.remove(id) || prepared.remove(id) {
                // Not started: answered at once.
                fromInference(Envelope.frames(.error, ErrorBody(requestID: id, code: .cancelled, message: "cancelled before it started")))
            } else {
                // Running (or being prepared): the inference thread stops it before its next token.
                if case .model = handler { prepared.cancel(id) } else { jobs.cancel(id) }
            }
            Log.info("request \(id) cancelled")
        case .heartbeat:
            break
        case .disconnect:
            if inFlight.isEmpty { ready() } else { registerWhenIdle = true }
        case .error:
            let body = try? envelope.decode(ErrorBody.self)
            Log.error("the broker reports: \(body?.message ?? "an error")")
            // A refusal of this worker itself (its key, its role); one about a
            // single request it answered (names the request) is only logged.
            if body?.code == .unauthorized && body?.requestID == nil {
                Log.error("the broker refuses this worker: \(body?.message ?? "")")
                exit(2)
            }
            if body?.code == .unknownRole {
                Log.error("the broker does not serve the role '\(role)'; add it to CHORUS_ROLES")
                exit(2)
            }
        default:
            Log.warning("unexpected \(envelope.header.command.rawValue) from the broker")
        }
    }

    /// Answers a request on the socket thread. A handler that passes its
    /// payload through answers without decoding it: the body was already
    /// checked in full.
    func serveInline(_ inline: RequestHandler, _ envelope: Envelope) {
        if let f = envelope.fields, f.kind("request_id") == .string, let id = f.raw("request_id"),
           let payload = f.raw("payload"), let result = inline.passThrough(payload) {
            send(Envelope.finalFrames(requestID: RawJSON(checked: id), result: RawJSON(checked: result)))
            return
        }
        guard let body = IncomingRequest(envelope) else {
            send(Envelope.frames(.error, ErrorBody(code: .malformed, message: "REQUEST body is not a request")))
            return
        }
        do {
            send(Envelope.finalFrames(requestID: body.requestID, result: try inline.handle(body.payload) { _ in }))
        } catch {
            send(Envelope.frames(.error, HandlerError.body(error, requestID: body.requestID)))
        }
    }

    /// Forwards what the inference thread produced, and counts what it answered.
    func fromInference(_ frames: [Data]) {
        send(frames)
        // Only an answer is read (a PARTIAL, one per token, is not scanned).
        guard let command = frames.first.flatMap(Header.parseValid)?.command, command == .final || command == .error,
              let envelope = try? Envelope(frames: frames) else { return }
        if let id = envelope.fields?.string("request_id") { inFlight.remove(id) }
        counters.answered()
        if inFlight.isEmpty && registerWhenIdle {
            registerWhenIdle = false
            ready()
        }
    }

    func startInferenceThread() {
        let context = self.context, endpoint = pipeEndpoint, jobs = self.jobs, prepared = self.prepared, handler = self.handler
        let counters = self.counters
        if case .model = handler {
            let preparing = Thread {
                guard case let .model(model) = handler else { return }
                prepareRequests(model, from: jobs, to: prepared)
            }
            preparing.stackSize = 8 << 20
            preparing.start()
        }
        let thread = Thread {
            guard let out = try? BusSocket(context, .pair), (try? out.connect(endpoint)) != nil else {
                Log.error("cannot open the inference pipe")
                exit(1)
            }
            switch handler {
            case let .model(model):
                SlotScheduler(handler: model, counters: counters).run(queue: prepared) { frames in _ = try? out.send(frames) }
            case let .requests(serial):
                while let request = jobs.take() {
                    _ = jobs.takeCancellations() // a request served one at a time runs to its end
                    let started = Date()
                    do {
                        let result = try serial.handle(request.payload) { text in
                            _ = try? out.send(Envelope.frames(.partial, PartialBody(requestID: request.requestID, text: text)))
                        }
                        _ = try? out.send(Envelope.finalFrames(requestID: request.requestID, result: result))
                        Log.info("served \(request.requestID) in \(String(format: "%.2f", Date().timeIntervalSince(started))) s")
                    } catch {
                        Log.warning("request \(request.requestID) failed: \(error)")
                        _ = try? out.send(Envelope.frames(.error, HandlerError.body(error, requestID: request.requestID)))
                    }
                }
            }
        }
        thread.stackSize = 8 << 20
        thread.start()
    }
}

/// A REQUEST as the worker's threads pass it on: its id, read from the
/// body's scan, and its payload's bytes, for the handler to decode.
struct IncomingRequest: Sendable {
    let requestID: String
    let payload: RawJSON

    init?(_ envelope: Envelope) {
        guard let fields = envelope.fields, let id = fields.string("request_id"), let payload = fields.raw("payload") else { return nil }
        requestID = id
        self.payload = RawJSON(checked: payload)
    }
}

/// What a worker has done since it started, reported in heartbeats: the
/// socket thread counts the answers, the inference thread adds each stage's
/// tokens as it makes the result.
final class WorkerCounters: @unchecked Sendable {
    private let lock = NSLock()
    private var body = HeartbeatBody(requests: 0, tokensGenerated: 0, promptTokens: 0, promptTokensReused: 0)

    func answered() {
        lock.lock()
        defer { lock.unlock() }
        body.requests! += 1
    }

    func add(_ result: StageResult) {
        lock.lock()
        defer { lock.unlock() }
        body.tokensGenerated! += result.completionTokens
        body.promptTokens! += result.promptTokens
        body.promptTokensReused! += result.reusedPromptTokens ?? 0
    }

    var snapshot: HeartbeatBody {
        lock.lock()
        defer { lock.unlock() }
        return body
    }
}
