import Bus
import Client
import Foundation
import Journal
import Protocol
import TestKit
import Testing

/// The first GSM8K test question and its answer.
func gsm8kQuestion(_ index: Int = 0) throws -> (question: String, answer: String) {
    let path = Paths.repositoryRoot.appendingPathComponent("datasets/gsm8k/test.jsonl")
    let lines = try String(contentsOf: path, encoding: .utf8).split(separator: "\n")
    guard lines.indices.contains(index) else { throw TestKitError("\(path.path) has \(lines.count) questions, not \(index + 1)") }
    let object = try JSONRead.object(String(lines[index]), "GSM8K question \(index + 1)")
    return (try JSONRead.value(object, "question"), try JSONRead.value(object, "answer"))
}

/// End-to-end tests with real processes, sockets, journal and model.
@Suite("Broker and role services, as separate processes", .serialized)
struct SystemTests {
    static let pipelineRoles = ["generator", "verifier", "refiner", "critic"]

    func startPipeline(_ cluster: Cluster, generators: Int = 1) throws {
        try cluster.startBroker()
        for _ in 0..<generators { try cluster.startWorker("generator") }
        for role in ["verifier", "refiner", "critic"] { try cluster.startWorker(role) }
        try cluster.waitForWorkers(["generator": generators, "verifier": 1, "refiner": 1, "critic": 1])
    }

    @Test("a GSM8K question goes through all four stages; events stream; the same seed gives the same trajectory")
    func solveEndToEnd() throws {
        let cluster = try Cluster()
        try startPipeline(cluster)
        let client = try cluster.client()
        try client.subscribe(nil, confirmWithin: 10)
        let (question, answer) = try gsm8kQuestion()
        let spec = JobSpec(question: question, samples: 1, rounds: 1, seed: 11, answer: answer)
        let id = try client.submit(spec)
        let job = try cluster.waitForJob(id)
        #expect(job.state == .done, "\(job.error ?? "")\n\(cluster.logs)")
        let kinds = job.stages.sorted { $0.step < $1.step }.map(\.stage)
        #expect(kinds == [.generate, .verify, .refine, .critic])
        for s in job.stages {
            let r = try #require(s.result)
            #expect(s.memory == nil)
            #expect(!r.prompt.isEmpty && r.prompt.contains(question))
            #expect(s.worker.hasPrefix(s.role.rawValue))
            #expect(r.sampling.seed == s.payload.seed)
            #expect(s.seconds > 0 && r.promptTokens > 0)
            if s.stage != .critic { #expect(r.completionTokens > 0 && !r.text.isEmpty) }
        }
        let critic = try #require(job.stages.first { $0.stage == .critic }?.result)
        #expect(critic.verdict == .accept || critic.verdict == .reject)
        #expect((0...1).contains(critic.score ?? -1))
        #expect(job.stages.first { $0.stage == .verify }?.payload.answer == job.stages.first { $0.stage == .generate }?.text)
        #expect(job.stages.first { $0.stage == .refine }?.payload.critique == job.stages.first { $0.stage == .verify }?.text)

        // The events of the job, in order.
        var kindsSeen: [JobEvent.Kind] = []
        while let e = try client.nextEvent(timeout: 0.5) {
            if e.jobID == id { kindsSeen.append(e.kind) }
        }
        #expect(kindsSeen.first == .accepted && kindsSeen.last == .jobDone, "\(kindsSeen)")
        #expect(kindsSeen.filter { $0 == .stageStarted }.count == 4 && kindsSeen.filter { $0 == .stageDone }.count == 4)
        #expect(kindsSeen.contains(.partial))

        // The same seed gives the same trajectory, also through the command line.
        let out = try Program.chorus(["solve", question, "--seed", "11", "--rounds", "1", "--json", "--config", cluster.configPath])
        #expect(out.status == 0, "\(out.stderr)")
        let again = try JSONDecoder().decode(JobRecord.self, from: Data(out.stdout.utf8))
        #expect(again.id != id)
        #expect(again.stages.sorted { $0.step < $1.step }.map(\.text) == job.stages.sorted { $0.step < $1.step }.map(\.text))
        #expect(again.answer == job.answer)
        let status = try Program.chorus(["status", "--config", cluster.configPath])
        #expect(status.status == 0 && status.stdout.contains("generator") && status.stdout.contains("idle"))
        let result = try Program.chorus(["result", id, "--config", cluster.configPath])
        #expect(result.stdout.contains("answer:") && result.stdout.contains("critic"))
    }

    @Test("a model per role: a Gemma 3 generator beside SmolLM2 workers; the trajectory records each stage's model")
    func modelPerRole() throws {
        let gemma = try Models.require(Models.gemma)
        let cluster = try Cluster(extra: ["GENERATOR_MODEL": gemma, "GENERATOR_MAX_TOKENS": "48"])
        try startPipeline(cluster)
        let client = try cluster.client()
        let models = Dictionary(try client.status().workers.map { ($0.role.rawValue, $0.model) }, uniquingKeysWith: { a, _ in a })
        let gemmaName = URL(fileURLWithPath: gemma).lastPathComponent, smolName = URL(fileURLWithPath: Models.smolLM2).lastPathComponent
        #expect(models == ["generator": gemmaName, "verifier": smolName, "refiner": smolName, "critic": smolName])
        let (question, _) = try gsm8kQuestion(3)
        let job = try cluster.waitForJob(try client.submit(JobSpec(question: question, rounds: 1, seed: 2, noMemory: true)))
        #expect(job.state == .done, "\(job.error ?? "")\n\(cluster.logs)")
        let byStage = Dictionary(job.stages.map { ($0.stage, $0.result?.model ?? "none") }, uniquingKeysWith: { a, _ in a })
        #expect(byStage == [.generate: gemmaName, .verify: smolName, .refine: smolName, .critic: smolName])
        let generate = try #require(job.stages.first { $0.stage == .generate }?.result)
        // Gemma 3 270M is a base model: its prompt is plain text after <bos>, no chat turns.
        #expect(!generate.prompt.contains("<|im_start|>") && generate.prompt.contains(question))
        #expect(job.stages.first { $0.stage == .verify }?.result?.prompt.contains("<|im_start|>") == true)
        #expect(generate.completionTokens > 0)
    }

    @Test("a worker whose model does not load exits at once, naming its role, the file and the reason")
    func modelLoadFailures() throws {
        let cluster = try Cluster()
        let dir = cluster.dir
        let truncated = dir.appendingPathComponent("truncated.gguf").path
        let full = try Data(contentsOf: Paths.repositoryRoot.appendingPathComponent("Tests/InferenceTests/Fixtures/synthetic/qwen2-Q8_0.gguf"))
        try full.prefix(5000).write(to: URL(fileURLWithPath: truncated))
        // The same file claiming an architecture Chorus does not run.
        var patched = full
        let name = Data("general.architecture".utf8)
        let at = try #require(patched.range(of: name)).upperBound + 4 + 8
        #expect(patched[at..<(at + 5)] == Data("qwen2".utf8))
        patched.replaceSubrange(at..<(at + 5), with: Data("mamba".utf8))
        let unsupported = dir.appendingPathComponent("mamba.gguf").path
        try patched.write(to: URL(fileURLWithPath: unsupported))
        let cases = [("/no/such/model.gguf", "no model at /no/such/model.gguf"), (truncated, "truncated"),
                     (unsupported, "architecture 'mamba' is not supported")]
        for (path, reason) in cases {
            let start = Date()
            let run = try Program.run(Paths.binary("chorus-refiner"), ["--config", cluster.configPath, "--model", path], timeout: 30)
            #expect(run.status == 3, "\(path): exit \(run.status)")
            #expect(run.stderr.contains("cannot load the refiner model \(path): ") && run.stderr.contains(reason), "\(run.stderr)")
            #expect(Date().timeIntervalSince(start) < 10)
        }
    }

    @Test("kill -9 of one of two generators in the middle of a job: the job still completes")
    func killGenerator() throws {
        let cluster = try Cluster(extra: ["GENERATOR_MAX_TOKENS": "400"])
        try startPipeline(cluster, generators: 2)
        let client = try cluster.client()
        try client.subscribe(nil, confirmWithin: 10)
        let (question, _) = try gsm8kQuestion(1)
        let id = try client.submit(JobSpec(question: question, samples: 1, rounds: 1, seed: 5))
        var victim: String?
        let deadline = Date().addingTimeInterval(30)
        while victim == nil && Date() < deadline {
            if let e = try client.nextEvent(timeout: 1), e.jobID == id, e.kind == .stageStarted, e.role == .generator { victim = e.worker }
        }
        let worker = try #require(victim, "no generator started the job")
        let pid = try #require(client.status().workers.first { $0.workerID == worker }?.pid)
        let process = try #require(cluster.workers.first { Int($0.processIdentifier) == pid })
        cluster.kill9(process)
        let job = try cluster.waitForJob(id)
        #expect(job.state == .done, "\(job.error ?? "")\n\(cluster.logs)")
        let generate = try #require(job.stages.first { $0.stage == .generate })
        #expect(generate.worker != worker, "the stage was finished by the surviving generator")
        #expect(generate.attempt == 2)
        #expect(cluster.log("broker.log").contains("re-queued"))
        let status = try client.status()
        #expect(status.workers.filter { $0.role == .generator }.count == 1)
    }

    @Test("kill -9 of the broker in the middle of a job: restarted, it finishes the job, nothing duplicated")
    func killBroker() throws {
        let cluster = try Cluster(extra: ["GENERATOR_MAX_TOKENS": "128", "REFINER_MAX_TOKENS": "128"])
        try startPipeline(cluster)
        let (question, _) = try gsm8kQuestion(2)
        let (doneStages, job) = try cluster.killBrokerMidJob(JobSpec(question: question, samples: 2, rounds: 1, seed: 3), afterStages: 1,
                                                            within: 60)
        let id = job.id
        #expect(doneStages >= 1)
        #expect(job.state == .done, "\(job.error ?? "")\n\(cluster.logs)")
        // Every stage of both chains exactly once, steps without gaps.
        for chain in 0..<2 {
            let steps = job.stages.filter { $0.chain == chain }.map(\.step).sorted()
            #expect(steps == Array(0..<steps.count) && steps.count >= 4, "chain \(chain): \(steps)")
        }
        let journal = try JobJournal(path: cluster.dir.appendingPathComponent("journal.sqlite").path)
        #expect(try journal.stageCount(jobID: id) == job.stages.count)
        #expect(Set(job.stages.map { "\($0.chain)/\($0.step)" }).count == job.stages.count)
        #expect(cluster.log("broker.log").contains("resuming job \(id)"))
        #expect(try journal.job(id: id)?.state == .done)
    }

    @Test("malformed frames, bad versions, unknown commands and roles, oversized bodies: error replies, and the broker keeps serving")
    func badMessages() throws {
        let cluster = try Cluster()
        try cluster.startBroker()
        try cluster.startWorker("echo")
        try cluster.waitForWorkers(["echo": 1])
        let peer = try RawPeer(cluster.settings.frontend)
        try peer.send([Data("garbage".utf8)])
        #expect(try peer.errorCode() == .malformed)
        try peer.send("CHORUS/9 STATUS", "{}")
        #expect(try peer.errorCode() == .unsupportedVersion)
        try peer.send("CHORUS/1 FROB", "{}")
        #expect(try peer.errorCode() == .unknownCommand)
        try peer.send("CHORUS/1 REQUEST wizard", #"{"request_id": "x", "payload": {}}"#)
        #expect(try peer.errorCode() == .unknownRole)
        try peer.send("CHORUS/1 SUBMIT", "not json at all")
        #expect(try peer.errorCode() == .malformed)
        try peer.send("CHORUS/1 SUBMIT", #"{"job": {"question": "   "}}"#)
        #expect(try peer.errorCode() == .badRequest)
        try peer.send("CHORUS/1 SUBMIT", #"{"job": {"question": 7}}"#)
        #expect(try peer.errorCode() == .malformed)
        try peer.send("CHORUS/1 RESULT", #"{"job_id": "no-such-job"}"#)
        #expect(try peer.errorCode() == .notFound)
        try peer.send("CHORUS/1 DISCONNECT", "{}")
        #expect(try peer.errorCode() == .unknownCommand)
        // A client's HEARTBEAT (it still waits for its requests) gets no answer.
        try peer.send("CHORUS/1 HEARTBEAT", "{}")
        #expect(try peer.reply(timeout: 0.5) == nil)
        let big = "{\"pad\": \"" + String(repeating: "x", count: 2 << 20) + "\"}"
        try peer.send("CHORUS/1 STATUS", big)
        #expect(try peer.errorCode() == .tooLarge)
        try peer.send([Header(.status).frame, Data("{}".utf8), Data("extra".utf8)])
        #expect(try peer.errorCode() == .malformed)

        // Past the transport limit libzmq drops the sender; everyone else is served.
        let huge = try RawPeer(cluster.settings.frontend)
        try huge.send([Header(.status).frame, Data(count: 20 << 20)])
        #expect(try huge.reply(timeout: 1) == nil)

        // The worker side validates too.
        let fakeWorker = try RawPeer(cluster.settings.backend)
        try fakeWorker.send("CHORUS/1 READY wizard", #"{"worker_id": "w", "host": "h", "pid": 1, "model": "m"}"#)
        #expect(try fakeWorker.errorCode() == .unknownRole)
        #expect(try fakeWorker.reply()?.header.command == .disconnect)
        try fakeWorker.send("CHORUS/1 READY echo", #"{"worker_id": 5}"#)
        #expect(try fakeWorker.errorCode() == .malformed)
        try fakeWorker.send([Data([0, 1, 2])])
        #expect(try fakeWorker.errorCode() == .malformed)
        try fakeWorker.send("CHORUS/1 HEARTBEAT", "{}")
        #expect(try fakeWorker.reply()?.header.command == .disconnect, "an unknown worker is told to register")

        // Still serving: status and a real request.
        let client = try cluster.client()
        #expect(try client.status().workers.count == 1)
        let echoed = try client.request(role: "echo", payload: .object(["x": .number(1)]))
        #expect(echoed == .object(["x": .number(1)]))
        #expect(cluster.broker!.isRunning)
    }

    @Test("a request for a role with no worker waits until its deadline, then fails clearly; so does a job")
    func noWorker() throws {
        let cluster = try Cluster(queueTimeout: 2)
        try cluster.startBroker()
        let client = try cluster.client()
        let start = Date()
        do {
            _ = try client.request(role: "echo", payload: .string("hi"), queueTimeout: 1, timeout: 10)
            Issue.record("the request should have failed")
        } catch let ClientError.remote(e) {
            #expect(e.code == .noWorker && e.message.contains("no echo worker"))
        }
        let waited = Date().timeIntervalSince(start)
        #expect(waited >= 0.9 && waited < 5, "waited \(waited) s")
        // A worker that arrives before the deadline gets the request.
        let pending = try cluster.client()
        let payload = JSONValue.string("late")
        try pending.socket.send(Envelope.frames(.request, role: "echo", RequestBody(requestID: "late-1", payload: payload, timeout: 20)))
        try cluster.startWorker("echo")
        let reply = try #require(try pending.socket.receive(timeout: 20))
        #expect(try Envelope(frames: reply).decode(FinalBody<JSONValue>.self).result == payload)
        // A job whose generator never comes fails with the reason.
        let id = try client.submit(JobSpec(question: "What is 2+2?", rounds: 1))
        let job = try cluster.waitForJob(id, timeout: 20)
        #expect(job.state == .failed && job.error?.contains("no generator worker") == true, "\(job.error ?? "")")
    }

    @Test("scaling workers up and down; least-recently-used dispatch")
    func scaling() throws {
        let cluster = try Cluster(heartbeat: 0.2, liveness: 3)
        try cluster.startBroker()
        let client = try cluster.client()
        let first = try cluster.startWorker("echo")
        try cluster.waitForWorkers(["echo": 1])
        let second = try cluster.startWorker("echo")
        let third = try cluster.startWorker("echo")
        try cluster.waitForWorkers(["echo": 3])
        for i in 0..<9 { _ = try client.request(role: "echo", payload: .number(Double(i))) }
        let served = try client.status().workers.map(\.served)
        #expect(served.sorted() == [3, 3, 3], "requests went round the idle workers: \(served)")
        // A stopped worker says goodbye; a killed one is found dead by its missed heartbeats.
        cluster.terminate(second)
        try cluster.waitForWorkers(["echo": 2], timeout: 5)
        let killedAt = Date()
        cluster.kill9(third)
        try cluster.waitForWorkers(["echo": 1], timeout: 10)
        #expect(Date().timeIntervalSince(killedAt) >= 0.4, "a dead worker is declared dead after the missed beats")
        #expect(try client.request(role: "echo", payload: .bool(true)) == .bool(true))
        #expect(first.isRunning)
    }
}
