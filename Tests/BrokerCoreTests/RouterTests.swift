import BrokerCore
import Bus
import Foundation
import Protocol
import Testing

/// The router in this process over real ZeroMQ sockets (a ROUTER bound on an
/// inproc endpoint, workers as DEALERs), turned as the broker's loop turns
/// it: worker messages, the tick when due, dispatch. No broker process.
final class RouterBench: RouterDelegate {
    let context = BusContext()
    let backend: BusSocket
    let endpoint = "inproc://router-\(UUID().uuidString)"
    let heartbeat: Double
    var router: Router!
    private var nextTick = 0.0

    var started: [(tag: String, worker: String)] = []
    var finished: [(tag: String, attempt: Int, worker: String, result: JSONValue)] = []
    var failed: [(tag: String, error: ErrorBody)] = []
    /// The results as the router handed them on, byte for byte.
    var finishedBytes: [Data] = []

    init(heartbeat: Double = 0.05, liveness: Int = 3, queueTimeout: Double = 5, maxAttempts: Int = 3) throws {
        self.heartbeat = heartbeat
        backend = try BusSocket(context, .router)
        try backend.bind(endpoint)
        router = Router(settings: Router.Settings(roles: ["echo", "generator"], heartbeatInterval: heartbeat, heartbeatLiveness: liveness,
                                                  queueTimeout: queueTimeout, maxAttempts: maxAttempts, maxBodyBytes: 1 << 20),
                        backend: backend, replyToClient: { _, _ in })
        router.delegate = self
        nextTick = Date().timeIntervalSince1970 + heartbeat
    }

    /// One turn of the broker's loop.
    func turn() throws {
        while let frames = try backend.receiveNow() { router.workerMessage(frames) }
        if Date().timeIntervalSince1970 >= nextTick {
            router.tick()
            nextTick = Date().timeIntervalSince1970 + heartbeat
        }
        router.dispatch()
    }

    /// Turns the router and pumps the workers until `condition` holds (false after `timeout`).
    @discardableResult
    func run(_ workers: [Peer], timeout: Double = 5, until condition: () throws -> Bool) throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            try turn()
            for w in workers { try w.pump() }
            try turn()
            if try condition() { return true }
            Thread.sleep(forTimeInterval: 0.002)
        }
        return false
    }

    func requestStarted(_ tag: String, role: String, worker: String, queued: Double) { started.append((tag, worker)) }
    func requestPartial(_ tag: String, role: String, text: String) {}
    func requestFinished(_ tag: String, attempt: Int, result: RawJSON, worker: String, queued: Double, seconds: Double) {
        finished.append((tag, attempt, worker, (try? result.decode(JSONValue.self)) ?? .null))
        finishedBytes.append(result.bytes)
    }
    func requestFailed(_ tag: String, error: ErrorBody, worker: String?, queued: Double, seconds: Double) { failed.append((tag, error)) }
}

/// A worker speaking the protocol over a DEALER: registers, heartbeats unless
/// silent, keeps what it is sent, answers when told.
final class Peer {
    let socket: BusSocket
    let id: String
    var silent = false
    private(set) var requests: [RequestBody<JSONValue>] = []
    /// The payloads as they arrived, byte for byte.
    private(set) var payloadBytes: [Data] = []
    private(set) var cancelled: [String] = []
    private(set) var heartbeatsHeard = 0
    /// The ERRORs the broker sent it.
    private(set) var errors: [ErrorBody] = []
    private var lastBeat = Date().timeIntervalSince1970

    init(_ bench: RouterBench, role: String, id: String, capacity: Int = 1) throws {
        self.id = id
        socket = try BusSocket(bench.context, .dealer)
        try socket.connect(bench.endpoint)
        try socket.send(Envelope.frames(.ready, role: role, ReadyBody(workerID: id, host: "test", pid: 0, model: "m", capacity: capacity)))
    }

    func pump() throws {
        while let frames = try socket.receiveNow() {
            let envelope = try Envelope(frames: frames)
            switch envelope.header.command {
            case .request:
                requests.append(try envelope.decode(RequestBody<JSONValue>.self))
                guard let payload = envelope.fields?.raw("payload") else { throw ProtocolError(.malformed, "a REQUEST without a payload") }
                payloadBytes.append(Data(payload))
            case .cancel: cancelled.append(try envelope.requiredString("request_id"))
            case .heartbeat: heartbeatsHeard += 1
            case .error: errors.append(try envelope.decode(ErrorBody.self))
            default: break
            }
        }
        let now = Date().timeIntervalSince1970
        if !silent && now - lastBeat >= 0.02 {
            try socket.send(Envelope.frames(.heartbeat))
            lastBeat = now
        }
    }

    /// Answers the oldest request it holds with `result` as written.
    func answer(raw result: String) throws {
        let r = requests.removeFirst()
        try socket.send(Envelope.finalFrames(requestID: RawJSON(checked: JSONCoding.quoted(r.requestID)), result: RawJSON(checked: Data(result.utf8))))
    }

    /// Answers the oldest request it holds with its payload and its own id.
    @discardableResult
    func answer() throws -> String? {
        guard !requests.isEmpty else { return nil }
        let r = requests.removeFirst()
        try socket.send(Envelope.frames(.final, FinalBody(requestID: r.requestID, result: JSONValue.object(["by": .string(id), "echo": r.payload]))))
        return r.requestID
    }
}

/// A payload as the engine would hand it to the router: encoded once.
func raw(_ value: JSONValue) -> RawJSON {
    (try? RawJSON(encoding: value)) ?? RawJSON(checked: Data("null".utf8))
}

@Suite("router, in process", .serialized)
struct RouterTests {
    @Test("least recently used: requests go to idle workers in the order they became idle")
    func leastRecentlyUsed() throws {
        let bench = try RouterBench()
        let a = try Peer(bench, role: "echo", id: "a"), b = try Peer(bench, role: "echo", id: "b")
        try bench.run([a, b]) { bench.router.status().workers.count == 2 }
        bench.router.enqueue(tag: "t1", role: "echo", payload: raw(.string("1")))
        bench.router.enqueue(tag: "t2", role: "echo", payload: raw(.string("2")))
        #expect(try bench.run([a, b]) { a.requests.count == 1 && b.requests.count == 1 })
        #expect(bench.started.map(\.worker) == ["a", "b"], "the first registered is the first used")
        // b finishes first, so b has been idle longest: it gets the next.
        try b.answer()
        #expect(try bench.run([a, b]) { bench.finished.count == 1 })
        try a.answer()
        #expect(try bench.run([a, b]) { bench.finished.count == 2 })
        bench.router.enqueue(tag: "t3", role: "echo", payload: raw(.string("3")))
        bench.router.enqueue(tag: "t4", role: "echo", payload: raw(.string("4")))
        #expect(try bench.run([a, b]) { bench.started.count == 4 })
        #expect(bench.started.map(\.worker) == ["a", "b", "b", "a"])
        #expect(bench.finished.map(\.tag) == ["t2", "t1"] && bench.finished.allSatisfy { $0.attempt == 1 })
        #expect(bench.finished[0].result["echo"] == .string("2"))
    }

    @Test("a worker that falls silent is removed after its liveness; its request goes to another as attempt 2")
    func retryAfterSilence() throws {
        let bench = try RouterBench(heartbeat: 0.05, liveness: 3)
        let a = try Peer(bench, role: "echo", id: "a")
        try bench.run([a]) { bench.router.hasWorker("echo") }
        bench.router.enqueue(tag: "t1", role: "echo", payload: raw(.string("x")))
        #expect(try bench.run([a]) { a.requests.count == 1 })
        let b = try Peer(bench, role: "echo", id: "b")
        a.silent = true
        #expect(try bench.run([a, b]) { b.requests.count == 1 }, "the request was not handed on")
        #expect(!bench.router.status().workers.contains { $0.workerID == "a" }, "the silent worker is still registered")
        #expect(b.requests[0].requestID.hasSuffix("/2"), "\(b.requests[0].requestID)")
        try b.answer()
        #expect(try bench.run([b]) { bench.finished.count == 1 })
        #expect(bench.finished[0].attempt == 2 && bench.finished[0].worker == "b")
        // a's answer, sent late from a connection no longer registered, does not count twice.
        try a.answer()
        try bench.run([b], timeout: 0.3) { false }
        #expect(bench.finished.count == 1)
    }

    @Test("after the last attempt a request fails with every reason; maxAttempts bounds the retries")
    func givesUp() throws {
        let bench = try RouterBench(heartbeat: 0.05, liveness: 2, maxAttempts: 2)
        var peers: [Peer] = []
        for n in 0..<2 {
            let p = try Peer(bench, role: "echo", id: "p\(n)")
            peers.append(p)
            try bench.run(peers) { bench.router.status().workers.count == 1 }
            if n == 0 { bench.router.enqueue(tag: "t1", role: "echo", payload: raw(.null)) }
            #expect(try bench.run(peers) { p.requests.count == 1 })
            p.silent = true
            #expect(try bench.run(peers) { bench.router.status().workers.isEmpty })
        }
        #expect(bench.failed.count == 1 && bench.failed[0].tag == "t1")
        #expect(bench.failed.first?.error.message.contains("gave up after 2 attempts") == true, "\(bench.failed)")
    }

    @Test("a request of a role without workers fails after the queue timeout, naming the role and what to run")
    func expiry() throws {
        let bench = try RouterBench(queueTimeout: 0.2)
        bench.router.enqueue(tag: "t1", role: "generator", payload: raw(.null))
        #expect(try bench.run([]) { !bench.failed.isEmpty })
        #expect(bench.failed[0].error.code == .noWorker && bench.failed[0].error.message.contains("no generator worker"), "\(bench.failed)")
        // With a worker of the role registered, however busy, a request waits its turn.
        let g = try Peer(bench, role: "generator", id: "g")
        try bench.run([g]) { bench.router.hasWorker("generator") }
        bench.router.enqueue(tag: "t2", role: "generator", payload: raw(.null))
        bench.router.enqueue(tag: "t3", role: "generator", payload: raw(.null))
        try bench.run([g], timeout: 0.6) { false }
        #expect(bench.failed.count == 1 && bench.router.status().queues["generator"] == 1)
        try g.answer()
        #expect(try bench.run([g]) { g.requests.count == 1 })
    }

    @Test("withdrawing a running request tells its worker to stop; its answer is then ignored")
    func cancel() throws {
        let bench = try RouterBench()
        let a = try Peer(bench, role: "echo", id: "a")
        try bench.run([a]) { bench.router.hasWorker("echo") }
        bench.router.enqueue(tag: "t1", role: "echo", payload: raw(.null))
        #expect(try bench.run([a]) { a.requests.count == 1 })
        bench.router.withdraw(tag: "t1")
        #expect(try bench.run([a]) { a.cancelled == [a.requests[0].requestID] })
        try a.answer()
        try bench.run([a], timeout: 0.3) { false }
        #expect(bench.finished.isEmpty && bench.failed.isEmpty)
        // A queued request withdrawn before any worker takes it never starts.
        let busy = try Peer(bench, role: "generator", id: "g")
        try bench.run([a, busy]) { bench.router.hasWorker("generator") }
        bench.router.enqueue(tag: "g1", role: "generator", payload: raw(.null))
        bench.router.enqueue(tag: "g2", role: "generator", payload: raw(.null))
        #expect(try bench.run([a, busy]) { busy.requests.count == 1 })
        bench.router.withdraw(tag: "g2")
        try busy.answer()
        try bench.run([a, busy], timeout: 0.3) { false }
        #expect(busy.requests.isEmpty && !bench.started.contains { $0.tag == "g2" })
    }

    @Test("heartbeats both ways: an idle worker hears the router's; a FINAL for a request it was not sent is refused")
    func heartbeatsAndForgery() throws {
        let bench = try RouterBench()
        let a = try Peer(bench, role: "echo", id: "a"), rogue = try Peer(bench, role: "echo", id: "rogue")
        try bench.run([a, rogue]) { bench.router.status().workers.count == 2 }
        #expect(try bench.run([a, rogue]) { a.heartbeatsHeard >= 3 })
        bench.router.enqueue(tag: "t1", role: "echo", payload: raw(.null))
        #expect(try bench.run([a, rogue]) { a.requests.count + rogue.requests.count == 1 })
        let (holder, other) = a.requests.isEmpty ? (rogue, a) : (a, rogue)
        let id = holder.requests[0].requestID
        try other.socket.send(Envelope.frames(.final, FinalBody(requestID: id, result: JSONValue.string("forged"))))
        try bench.run([a, rogue], timeout: 0.3) { false }
        #expect(bench.finished.isEmpty, "a forged result was taken")
        try holder.answer()
        #expect(try bench.run([a, rogue]) { bench.finished.count == 1 })
        #expect(bench.finished[0].worker == holder.id)
    }

    @Test("payloads and results pass through the router as bytes: as the engine encoded them, as the worker wrote them")
    func opaqueBytes() throws {
        let bench = try RouterBench()
        let a = try Peer(bench, role: "echo", id: "a")
        try bench.run([a]) { bench.router.hasWorker("echo") }
        // Spacing, key order, a number's spelling and escapes that a decode and re-encode would all change.
        let payload = #"{ "z" : 1.50e1, "a":[ ], "s":"\u00e9\/" }"#
        bench.router.enqueue(tag: "t1", role: "echo", payload: RawJSON(checked: Data(payload.utf8)))
        #expect(try bench.run([a]) { a.requests.count == 1 })
        #expect(a.payloadBytes == [Data(payload.utf8)])
        let result = #"{"text" : "ok",   "n":1E2}"#
        try a.answer(raw: result)
        #expect(try bench.run([a]) { bench.finished.count == 1 })
        #expect(bench.finishedBytes == [Data(result.utf8)])
        // A request id that needs escaping is written as JSON.
        bench.router.enqueue(tag: #"t"2\"#, role: "echo", payload: raw(.null))
        #expect(try bench.run([a]) { a.requests.count == 1 })
        #expect(a.requests[0].requestID == #"t"2\/1"#)
    }

    @Test("a worker's FINAL without a result is refused as malformed and not taken as an answer; its proper FINAL then is")
    func finalWithoutResult() throws {
        let bench = try RouterBench()
        let a = try Peer(bench, role: "echo", id: "a")
        try bench.run([a]) { bench.router.hasWorker("echo") }
        bench.router.enqueue(tag: "t1", role: "echo", payload: raw(.string("x")))
        #expect(try bench.run([a]) { a.requests.count == 1 })
        let id = a.requests[0].requestID
        try a.socket.send([Header(.final).frame, Data(#"{"request_id":"\#(id)"}"#.utf8)])
        #expect(try bench.run([a]) { !a.errors.isEmpty })
        #expect(a.errors.first?.code == .malformed && a.errors.first?.message.contains("result") == true, "\(a.errors)")
        #expect(bench.finished.isEmpty && bench.failed.isEmpty)
        try a.answer()
        #expect(try bench.run([a]) { bench.finished.count == 1 })
        #expect(bench.finished[0].tag == "t1" && bench.failed.isEmpty)
    }
}
