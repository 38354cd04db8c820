import Bus
import Client
import Foundation
import Journal
import Protocol
import TestKit
import Testing

/// The broker's re-sends, retries and late results, against a real broker
/// process, with scripted workers that fail exactly when the test says.
@Suite("Broker retries and late results, as separate processes", .serialized)
struct BrokerRetryTests {
    /// A client request sent without waiting, so the test can pump the workers meanwhile.
    final class PendingRequest {
        let client: BusClient
        let id: String
        var reply: Envelope?
        init(_ cluster: Cluster, role: String, payload: JSONValue) throws {
            client = try cluster.client()
            id = "req-\(UInt32.random(in: 0...UInt32.max))"
            try client.socket.send(Envelope.frames(.request, role: role, RequestBody(requestID: id, payload: payload, timeout: 20)))
        }
        private var lastBeat = Date()
        /// Reads the reply if it came; says it still waits (the broker drops
        /// the requests of a client gone silent).
        func poll() throws {
            if Date().timeIntervalSince(lastBeat) >= 0.5 {
                lastBeat = Date()
                try client.socket.send(Envelope.frames(.heartbeat))
            }
            while reply == nil, let frames = try client.socket.receiveNow() {
                let e = try Envelope(frames: frames)
                if e.header.command != .partial { reply = e }
            }
        }
    }

    @Test("a worker's internal error sends the request to another worker, which answers it")
    func retryAfterInternalError() throws {
        let cluster = try Cluster()
        try cluster.startBroker()
        let a = try ScriptedWorker(cluster, role: "echo", id: "echo-a")
        let b = try ScriptedWorker(cluster, role: "echo", id: "echo-b")
        try cluster.waitForWorkers(["echo": 2])
        let request = try PendingRequest(cluster, role: "echo", payload: .string("hello"))
        #expect(try pump([a, b]) { !a.received.isEmpty || !b.received.isEmpty }, "no worker got the request")
        let first = a.received.isEmpty ? b : a
        let second = first === a ? b : a
        let taken = try #require(first.take())
        #expect(taken.requestID == request.id && taken.payload == .string("hello"))
        try first.fail(taken.requestID, code: .internalError, message: "busy with another request")
        #expect(try pump([a, b]) { !second.received.isEmpty }, "the request went to the other worker")
        let retried = try #require(second.take())
        #expect(retried.requestID == taken.requestID && retried.payload == .string("hello"))
        try second.answer(retried.requestID, .string("answered by \(second.workerID)"))
        #expect(try pump([a, b], also: request.poll) { request.reply != nil })
        let reply = try #require(request.reply)
        #expect(reply.header.command == .final, "\(String(decoding: reply.body, as: UTF8.self))")
        #expect(try reply.decode(FinalBody<JSONValue>.self).result == .string("answered by \(second.workerID)"))
        #expect(first.received == [taken.requestID], "the failing worker was not given the request again")
        #expect(try reply.decode(FinalBody<JSONValue>.self).requestID == request.id, "the client gets its answer under its own id")
        #expect(cluster.log("broker.log").contains("could not serve it: busy with another request"))
    }

    @Test("a request whose workers keep failing gives up after CHORUS_MAX_ATTEMPTS, for a client and for a job")
    func outOfAttempts() throws {
        let cluster = try Cluster(extra: ["CHORUS_MAX_ATTEMPTS": "2"])
        try cluster.startBroker()
        let a = try ScriptedWorker(cluster, role: "echo", id: "echo-a")
        let b = try ScriptedWorker(cluster, role: "echo", id: "echo-b")
        let generator = try ScriptedWorker(cluster, role: "generator", id: "generator-x")
        try cluster.waitForWorkers(["echo": 2, "generator": 1])
        let workers = [a, b, generator]
        let request = try PendingRequest(cluster, role: "echo", payload: .string("doomed"))
        var failures = 0
        try pump(workers, also: {
            try request.poll()
            for w in [a, b] { while let r = w.take() { failures += 1; try w.fail(r.requestID, code: .internalError, message: "cannot now") } }
        }) { request.reply != nil }
        let reply = try #require(request.reply, "no reply after the attempts")
        #expect(reply.header.command == .error)
        let error = try reply.decode(ErrorBody.self)
        #expect(error.code == .workerFailed && error.requestID == request.id)
        #expect(error.message.contains("gave up after 2 attempts"), "\(error.message)")
        #expect(failures == 2, "exactly CHORUS_MAX_ATTEMPTS attempts were made")

        // A job's stage that runs out of attempts fails the job with the reason.
        let id = try cluster.client().submit(JobSpec(question: "What is 2 + 2?", rounds: 1, noMemory: true))
        var attempts: [String] = []
        try pump(workers, timeout: 30, also: {
            while let r = generator.take() {
                attempts.append(r.requestID)
                try generator.fail(r.requestID, code: .internalError, message: "out of memory for now")
            }
        }) { try cluster.client().result(id).state != .running }
        let job = try cluster.client().result(id)
        #expect(job.state == .failed && job.error?.contains("gave up after 2 attempts") == true, "\(job.error ?? "")")
        #expect(attempts == ["\(id)/0/0/1", "\(id)/0/0/2"], "\(attempts)")
    }

    @Test("a FINAL that arrives after its request was re-sent is kept once; the re-sent one's answer is ignored")
    func lateResult() throws {
        let cluster = try Cluster(heartbeat: 0.25, liveness: 4)
        try cluster.startBroker()
        let slow = try ScriptedWorker(cluster, role: "generator", id: "generator-slow")
        try cluster.waitForWorkers(["generator": 1])
        let other = try ScriptedWorker(cluster, role: "generator", id: "generator-other")
        let verifier = try ScriptedWorker(cluster, role: "verifier", id: "verifier-1")
        let refiner = try ScriptedWorker(cluster, role: "refiner", id: "refiner-1")
        let critic = try ScriptedWorker(cluster, role: "critic", id: "critic-1")
        try cluster.waitForWorkers(["generator": 2, "verifier": 1, "refiner": 1, "critic": 1])
        let all = [slow, other, verifier, refiner, critic]
        let client = try cluster.client()
        let id = try client.submit(JobSpec(question: "What is 2 + 3?", rounds: 1, seed: 9, noMemory: true))

        // The least recently used generator, the first to register, gets the stage, then falls silent.
        #expect(try pump(all) { !slow.received.isEmpty }, "the first generator got no request")
        let original = try #require(slow.take())
        #expect(original.requestID == "\(id)/0/0/1")
        slow.silent = true
        // Missed heartbeats: the broker re-sends the stage to the other generator.
        #expect(try pump(all) { !other.received.isEmpty }, "the stage was not re-sent")
        let resent = try #require(other.take())
        #expect(resent.requestID == "\(id)/0/0/2")
        #expect(cluster.log("broker.log").contains("re-queued"))

        // The silent worker's answer arrives late: the stage is still open, so it is kept.
        try slow.answer(original.requestID, try ScriptedWorker.stageResult("late answer\n#### 5\n"))
        #expect(try pump(all) { !verifier.received.isEmpty }, "the late result did not finish the stage")
        #expect(try pump([slow]) { slow.disconnected }, "the unregistered sender is told to register again")
        let verify = try #require(verifier.take())
        let verifyPayload = try verify.payload.decode(as: StagePayload.self)
        #expect(verifyPayload.answer == "late answer\n#### 5\n", "the verifier checks the late answer")

        // The re-sent request's answer comes after: ignored, not a second stage.
        try other.answer(resent.requestID, try ScriptedWorker.stageResult("second answer\n#### 6\n"))
        try verifier.answer(verify.requestID, try ScriptedWorker.stageResult("Looks right.\n#### 5\n"))
        #expect(try pump(all) { !refiner.received.isEmpty })
        let refine = try #require(refiner.take())
        try refiner.answer(refine.requestID, try ScriptedWorker.stageResult("refined\n#### 5\n"))
        #expect(try pump(all) { !critic.received.isEmpty })
        let judge = try #require(critic.take())
        try critic.answer(judge.requestID, try ScriptedWorker.stageResult("Yes", verdict: .accept))
        #expect(try pump(all) { try client.result(id).state != .running })

        let job = try client.result(id)
        #expect(job.state == .done && job.answer == "5", "\(job.state) \(job.answer ?? "none") \(job.error ?? "")")
        let generates = job.stages.filter { $0.stage == .generate }
        #expect(generates.count == 1)
        #expect(generates.first?.attempt == 1 && generates.first?.result?.text == "late answer\n#### 5\n")
        #expect(job.stages.map(\.stage) == [.generate, .verify, .refine, .critic])
        let journal = try JobJournal(path: cluster.dir.appendingPathComponent("journal.sqlite").path)
        #expect(try journal.stageCount(jobID: id) == 4)
        #expect(cluster.log("broker.log").contains("kept late result for \(id)/0/0/1"))
        #expect(try client.status().workers.first { $0.workerID == "generator-other" }?.state == .idle,
                "the worker whose answer was not needed is free again")
    }
}
