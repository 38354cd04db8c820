import Client
import Foundation
import Protocol
import TestKit
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
        try client.subscribe(nil, confirmWithin: 10)
        let id = try client.submit(JobSpec(question: "Write a very long story about a lighthouse keeper.", samples: 2, rounds: 1,
                                           seed: 3, noMemory: true))
        // Wait until both chains stream text.
        var partials = [0: 0, 1: 0]
        let deadline = Date().addingTimeInterval(180)
        while partials.values.contains(0) && Date() < deadline {
            if let e = try client.nextEvent(timeout: 1), e.jobID == id, e.kind == .partial, let chain = e.chain { partials[chain, default: 0] += 1 }
        }
        #expect(!partials.values.contains(0), "\(cluster.logs)")

        let cancelledAt = Date()
        let cli = try Program.chorus(["cancel", id, "--config", cluster.configPath])
        #expect(cli.status == 0 && cli.output.contains("job \(id) cancelled"), "\(cli.output)")
        // The text the broker had when it cancelled: every partial event published before job_cancelled.
        var sawEvent = false
        while !sawEvent, let e = try client.nextEvent(timeout: 5) {
            guard e.jobID == id else { continue }
            if e.kind == .partial, let chain = e.chain { partials[chain, default: 0] += 1 }
            if e.kind == .jobCancelled { sawEvent = true }
        }
        #expect(sawEvent, "no job_cancelled event")
        // The generator stops both requests at their next token, not after 3000:
        // each wrote at most four tokens more than the broker had streamed (one
        // partial a token for this text) when it sent CANCEL: the token being
        // decoded, and those already sent but not yet published (a step of two
        // sequences takes about 3 ms with the SIMD kernels).
        try waitUntil(5, "the generator to stop both requests\n\(cluster.logs)") {
            cluster.fullLogs(of: "generator").components(separatedBy: ": cancelled after ").count - 1 == 2
                && (try? client.status(timeout: 1))?.workers.first?.state == .idle
        }
        #expect(Date().timeIntervalSince(cancelledAt) < 5)
        let stoppedAfter = cluster.fullLogs(of: "generator").components(separatedBy: ": cancelled after ").dropFirst()
            .compactMap { Int($0.prefix { $0.isNumber }) }
        let streamed = partials.values.reduce(0, +), generated = stoppedAfter.reduce(0, +)
        #expect(stoppedAfter.count == 2 && generated >= streamed && generated - streamed <= 8,
                "the two generations stopped after \(stoppedAfter) tokens; \(partials) were streamed before the cancel")
        let record = try client.result(id)
        #expect(record.state == .cancelled && record.finishedAt != nil, "\(record.state) \(record.error ?? "")")
        // Cancelling again changes nothing.
        let again = try Program.chorus(["cancel", id, "--config", cluster.configPath])
        #expect(again.status == 0 && again.output.contains("already finished: cancelled"), "\(again.output)")
        let unknown = try Program.chorus(["cancel", "jnothing", "--config", cluster.configPath])
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
        p.executableURL = Paths.binaries.appendingPathComponent("chorus")
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
        #expect(eventually(60) { text().contains("── chain 1") }, "\(text())")
        kill(p.processIdentifier, SIGINT)
        let status = try p.exitStatus(within: 30, "chorus solve after Ctrl-C")
        #expect(status == 130, "\(text())")
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
            var beat = Date.distantPast
            while Date() < deadline {
                // The owner says it still waits, as clients do.
                if Date().timeIntervalSince(beat) >= 0.5 {
                    beat = Date()
                    try owner.socket.send(Envelope.frames(.heartbeat))
                }
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
        // Its owner can: the broker answers it at once and forwards nothing
        // after, and the worker stops at its next token, so it wrote at most two
        // tokens more than had reached the owner by then (one partial a token here).
        let streamed = started.partials + going.partials
        let cancelledAt = Date()
        _ = try owner.socket.send(Envelope.frames(.cancel, RequestIDBody(requestID: "long-1")))
        let last = try nextReply(within: 5)
        let ended = try #require(last.envelope, "no answer to the cancelled request within 5 s")
        let error = try ended.decode(ErrorBody.self)
        #expect(ended.header.command == .error && error.code == .cancelled && error.requestID == "long-1", "\(error)")
        // The broker answers at once; the worker logs how far it got when the CANCEL reached it.
        try waitUntil(5, "the generator to log the cancellation\n\(cluster.logs)") {
            cluster.fullLogs(of: "generator").contains(": cancelled after ")
        }
        let logged = cluster.fullLogs(of: "generator").components(separatedBy: ": cancelled after ")
        let generated = try #require(logged.count == 2 ? Int(logged[1].prefix { $0.isNumber }) : nil,
                                     "the generator's log does not say once how many tokens it wrote: \(cluster.fullLogs(of: "generator"))")
        let forwarded = streamed + last.partials
        #expect(generated >= forwarded && generated - forwarded <= 2,
                "the worker stopped after \(generated) tokens; \(forwarded) reached the owner before the broker answered its CANCEL")
        #expect(eventually(5) { (try? other.status(timeout: 1))?.workers.first?.inFlight == 0 }, "\(cluster.logs)")
        #expect(Date().timeIntervalSince(cancelledAt) < 5)
        // Again: nothing to cancel, nothing sent; the broker and the worker serve on.
        _ = try owner.socket.send(Envelope.frames(.cancel, RequestIDBody(requestID: "long-1")))
        #expect(try owner.socket.receive(timeout: 0.5) == nil)
        let reply = try owner.request(role: "generator", payload: try JSONValue(encoding: StagePayload(
            stage: .generate, question: "What is 1 + 1?", seed: 1, sampling: SamplingOverride(maxTokens: 8))), timeout: 30)
        #expect(reply["text"] != nil)
    }
}
