import Client
import Foundation
import Protocol
import Testing

/// CANCEL on real processes and a real model.
@Suite("Cancelling jobs", .serialized)
struct CancelTests {
    @Test("chorus cancel stops a job's running generation at its next token; the job is journaled cancelled and the slot serves the next job")
    func cancelRunning() throws {
        // Long generations, so that the job is surely mid-stage when it is cancelled.
        let cluster = try Cluster(extra: ["GENERATOR_MAX_TOKENS": "3000", "GENERATOR_CONTEXT": "4096", "GENERATOR_SLOTS": "2",
                                          "GENERATOR_TEMPERATURE": "0.7"])
        try cluster.startBroker()
        try cluster.startWorker("generator")
        try cluster.waitForWorkers(["generator": 1])
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
        let cluster = try Cluster(extra: ["GENERATOR_MAX_TOKENS": "3000", "GENERATOR_CONTEXT": "4096", "GENERATOR_TEMPERATURE": "0.7"])
        try cluster.startBroker()
        try cluster.startWorker("generator")
        try cluster.waitForWorkers(["generator": 1])
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

    /// Runs the chorus command line; its exit status and everything it printed.
    func runCLI(_ arguments: [String]) throws -> (status: Int32, output: String) {
        try runToEnd(Cluster.binaries.appendingPathComponent("chorus"), arguments)
    }
}
