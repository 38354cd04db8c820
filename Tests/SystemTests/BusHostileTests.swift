import Bus
import Client
import Foundation
import Protocol
import TestKit
import Testing

/// The broker as a hostile client or worker sees it, in raw frames: forged
/// results, reused request ids, floods, clients that vanish, long words, and
/// other clients' jobs.
@Suite("Bus under hostile peers", .serialized)
struct BusHostileTests {
    /// A client that sends raw frames and reads its replies, heartbeating while it waits.
    final class RawClient {
        let peer: RawPeer
        init(_ cluster: Cluster) throws { peer = try RawPeer(cluster.settings.frontend) }

        func request(_ id: String, role: String = "echo", payload: JSONValue = .string("x"), timeout: Double = 20) throws {
            try peer.send(Envelope.frames(.request, role: role, RequestBody(requestID: id, payload: payload, timeout: timeout)))
        }

        /// The next reply that is not a PARTIAL, within `seconds`.
        func reply(within seconds: Double) throws -> Envelope? {
            let deadline = Date().addingTimeInterval(seconds)
            var beat = Date.distantPast
            while Date() < deadline {
                if Date().timeIntervalSince(beat) >= 0.3 {
                    beat = Date()
                    try peer.send(Envelope.frames(.heartbeat))
                }
                guard let e = try peer.reply(timeout: 0.1) else { continue }
                if e.header.command != .partial { return e }
            }
            return nil
        }
    }

    @Test("a FINAL from a connection the request was not sent to is refused (unauthorized) and never taken as the result: an unregistered one, a worker of another role, another worker of the same role")
    func forgedResults() throws {
        let cluster = try Cluster()
        try cluster.startBroker()
        let honest = try ScriptedWorker(cluster, role: "generator", id: "gen-honest")
        let other = try ScriptedWorker(cluster, role: "memory", id: "mem-rogue")
        try cluster.waitForWorkers(["generator": 1, "memory": 1])
        let client = try cluster.client()
        let jobID = try client.submit(JobSpec(question: "What is 2 + 2?", samples: 1, rounds: 1, seed: 1, noMemory: true))
        #expect(try pump([honest, other]) { !honest.received.isEmpty }, "the generator got no request")
        let requestID = try #require(honest.received.first)
        let forged = try FakeStage.json("forged\n#### 666")
        // An unregistered connection, and a registered worker of another role.
        let stranger = try RawPeer(cluster.settings.backend)
        try stranger.send(Envelope.frames(.final, FinalBody(requestID: requestID, result: forged)))
        let refusal = try #require(try stranger.reply(timeout: 5), "no answer to a forged FINAL")
        let refusalBody = try refusal.decode(ErrorBody.self)
        #expect(refusal.header.command == .error && refusalBody.code == .unauthorized, "\(refusalBody)")
        try other.answer(requestID, forged)
        // A second generator, registered after the request went to the first.
        let second = try ScriptedWorker(cluster, role: "generator", id: "gen-second")
        try cluster.waitForWorkers(["generator": 2, "memory": 1])
        try second.answer(requestID, forged)
        _ = try pump([honest, other, second], timeout: 1) { false }
        var job = try client.result(jobID)
        #expect(job.state == .running && job.stages.isEmpty, "a forged result was taken: \(job.stages.map(\.text))")
        #expect(cluster.log("broker.log").contains("refused a FINAL for \(requestID)"), "\(cluster.logs)")
        // The worker it was sent to answers: that is the stage's result.
        try honest.answer(requestID, try FakeStage.json("honest\n#### 4"))
        try waitUntil(10, "the honest result to be recorded") {
            try pump([honest, other, second], timeout: 0.2) { false }
            job = try client.result(jobID)
            return !job.stages.isEmpty
        }
        #expect(job.stages.first?.text == "honest\n#### 4" && job.stages.first?.worker == "gen-honest")
    }

    @Test("request ids are each client's own: two clients' same id never meet at a worker (the second is renamed there, and answered under its own), a client's second request under an open id is refused, and another client cannot cancel it")
    func requestIDs() throws {
        let cluster = try Cluster()
        try cluster.startBroker()
        let worker = try ScriptedWorker(cluster, role: "echo", id: "echo-1", capacity: 4)
        try cluster.waitForWorkers(["echo": 1])
        let a = try RawClient(cluster), b = try RawClient(cluster)
        try a.request("same", payload: .string("from a"))
        try b.request("same", payload: .string("from b"))
        #expect(try pump([worker], timeout: 5) { worker.received.count == 2 }, "the worker got \(worker.received)")
        // The second "same" reaches the worker under an id the broker issued.
        #expect(Set(worker.received).count == 2 && worker.received.filter { $0 == "same" }.count == 1, "\(worker.received)")
        // A's second request under its open id: refused, naming the id.
        try a.request("same", payload: .string("again"))
        let dup = try #require(try a.reply(within: 5), "no answer to a reused id")
        let dupError = try dup.decode(ErrorBody.self)
        #expect(dup.header.command == .error && dupError.code == .conflict && dupError.requestID == "same", "\(dupError)")
        // B cannot cancel A's request: it is B's own "same" that is cancelled.
        try b.peer.send(Envelope.frames(.cancel, RequestIDBody(requestID: "same")))
        let cancelled = try #require(try b.reply(within: 5))
        #expect((try cancelled.decode(ErrorBody.self)).code == .cancelled)
        // A's is answered, under A's id, with A's payload.
        while let r = worker.take() { try worker.answer(r.requestID, r.payload) }
        _ = try pump([worker], timeout: 0.5) { false }
        let answer = try #require(try a.reply(within: 5), "A's request was not answered")
        let final = try answer.decode(FinalBody<JSONValue>.self)
        #expect(answer.header.command == .final && final.requestID == "same" && final.result == .string("from a"), "\(final)")
    }

    @Test("floods: a client's open requests and a role's queue are bounded (busy, and the rest still served); the requests of a client gone silent are dropped and their worker freed")
    func floodsAndSilentClients() throws {
        let cluster = try Cluster(extra: ["CHORUS_MAX_CLIENT_REQUESTS": "5", "CHORUS_MAX_QUEUED_REQUESTS": "8", "CHORUS_CLIENT_TIMEOUT": "3"])
        try cluster.startBroker()
        let worker = try ScriptedWorker(cluster, role: "echo", id: "echo-1")
        try cluster.waitForWorkers(["echo": 1])
        let greedy = try RawClient(cluster)
        for i in 0..<6 { try greedy.request("g\(i)", timeout: 60) }
        let refused = try #require(try greedy.reply(within: 5))
        let refusal = try refused.decode(ErrorBody.self)
        #expect(refusal.code == .busy && refusal.requestID == "g5" && refusal.message.contains("CHORUS_MAX_CLIENT_REQUESTS"), "\(refusal)")
        // Five other clients: four fill the queue to its 8 (the greedy client's
        // 4 wait, one runs); the one whose request arrives last (connections are
        // made in any order) is refused.
        var others: [RawClient] = []
        try greedy.peer.send(Envelope.frames(.heartbeat)) // not silent yet
        for i in 0..<5 {
            let c = try RawClient(cluster)
            try c.request("o\(i)", timeout: 60)
            others.append(c)
        }
        try greedy.peer.send(Envelope.frames(.heartbeat))
        var refusedOthers: [Int] = []
        let until = Date().addingTimeInterval(2)
        while Date() < until && refusedOthers.isEmpty {
            try worker.pump()
            for (i, c) in others.enumerated() {
                if let e = try c.reply(within: 0.02) {
                    let body = try e.decode(ErrorBody.self)
                    #expect(body.code == .busy && body.message.contains("CHORUS_MAX_QUEUED_REQUESTS"), "\(body)")
                    refusedOthers.append(i)
                }
            }
        }
        #expect(refusedOthers.count == 1, "refused: \(refusedOthers)\n\(cluster.log("broker.log"))")
        // The greedy client goes silent (the others say they still wait): its
        // requests are dropped, its worker told to stop the one it runs.
        let waiting = others.enumerated().filter { !refusedOthers.contains($0.offset) }.map(\.element)
        let silentUntil = Date().addingTimeInterval(5)
        while Date() < silentUntil {
            try worker.pump()
            for c in waiting { try c.peer.send(Envelope.frames(.heartbeat)) }
            Thread.sleep(forTimeInterval: 0.3)
        }
        #expect(cluster.log("broker.log").contains("dropped: its client has been silent"), "\(cluster.logs)")
        #expect(try cluster.client().status().queues["echo"] == waiting.count, "the greedy client's waiting requests left the queue")
        // Those still waiting are served, each under its own id.
        var answers: [Int: Envelope] = [:]
        try waitUntil(20, "the answers of the clients still waiting (\(answers.count) of \(waiting.count))") {
            try worker.pump()
            while let r = worker.take() { try worker.answer(r.requestID, r.payload) }
            for (i, c) in waiting.enumerated() where answers[i] == nil {
                if let e = try c.reply(within: 0.05) { answers[i] = e }
            }
            return answers.count == waiting.count
        }
        for (i, e) in answers {
            let final = try e.decode(FinalBody<JSONValue>.self)
            let own = others.firstIndex { $0 === waiting[i] }.map { "o\($0)" }
            #expect(e.header.command == .final && final.requestID == own, "client \(i)")
        }
    }

    @Test("one long word to a generator: refused at once as longer than the context (context_length_exceeded), and the worker serves the next request")
    func longWord() throws {
        let cluster = try Cluster()
        try cluster.startBroker()
        try cluster.startWorker("generator")
        try cluster.waitForWorkers(["generator": 1])
        let client = try cluster.client()
        var random = SystemRandomNumberGenerator()
        let word = String((0..<150_000).map { _ in Character(UnicodeScalar(UInt8.random(in: 97...122, using: &random))) })
        let started = Date()
        do {
            _ = try client.request(role: "generator", payload: try JSONValue(encoding: StagePayload(stage: .generate, question: word, seed: 1)),
                                   timeout: 60)
            Issue.record("a 150,000-letter question was answered")
        } catch let ClientError.remote(e) {
            #expect(e.code == .contextLengthExceeded && e.message.contains("tokens"), "\(e)")
        }
        #expect(Date().timeIntervalSince(started) < 30, "took \(Date().timeIntervalSince(started)) s")
        let reply = try client.request(role: "generator", payload: try JSONValue(encoding: StagePayload(
            stage: .generate, question: "What is 1 + 1?", seed: 1, sampling: SamplingOverride(maxTokens: 4))), timeout: 30)
        #expect(reply["text"] != nil)
    }

    @Test("on the bus, jobs belong to their CURVE key: another listed client gets not found for RESULT and CANCEL, sees none in STATUS, and its same idempotency key makes its own job")
    func jobsPerKey() throws {
        let cluster = try Cluster(secure: true, extra: ["CHORUS_QUEUE_TIMEOUT": "60"])
        try Cluster.makeKey("other", in: cluster.dir, publicFolder: cluster.dir.appendingPathComponent("clients"))
        try cluster.startBroker()
        let mine = try cluster.client()
        var otherSettings = cluster.settings
        otherSettings.clientKeyFile = cluster.dir.appendingPathComponent("other.key").path
        let theirs = try BusClient(settings: otherSettings)
        let spec = JobSpec(question: "What is 3 + 3?", samples: 1, rounds: 1, seed: 1, noMemory: true)
        // Both listen to every job they may see; a raw subscriber asks for every topic there is.
        try mine.subscribe(nil, confirmWithin: 10)
        try theirs.subscribe(nil, confirmWithin: 10)
        let everything = try BusClient(settings: otherSettings)
        try everything.subscribe(nil, confirmWithin: 10)
        try everything.eventSocket?.subscribe("")
        try everything.eventSocket?.subscribe("job.\(JobEvent.hexTopic("client:cli"))")
        let id = try mine.submit(spec, idempotencyKey: "k-1")
        let event = try mine.nextEvent(timeout: 5)
        #expect(event?.jobID == id && event?.kind == .accepted, "the owner hears its job")
        #expect(try theirs.nextEvent(timeout: 1) == nil, "another key heard the job's events")
        #expect(try everything.eventSocket?.receive(timeout: 1) == nil, "a subscription to every topic, or to the owner's, heard another key's job")
        for attempt in [{ _ = try theirs.result(id) }, { _ = try theirs.cancel(id) }] {
            do { try attempt(); Issue.record("another key reached job \(id)") } catch let ClientError.remote(e) {
                #expect(e.code == .notFound, "\(e)")
            }
        }
        #expect(try theirs.status().jobsInFlight.isEmpty && mine.status().jobsInFlight == [id])
        let theirOwn = try theirs.submit(spec, idempotencyKey: "k-1")
        #expect(theirOwn != id)
        #expect(try mine.result(id).owner?.client.hasPrefix("client:") == true)
    }
}
