import Bus
import Client
import Foundation
import Journal
import Protocol
import TestKit
import Testing

/// Model workers that serve several requests at once, and a broker that
/// queues instead of failing: real processes, sockets and model.
@Suite("Slots, continuous batching and backpressure, as separate processes", .serialized)
struct SlotTests {
    final class Results<T>: @unchecked Sendable {
        var results: [Result<T, Error>?]
        init(_ n: Int) { results = Array(repeating: nil, count: n) }
    }

    /// Runs `body` for every index on its own thread and waits for all.
    func concurrently<T>(_ count: Int, _ body: @escaping @Sendable (Int) throws -> T) -> [Result<T, Error>] {
        let box = Results<T>(count), lock = NSLock(), group = DispatchGroup()
        for i in 0..<count {
            group.enter()
            Thread {
                let r = Result { try body(i) }
                lock.lock(); box.results[i] = r; lock.unlock()
                group.leave()
            }.start()
        }
        group.wait()
        return box.results.map { $0! }
    }

    @Test("a request generates the same tokens alone or beside others in any slots (several seeds, mixed prompts); slots reuse shared prefixes")
    func sameOutputUnderLoad() throws {
        let cluster = try Cluster(extra: ["GENERATOR_MAX_TOKENS": "32", "GENERATOR_SLOTS": "4"])
        try cluster.startBroker()
        try cluster.startWorker("generator")
        try cluster.waitForWorkers(["generator": 1])
        let questions = ["What is 12 times 11?", "Tom has 3 apples and buys 5 more. How many apples does he have now?",
                         "What is 7 plus 5?", "A train travels 60 km in one hour. How far does it travel in 3 hours?",
                         "What is 100 minus 37?", "Sara reads 12 pages a day. How many pages does she read in a week?"]
        let payloads = try questions.enumerated().map { i, q in
            try JSONValue(encoding: StagePayload(stage: .generate, question: q, seed: UInt64(100 + i % 3)))
        }
        @Sendable func serve(_ payload: JSONValue, client: BusClient) throws -> StageResult {
            try client.request(role: "generator", payload: payload, queueTimeout: 60, timeout: 120).decode(as: StageResult.self)
        }
        let client = try cluster.client()
        let alone = try payloads.map { try serve($0, client: client) }
        // All at once (more requests than slots), then again in another order.
        let settings = cluster.settings
        for order in [Array(payloads.indices), Array(payloads.indices.reversed())] {
            let together = concurrently(order.count) { k in try serve(payloads[order[k]], client: try BusClient(settings: settings)) }
            for (k, r) in together.enumerated() {
                let i = order[k]
                let result = try r.get()
                #expect(result.text == alone[i].text, "request \(i): \(result.text) vs \(alone[i].text)")
                #expect(result.completionTokens == alone[i].completionTokens && result.stopReason == alone[i].stopReason, "request \(i)")
            }
        }
        #expect(Set(alone.map(\.text)).count > 1, "the requests generate different texts")
        // Every stage's prompt starts with the role's template: later requests take it from a slot's cache.
        let again = try serve(payloads[0], client: client)
        #expect(again.text == alone[0].text)
        let reused = try #require(again.reusedPromptTokens)
        #expect(reused > 0 && reused < again.promptTokens, "reused \(reused) of \(again.promptTokens)")
        #expect(alone[0].reusedPromptTokens == 0, "the first request found an empty cache")
        #expect(cluster.fullLogs(of: "generator").contains("(slot 3)"), "four slots served")
        // The chains of a job arrive together with one prompt: the later ones copy the first one's keys and values.
        let chains = try (0..<3).map { try JSONValue(encoding: StagePayload(stage: .generate, question: "What is 81 divided by 9?", seed: UInt64(7 + $0))) }
        let chainResults = try concurrently(3) { k in try serve(chains[k], client: try BusClient(settings: settings)) }.map { try $0.get() }
        let promptTokens = chainResults[0].promptTokens
        #expect(chainResults.filter { $0.reusedPromptTokens == promptTokens - 1 }.count >= 2,
                "\(chainResults.map { ($0.reusedPromptTokens ?? -1, $0.promptTokens) })")
        for (k, r) in chainResults.enumerated() {
            #expect(r.text == (try serve(chains[k], client: client)).text, "chain \(k) alone")
        }
    }

    @Test("24 jobs at once to one worker per role all complete, though the queue timeout is short; beyond CHORUS_MAX_QUEUED_JOBS a job is refused as busy")
    func backpressure() throws {
        let cluster = try Cluster(queueTimeout: 2, extra: [
            "GENERATOR_MAX_TOKENS": "16", "VERIFIER_MAX_TOKENS": "16", "REFINER_MAX_TOKENS": "16",
            "GENERATOR_SLOTS": "2", "VERIFIER_SLOTS": "2", "REFINER_SLOTS": "2", "CRITIC_SLOTS": "2",
            "CHORUS_MAX_QUEUED_JOBS": "24",
        ])
        try cluster.startBroker()
        for role in ["generator", "verifier", "refiner", "critic"] { try cluster.startWorker(role) }
        try cluster.waitForWorkers(["generator": 1, "verifier": 1, "refiner": 1, "critic": 1])
        let client = try cluster.client()
        let questions = try (0..<24).map { try gsm8kQuestion($0 % 8).question }
        let ids = try questions.enumerated().map { i, q in try client.submit(JobSpec(question: q, rounds: 1, seed: UInt64(i), noMemory: true)) }
        // The 25th is refused at once, with the reason.
        do {
            _ = try client.submit(JobSpec(question: "What is 2+2?", rounds: 1, noMemory: true))
            Issue.record("a job beyond CHORUS_MAX_QUEUED_JOBS was accepted")
        } catch let ClientError.remote(e) {
            #expect(e.code == .busy && e.message.contains("CHORUS_MAX_QUEUED_JOBS"), "\(e)")
        }
        var longestQueued = 0.0
        for id in ids {
            let job = try cluster.waitForJob(id, client: client, timeout: 600)
            #expect(job.state == .done, "\(id): \(job.error ?? "")")
            #expect(job.stages.count == 4)
            longestQueued = max(longestQueued, job.stages.map(\.queuedSeconds).max() ?? 0)
        }
        // The queue timeout is for a role with no worker: stages waited longer
        // than it behind busy workers, and were served, not failed.
        #expect(longestQueued > 2, "the longest a stage waited in a queue was \(longestQueued) s, not over the 2 s queue timeout")
        // With room again, a job is accepted.
        let late = try cluster.waitForJob(try client.submit(JobSpec(question: "What is 2+2?", rounds: 1, seed: 1, noMemory: true)), client: client)
        #expect(late.state == .done, "\(late.error ?? "")")
        #expect(late.stages.contains { ($0.result?.reusedPromptTokens ?? 0) > 0 }, "stages reuse their slots' caches")
    }

    /// MemAvailable, in bytes (0 where /proc/meminfo says nothing).
    static var availableMemory: Double {
        let text = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
        let line = text.split(separator: "\n").first { $0.hasPrefix("MemAvailable:") }
        return (line?.split(separator: " ").dropFirst().first.flatMap { Double($0) } ?? 0) * 1024
    }

    /// 64 slots of Gemma 3's full 32768-token context: 64 x 0.6 GB of f16 keys and values.
    static let gemmaSlotsBytes = 64 * 18 * 2 * 256 * 2 * 32768.0

    @Test("slots whose KV caches cannot fit in memory are refused at start-up, with the sizes and what to lower",
          .enabled(if: availableMemory < gemmaSlotsBytes, "this machine has memory for 64 slots of Gemma 3's whole context"))
    func slotsThatDoNotFit() throws {
        let gemma = try Models.require(Models.gemma)
        let cluster = try Cluster(extra: ["GENERATOR_MODEL": gemma, "GENERATOR_SLOTS": "64", "GENERATOR_CONTEXT": "32768"])
        /// Runs a generator on the cluster's config (with `environment` on top); it
        /// must exit at start, without a broker, so it gets 60 s at most.
        func generator(_ environment: [String: String] = [:]) throws -> ProgramResult {
            try Program.run(Paths.binary("chorus-generator"), ["--config", cluster.configPath], environment: environment, timeout: 60)
        }
        let tooMany = try generator()
        #expect(tooMany.status == 1, "exit \(tooMany.status)")
        #expect(tooMany.stderr.contains("64 slots need") && tooMany.stderr.contains("lower GENERATOR_SLOTS or GENERATOR_CONTEXT"), "\(tooMany.stderr)")
        // Out-of-range slot counts are named.
        for bad in ["0", "65", "x"] {
            let refused = try generator(["GENERATOR_SLOTS": bad])
            #expect(refused.status != 0 && refused.stderr.contains("GENERATOR_SLOTS"), "\(bad): \(refused.stderr)")
        }
    }
}
