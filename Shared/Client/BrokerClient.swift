import Bus
import Foundation
import Protocol
import ServiceKit

/// The async client of the broker: one connection shared by every caller
/// (the gateway's HTTP requests, the memory service's calls to the kvindex,
/// the command line's calls).
/// One thread owns the sockets (ZeroMQ sockets are not thread-safe): a DEALER
/// to the frontend for commands and requests, and a SUB to every job's
/// events. Async callers queue what to send and wake it through a pipe; it
/// sends, reads replies and resumes them.
///
/// Replies find their callers by id only: a request's PARTIALs, FINAL and
/// ERROR carry its request id, and the answer to a command (SUBMIT, RESULT,
/// CANCEL, STATUS) carries the command's call id. A reply that names no
/// caller this link waits for is dropped, never handed to another caller. A
/// command left unanswered past its timeout fails with `noReply`.
///
/// Events are kept per job for a while, so that a listener that comes after
/// a job's first events (its id is known only once SUBMIT is answered) still
/// gets them, in order.
public final class BrokerClient: @unchecked Sendable {
    public let settings: BusSettings
    /// The broker's limit on a message body (CHORUS_MAX_BODY_BYTES): a call
    /// over it fails here (`too_large`), never reaching the broker.
    public let maxBodyBytes: Int
    private let lock = NSLock()
    private var outbox: [Outgoing] = []
    private let wakeRead: Int32
    private let wakeWrite: Int32
    private var stopped = false

    private enum Outgoing {
        case command(id: String, [Data], timeout: Double, CheckedContinuation<Envelope, Error>)
        case request(id: String, role: String, [Data], timeout: Double, onPartial: @Sendable (String) -> Void,
                     CheckedContinuation<RawJSON, Error>)
        /// Stop a request still waiting for its answer (its caller was cancelled).
        case cancelRequest(id: String)
    }

    // Owned by the bus thread.
    private struct Command { let deadline: Date; let timeout: Double; let continuation: CheckedContinuation<Envelope, Error> }
    private struct Pending { let deadline: Date; let timeout: Double; let onPartial: @Sendable (String) -> Void; let continuation: CheckedContinuation<RawJSON, Error> }
    private var commands: [String: Command] = [:]
    private var requests: [String: Pending] = [:]
    /// Messages the socket could not take yet (no connection to the broker:
    /// one refused, or not yet made), sent again in order while their call
    /// waits; a send never blocks the bus thread.
    private var unsent: [(id: String, frames: [Data])] = []

    /// Where a listener's events go: an async stream, or a function called on
    /// the client's own thread (with nil once the job's events have ended).
    private enum Sink {
        case stream(AsyncStream<JobEvent>.Continuation)
        case function(@Sendable (JobEvent?) -> Void)
        func send(_ e: JobEvent) {
            switch self {
            case let .stream(c): c.yield(e)
            case let .function(f): f(e)
            }
        }
        func finish() {
            switch self {
            case let .stream(c): c.finish()
            case let .function(f): f(nil)
            }
        }
    }
    private struct Listener { let sink: Sink; var lastEvent: Date }
    private var listeners: [String: [UInt64: Listener]] = [:]
    private var nextListener: UInt64 = 0
    private var recent: [String: (events: [JobEvent], touched: Date)] = [:]
    static let recentPerJob = 4096
    static let recentJobs = 256
    private var counter: UInt64 = 0
    /// Set once the events subscription is known to be live (or its confirmation timed out).
    private let subscribed = NSCondition()
    private var isSubscribed = false

    public init(settings: BusSettings, maxBodyBytes: Int = BusProtocol.defaultMaxBodyBytes) throws {
        self.settings = settings
        self.maxBodyBytes = maxBodyBytes
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw ClientError.unexpected("cannot make a pipe: \(String(cString: strerror(errno)))") }
        wakeRead = fds[0]
        wakeWrite = fds[1]
        _ = fcntl(wakeRead, F_SETFL, fcntl(wakeRead, F_GETFL) | O_NONBLOCK)
        _ = fcntl(wakeWrite, F_SETFL, fcntl(wakeWrite, F_GETFL) | O_NONBLOCK)
    }

    public func start() {
        let thread = Thread { [self] in run() }
        thread.name = "chorus.broker-client"
        thread.start()
    }

    public func stop() {
        lock.lock()
        stopped = true
        let all = listeners.values.flatMap(\.values)
        listeners = [:]
        lock.unlock()
        wake()
        for l in all { l.sink.finish() }
    }

    private func wake() {
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1) // a full pipe already wakes the thread
    }

    private func enqueue(_ o: Outgoing) {
        lock.lock()
        outbox.append(o)
        let first = outbox.count == 1
        lock.unlock()
        if first { wake() }
    }

    // MARK: Calls

    /// Sends a command made with `callID`; its reply (an ERROR is thrown).
    public func command(timeout: Double = 10, _ make: (_ callID: String) -> [Data]) async throws -> Envelope {
        let id = nextID("c")
        let frames = make(id)
        return try await withCheckedThrowingContinuation { enqueue(.command(id: id, frames, timeout: timeout, $0)) }
    }

    public func submit(_ spec: JobSpec, idempotencyKey: String, tenant: String?) async throws -> String {
        let frames = { (id: String) in Envelope.frames(.submit, SubmitBody(job: spec, idempotencyKey: idempotencyKey, tenant: tenant, callID: id)) }
        do {
            return try await command(frames).decode(JobIDBody.self).jobID
        } catch ClientError.noReply {
            // The same key gets the same job, so one more try cannot make a second.
            return try await command(frames).decode(JobIDBody.self).jobID
        }
    }

    public func result(_ jobID: String, scope: TenantScope) async throws -> JobRecord {
        try await command { Envelope.frames(.result, JobIDBody(jobID: jobID, scope: scope, callID: $0)) }.decode(ResultBody.self).job
    }

    public func cancel(_ jobID: String, scope: TenantScope) async throws -> JobRecord {
        try await command { Envelope.frames(.cancel, JobIDBody(jobID: jobID, scope: scope, callID: $0)) }.decode(ResultBody.self).job
    }

    public func status(scope: TenantScope, timeout: Double = 5) async throws -> StatusBody {
        try await command(timeout: timeout) { Envelope.frames(.status, StatusRequest(scope: scope, callID: $0)) }.decode(StatusBody.self)
    }

    /// One request to a worker of `role`; its streamed text goes to `onPartial`.
    /// Cancelling the calling task cancels the request: the broker withdraws
    /// it or stops its worker, and the call throws `cancelled`.
    /// The payload is encoded once into the REQUEST, the result decoded once as `Result`.
    public func request<Payload: Encodable, Result: Decodable>(
        role: String, payload: Payload, as: Result.Type, queueTimeout: Double, timeout: Double,
        onPartial: @escaping @Sendable (String) -> Void = { _ in }
    ) async throws -> Result {
        try Task.checkCancellation()
        let id = nextID("g")
        let frames = Envelope.frames(.request, role: role, RequestBody(requestID: id, payload: payload, timeout: queueTimeout))
        let result: RawJSON = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation {
                enqueue(.request(id: id, role: role, frames, timeout: timeout, onPartial: onPartial, $0))
            }
        } onCancel: {
            enqueue(.cancelRequest(id: id))
        }
        do { return try result.decode(Result.self) } catch {
            throw ClientError.unexpected("the \(role) worker's result is not what was asked for: \(error)")
        }
    }

    /// A new request or call id.
    private func nextID(_ prefix: String) -> String {
        lock.lock()
        defer { lock.unlock() }
        counter += 1
        return "\(prefix)\(getpid())-\(counter)"
    }

    // MARK: Events

    /// Waits until the client listens to every job's events (at most
    /// `seconds`): a job submitted after it is heard from its first event.
    public func waitUntilSubscribed(within seconds: Double = 3) {
        let deadline = Date().addingTimeInterval(seconds)
        subscribed.lock()
        while !isSubscribed && subscribed.wait(until: deadline) {}
        subscribed.unlock()
    }

    /// A job's events: those already seen, then new ones, ending after the
    /// job's last (done, failed or cancelled). A job that goes quiet for 2 s
    /// is looked up, so a missed last event does not leave the stream open.
    public func events(of jobID: String) -> AsyncStream<JobEvent> {
        AsyncStream(bufferingPolicy: .unbounded) { continuation in
            if let id = addListener(jobID, .stream(continuation)) {
                continuation.onTermination = { [weak self] _ in self?.removeListener(jobID, id) }
            }
        }
    }

    /// The same events for a caller on a thread of its own (`BlockingEvents`):
    /// `handler` is called on the client's thread, with nil after the job's
    /// last event, and must return quickly. Returns what stops listening.
    public func listen(to jobID: String, _ handler: @escaping @Sendable (JobEvent?) -> Void) -> @Sendable () -> Void {
        guard let id = addListener(jobID, .function(handler)) else { return {} }
        return { [weak self] in self?.removeListener(jobID, id) }
    }

    /// Hands a new listener the job's events seen so far, then registers it
    /// (nil: the job had already ended, and the listener was finished).
    private func addListener(_ jobID: String, _ sink: Sink) -> UInt64? {
        lock.lock()
        nextListener += 1
        let id = nextListener
        // Under the lock, so that no event falls between those seen and the new ones.
        for e in recent[jobID]?.events ?? [] { sink.send(e) }
        let ended = recent[jobID]?.events.last.map(Self.isLast) == true
        if !ended { listeners[jobID, default: [:]][id] = Listener(sink: sink, lastEvent: Date()) }
        lock.unlock()
        if ended {
            sink.finish()
            return nil
        }
        return id
    }

    private func removeListener(_ jobID: String, _ id: UInt64) {
        lock.lock()
        listeners[jobID]?[id] = nil
        if listeners[jobID]?.isEmpty == true { listeners[jobID] = nil }
        lock.unlock()
    }

    static func isLast(_ e: JobEvent) -> Bool { e.kind == .jobDone || e.kind == .jobFailed || e.kind == .jobCancelled }

    /// Keeps `e` and hands it to the job's listeners (outside the lock: a
    /// stream that finishes calls back into `removeListener`).
    private func deliver(_ e: JobEvent) {
        lock.lock()
        var entry = recent[e.jobID] ?? (events: [], touched: Date())
        if entry.events.count < Self.recentPerJob || Self.isLast(e) { entry.events.append(e) }
        entry.touched = Date()
        recent[e.jobID] = entry
        if recent.count > Self.recentJobs, let oldest = recent.min(by: { $0.value.touched < $1.value.touched })?.key {
            recent[oldest] = nil
        }
        let targets = listeners[e.jobID].map { Array($0.values) } ?? []
        if Self.isLast(e) {
            listeners[e.jobID] = nil
        } else if !targets.isEmpty {
            for id in listeners[e.jobID]!.keys { listeners[e.jobID]![id]!.lastEvent = Date() }
        }
        lock.unlock()
        for l in targets {
            l.sink.send(e)
            if Self.isLast(e) { l.sink.finish() }
        }
    }

    /// Jobs whose listeners have heard nothing for 2 s: their state is asked
    /// for, and a job that has ended gets its last event.
    private func checkQuietJobs() {
        lock.lock()
        let quiet = listeners.compactMap { job, ls in ls.values.allSatisfy { Date().timeIntervalSince($0.lastEvent) >= 2 } ? job : nil }
        for job in quiet { for id in listeners[job]!.keys { listeners[job]![id]!.lastEvent = Date() } }
        lock.unlock()
        for job in quiet {
            Task {
                do {
                    let record = try await self.result(job, scope: .everyTenant)
                    switch record.state {
                    case .running: break
                    case .done: self.deliver(JobEvent(jobID: job, kind: .jobDone, answer: record.answer))
                    case .failed: self.deliver(JobEvent(jobID: job, kind: .jobFailed, error: record.error))
                    case .cancelled: self.deliver(JobEvent(jobID: job, kind: .jobCancelled, error: record.error))
                    }
                } catch let ClientError.remote(e) where e.code == .notFound {
                    self.deliver(JobEvent(jobID: job, kind: .jobFailed, error: "the broker has no job '\(job)'"))
                } catch {
                    // The broker is away; asked again in 2 s.
                }
            }
        }
    }

    // MARK: The bus thread

    private func run() {
        var client: BusClient?
        var lastCheck = Date()
        var lastBeat = Date()
        var buffer = [UInt8](repeating: 0, count: 256)
        while true {
            lock.lock()
            let done = stopped
            lock.unlock()
            if done { return }
            do {
                if client == nil {
                    let c = try BusClient(settings: settings)
                    // Confirmed live, so that a job submitted after `waitUntilSubscribed` loses no event.
                    do { try c.subscribe(nil, confirmWithin: 2) } catch ClientError.noReply {}
                    while let e = try c.nextEvent(timeout: 0) { deliver(e) }
                    client = c
                    subscribed.lock()
                    isSubscribed = true
                    subscribed.broadcast()
                    subscribed.unlock()
                }
                let c = client!
                var poller = Poller()
                poller.add(c.socket)
                poller.add(c.eventSocket!)
                poller.add(fileDescriptor: wakeRead)
                let ready = try poller.poll(timeout: min(0.25, settings.heartbeatInterval))
                if ready.contains(2) { while read(wakeRead, &buffer, buffer.count) > 0 {} }
                lock.lock()
                let out = outbox
                outbox = []
                lock.unlock()
                try sendUnsent(on: c)
                for o in out { try send(o, on: c) }
                while let frames = try c.socket.receiveNow() { receive(frames) }
                while let frames = try c.eventSocket!.receiveNow() {
                    if frames.count == 3, let e = try? JSONDecoder().decode(JobEvent.self, from: frames[2]) { deliver(e) }
                }
                // While it waits for requests, it says so (the broker drops the
                // requests of a client gone silent).
                if !requests.isEmpty && Date().timeIntervalSince(lastBeat) >= settings.heartbeatInterval {
                    lastBeat = Date()
                    _ = try c.socket.send(Envelope.frames(.heartbeat), wait: false)
                }
                // Calls past their deadline fail; the socket stays (ZeroMQ reconnects
                // by itself, and a late reply names a caller no longer waiting).
                expire(settings.frontend)
                if let refusal = c.handshakeRefusal() {
                    refuse(refusal)
                    client = nil
                }
            } catch {
                Log.warning("the connection to the broker failed: \(error); connecting again")
                failAll(ClientError.unexpected("the connection to the broker failed: \(error)"))
                client = nil
                Thread.sleep(forTimeInterval: 0.5)
            }
            if Date().timeIntervalSince(lastCheck) >= 1 {
                lastCheck = Date()
                checkQuietJobs()
            }
        }
    }

    private func send(_ o: Outgoing, on c: BusClient) throws {
        func tooLarge(_ frames: [Data]) -> ClientError? {
            guard let body = frames.last, body.count > maxBodyBytes else { return nil }
            return ClientError.remote(ErrorBody(code: .tooLarge, message: "the message to the broker would have \(body.count) bytes, over its limit of \(maxBodyBytes) (CHORUS_MAX_BODY_BYTES)"))
        }
        switch o {
        case let .command(_, frames, _, continuation) where tooLarge(frames) != nil:
            continuation.resume(throwing: tooLarge(frames)!)
        case let .request(_, _, frames, _, _, continuation) where tooLarge(frames) != nil:
            continuation.resume(throwing: tooLarge(frames)!)
        case let .command(id, frames, timeout, continuation):
            commands[id] = Command(deadline: Date().addingTimeInterval(timeout), timeout: timeout, continuation: continuation)
            try trySend(id, frames, on: c)
        case let .request(id, _, frames, timeout, onPartial, continuation):
            requests[id] = Pending(deadline: Date().addingTimeInterval(timeout), timeout: timeout, onPartial: onPartial, continuation: continuation)
            try trySend(id, frames, on: c)
        case let .cancelRequest(id):
            // Answered by the request's own ERROR (cancelled); nothing to send for one already answered.
            if requests[id] != nil { try trySend(id, Envelope.frames(.cancel, RequestIDBody(requestID: id)), on: c) }
        }
    }

    /// Sends at once if the socket takes it, else keeps it for `sendUnsent`.
    private func trySend(_ id: String, _ frames: [Data], on c: BusClient) throws {
        if !unsent.isEmpty {
            unsent.append((id, frames))
        } else if try !c.socket.send(frames, wait: false) {
            unsent.append((id, frames))
        }
    }

    /// Sends what the socket could not take before, in order, dropping what no call waits for any more.
    private func sendUnsent(on c: BusClient) throws {
        unsent.removeAll { commands[$0.id] == nil && requests[$0.id] == nil }
        while let first = unsent.first {
            guard try c.socket.send(first.frames, wait: false) else { return }
            unsent.removeFirst()
        }
    }

    private func receive(_ frames: [Data]) {
        guard let envelope = try? Envelope(frames: frames, maxBodyBytes: Int(BusProtocol.transportLimitBytes)) else {
            Log.warning("an unreadable reply from the broker was dropped")
            return
        }
        switch envelope.header.command {
        case .partial:
            if let p = try? envelope.decode(PartialBody.self), let r = requests[p.requestID] { r.onPartial(p.text) }
        case .final:
            // The result is passed to its caller as bytes, decoded there once as the type it asked for.
            guard let f = envelope.fields, let id = f.string("request_id"), let result = f.raw("result") else { return }
            requests.removeValue(forKey: id)?.continuation.resume(returning: RawJSON(checked: result))
        case .error:
            let body = (try? envelope.decode(ErrorBody.self)) ?? ErrorBody(code: .internalError, message: "an unreadable error from the broker")
            if let id = body.requestID, let r = requests.removeValue(forKey: id) {
                r.continuation.resume(throwing: ClientError.remote(body))
            } else if let id = body.callID, let c = commands.removeValue(forKey: id) {
                c.continuation.resume(throwing: ClientError.remote(body))
            } else if body.code == .unauthorized && body.requestID == nil && body.callID == nil {
                // A refusal of this client itself: every caller hears it.
                failAll(ClientError.remote(body))
            } else {
                Log.warning("an error from the broker that no caller waits for was dropped: \(body.message.prefix(200))")
            }
        default:
            if let id = envelope.fields?.string("call_id"), let c = commands.removeValue(forKey: id) {
                c.continuation.resume(returning: envelope)
            } else {
                Log.warning("a \(envelope.header.command.rawValue) from the broker that no command waits for was dropped")
            }
        }
    }

    /// Fails the calls that waited past their deadline.
    private func expire(_ endpoint: String) {
        let now = Date()
        for (id, r) in requests where r.deadline < now {
            requests[id] = nil
            r.continuation.resume(throwing: ClientError.noReply(endpoint: endpoint, seconds: r.timeout))
        }
        for (id, c) in commands where c.deadline < now {
            commands[id] = nil
            c.continuation.resume(throwing: ClientError.noReply(endpoint: endpoint, seconds: c.timeout))
        }
    }

    private func refuse(_ reason: String) {
        failAll(ClientError.refused(endpoint: settings.frontend, reason: reason))
    }

    private func failAll(_ error: ClientError) {
        for c in commands.values { c.continuation.resume(throwing: error) }
        commands = [:]
        for (_, r) in requests { r.continuation.resume(throwing: error) }
        requests = [:]
    }
}

extension BrokerClient {
    /// Runs `work` on this client and waits for it, for callers that are not
    /// async themselves (a worker's request handler, the command line). Never
    /// from a task: it blocks its thread, and the task it waits for needs one
    /// of the same few.
    public func blocking<T: Sendable>(_ work: @escaping @Sendable (BrokerClient) async throws -> T) throws -> T {
        let box = BlockingResult<T>()
        let done = DispatchSemaphore(value: 0)
        Task {
            do { box.set(.success(try await work(self))) } catch { box.set(.failure(error)) }
            done.signal()
        }
        done.wait()
        return try box.get()
    }
}

private final class BlockingResult<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var result: Result<T, Error>?
    func set(_ r: Result<T, Error>) { lock.lock(); result = r; lock.unlock() }
    func get() throws -> T {
        lock.lock()
        defer { lock.unlock() }
        return try result!.get()
    }
}

/// A job's events for a caller that waits on a thread rather than in a task
/// (the command line): each `next` waits at most its timeout, so that the
/// caller can notice Ctrl-C between events. The client's thread hands each
/// event straight to the waiting one.
public final class BlockingEvents: @unchecked Sendable {
    private let condition = NSCondition()
    private var queue: [JobEvent] = []
    private var finished = false
    private var stopListening: (@Sendable () -> Void)?

    public init(_ client: BrokerClient, jobID: String) {
        let stop = client.listen(to: jobID) { [weak self] e in
            guard let self else { return }
            self.condition.lock()
            if let e { self.queue.append(e) } else { self.finished = true }
            self.condition.broadcast()
            self.condition.unlock()
        }
        condition.lock()
        stopListening = stop
        condition.unlock()
    }

    /// Whether the job's events have ended and every one was taken.
    public var ended: Bool {
        condition.lock()
        defer { condition.unlock() }
        return finished && queue.isEmpty
    }

    /// The next event, or nil after `timeout` seconds (or at the end).
    public func next(timeout: Double) -> JobEvent? {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while queue.isEmpty && !finished && condition.wait(until: deadline) {}
        return queue.isEmpty ? nil : queue.removeFirst()
    }

    /// Stops listening.
    public func stop() {
        condition.lock()
        let stop = stopListening
        stopListening = nil
        condition.unlock()
        stop?()
    }
}
