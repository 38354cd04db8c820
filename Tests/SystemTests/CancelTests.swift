import Client
import Foundation
import Protocol
import Testing

/// CANCEL on real processes and a real model.
@Suite("Cancelling jobs", .serialized)
struct CancelTests {
    /// A broker and a generator that writes up to 3000 tokens, so that what
    /// is cancelled is surely mid-generation.
    static func longGenerations(_ extra: [String: String] = [:]) throws -> Cluster {
        let cluster = try Cluster(extra: ["GENERATOR_MAX_TOKENS": "3000", "GENERATOR_CONTEXT": "4096", "GENERATOR_TEMPERATURE": "0.7"]
            .merging(extra) { $1 })
        try cluster.startBroker()
        try cluster.startWorker("generator")
        try cluster.waitForWorkers(["generator": 1])
        return cluster
    }

    @Test("chorus cancel stops a job's running generation at its next token; the job is journaled cancelled and the slot serves the next job")
    func cancelRunning() throws {
        let cluster = try Self.longGenerations(["GENERATOR_SLOTS": "2"])
        let client = try cluster.client()
        try client.subscribe(nil)
        Thread.sleep(forTimeInterval: 0.2)
        let id = try client.submit(JobSpec(question: "Write a very long story about a lighthouse keeper.", samples: 2, rounds: 1,
                                           seed: 3, noMemory: true))
        // Wait until both chains stream text.
        var streaming = Set<Int>()
        let deadline = Date().addingTimeInterval(180)
        while streaming.count < 2 && Date() < deadline {
            if let e = try client.nextEvent(timeout: 1), e.jobID == id, e.kind == .partial, let chain = e.chain { streaming.insert(chain) }
        }
        #expect(streaming.count == 2, "\(cluster.logs)")

        let cancelledAt = Date()
        let cli = try runCLI(["cancel", id, "--config", cluster.configPath])
        #expect(cli.status == 0 && cli.output.contains("job \(id) cancelled"), "\(cli.output)")
        // The generator stops both requests at once, not after 3000 tokens.
        #expect(SecureBusTests.eventually(5) {
            (try? client.status(timeout: 1))?.workers.first?.state == "idle"
                && cluster.fullLogs(of: "generator").contains("cancelled")
        }, "\(cluster.logs)")
        #expect(Date().timeIntervalSince(cancelledAt) < 5)
        let record = try client.result(id)
        #expect(record.state == .cancelled && record.finishedAt != nil, "\(record.state) \(record.error ?? "")")
        // The event says so, and cancelling again changes nothing.
        var sawEvent = false
        while let e = try client.nextEvent(timeout: 1) { if e.jobID == id && e.kind == .jobCancelled { sawEvent = true } }
        #expect(sawEvent)
        let again = try runCLI(["cancel", id, "--config", cluster.configPath])
        #expect(again.status == 0 && again.output.contains("already finished: cancelled"), "\(again.output)")
        let unknown = try runCLI(["cancel", "jnothing", "--config", cluster.configPath])
        #expect(unknown.status != 0 && unknown.output.contains("no job 'jnothing'"), "\(unknown.output)")

        // The slots are free: a short request is served at once.
        let reply = try client.request(role: "generator", payload: try JSONValue(encoding: StagePayload(
            stage: .generate, question: "What is 1 + 1?", seed: 1, sampling: SamplingOverride(maxTokens: 8))), timeout: 30)
        #expect(reply["text"] != nil)
    }

    @Test("Ctrl-C in chorus solve without a terminal to ask on leaves the job running and says how to follow or cancel it")
    func interruptSolve() throws {
        let cluster = try Self.longGenerations()
        let p = Process()
        p.executableURL = Cluster.binaries.appendingPathComponent("chorus")
        p.arguments = ["solve", "Write a very long story about a lighthouse keeper.", "--samples", "1", "--rounds", "1",
                       "--no-memory", "--config", cluster.configPath]
        let out = cluster.dir.appendingPathComponent("solve.out")
        _ = FileManager.default.createFile(atPath: out.path, contents: nil)
        let handle = try FileHandle(forWritingTo: out)
        p.standardOutput = handle
        p.standardError = handle
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let text = { (try? String(contentsOf: out, encoding: .utf8)) ?? "" }
        #expect(SecureBusTests.eventually(60) { text().contains("── chain 1") }, "\(text())")
        kill(p.processIdentifier, SIGINT)
        p.waitUntilExit()
        #expect(p.terminationStatus == 130, "\(text())")
        let line = try #require(text().split(separator: "\n").first { $0.contains("keeps running") }, "\(text())")
        let id = try #require(line.split(separator: " ").first { $0.hasPrefix("j") && $0 != "job" }.map(String.init))
        let client = try cluster.client()
        #expect(try client.result(id).state == .running && line.contains("chorus cancel \(id)"))
        #expect(try client.cancel(id).state == .cancelled)
    }

    @Test("a client cancels its own REQUEST by id: the worker stops and the request is answered cancelled; another client's CANCEL of it, or a second one, does nothing")
    func cancelRequest() throws {
        let cluster = try Self.longGenerations()
        let owner = try cluster.client(), other = try cluster.client()
        let payload = try JSONValue(encoding: StagePayload(stage: .generate, question: "Write a very long story about a lighthouse keeper.", seed: 3))
        _ = try owner.socket.send(Envelope.frames(.request, role: "generator", RequestBody(requestID: "long-1", payload: payload)))
        /// The owner's next reply other than a PARTIAL within `seconds` (or,
        /// with `untilPartial`, until the first PARTIAL); how many PARTIALs came before.
        func nextReply(within seconds: Double, untilPartial: Bool = false) throws -> (envelope: Envelope?, partials: Int) {
            var partials = 0
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                guard let frames = try owner.socket.receive(timeout: 0.1) else { continue }
                let e = try Envelope(frames: frames, maxBodyBytes: 1 << 20)
                guard e.header.command == .partial else { return (e, partials) }
                partials += 1
                if untilPartial { break }
            }
            return (nil, partials)
        }
        let started = try nextReply(within: 60, untilPartial: true)
        #expect(started.envelope == nil && started.partials == 1, "the request did not stream, or ended at once: \(cluster.logs)")
        // Another client cannot cancel it: the text keeps coming.
        _ = try other.socket.send(Envelope.frames(.cancel, RequestIDBody(requestID: "long-1")))
        let going = try nextReply(within: 1.5)
        #expect(going.envelope == nil && going.partials > 0, "another client's CANCEL stopped the request")
        #expect(try other.socket.receive(timeout: 0.5) == nil, "a CANCEL of a request got a reply of its own")
        // Its owner can.
        let cancelledAt = Date()
        _ = try owner.socket.send(Envelope.frames(.cancel, RequestIDBody(requestID: "long-1")))
        let ended = try #require(try nextReply(within: 5).envelope, "no answer to the cancelled request within 5 s")
        let error = try ended.decode(ErrorBody.self)
        #expect(ended.header.command == .error && error.code == .cancelled && error.requestID == "long-1", "\(error)")
        #expect(SecureBusTests.eventually(5) { (try? other.status(timeout: 1))?.workers.first?.inFlight == 0 }, "\(cluster.logs)")
        #expect(Date().timeIntervalSince(cancelledAt) < 5)
        // Again: nothing to cancel, nothing sent; the broker and the worker serve on.
        _ = try owner.socket.send(Envelope.frames(.cancel, RequestIDBody(requestID: "long-1")))
        #expect(try owner.socket.receive(timeout: 0.5) == nil)
        let reply = try owner.request(role: "generator", payload: try JSONValue(encoding: StagePayload(
            stage: .generate, question: "What is 1 + 1?", seed: 1, sampling: SamplingOverride(maxTokens: 8))), timeout: 30)
        #expect(reply["text"] != nil)
    }

    /// Runs the chorus command line; its exit status and everything it printed.
    func runCLI(_ arguments: [String]) throws -> (status: Int32, output: String) {
        try runToEnd(Cluster.binaries.appendingPathComponent("chorus"), arguments)
    }
}
