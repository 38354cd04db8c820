import Client
import Foundation
import Protocol
import Testing

/// The memory and kvindex services as real processes.
@Suite("Memory and kvindex services, as separate processes", .serialized)
struct MemorySystemTests {
    func memory(_ client: BusClient, _ payload: [String: JSONValue]) throws -> JSONValue {
        try client.request(role: "memory", payload: .object(payload), queueTimeout: 20, timeout: 60)
    }

    func store(_ client: BusClient, job: String, question: String, solution: String, accepted: Bool) throws {
        _ = try memory(client, ["op": .string("store_episode"), "job_id": .string(job), "question": .string(question),
                                "solution": .string(solution), "answer": .string("8"), "accepted": .bool(accepted), "score": .number(0.9)])
    }

    func remoteError(_ body: () throws -> Void) -> String? {
        do { try body(); return nil } catch let ClientError.remote(e) { return e.message } catch { return "\(error)" }
    }

    @Test("retrieval puts similar solved cases into the generator's prompt; --no-memory does not")
    func retrievalChangesPrompt() throws {
        let cluster = try Cluster()
        try cluster.startBroker()
        for role in ["kvindex", "memory", "generator", "verifier", "refiner", "critic"] { try cluster.startWorker(role) }
        try cluster.waitForWorkers(["kvindex": 1, "memory": 1, "generator": 1, "verifier": 1, "refiner": 1, "critic": 1])
        let client = try cluster.client()
        try store(client, job: "seed", question: "Tom has 3 apples and buys 5 more. How many apples does he have?",
                  solution: "3 + 5 = 8\n#### 8", accepted: true)
        let question = "Tom has 4 apples and buys 6 more. How many apples does he have?"
        let with = try cluster.waitForJob(try client.submit(JobSpec(question: question, rounds: 1, seed: 4)))
        #expect(with.state == .done, "\(with.error ?? "")\n\(cluster.logs)")
        let retrieve = try #require(with.stages.first { $0.stage == .retrieve })
        #expect(retrieve.chain == -1 && retrieve.result.text.hasPrefix("1 example"))
        let generate = try #require(with.stages.first { $0.stage == .generate })
        #expect(generate.payload.examples?.count == 1)
        #expect(generate.result.prompt.contains("Tom has 3 apples and buys 5 more") && generate.result.prompt.contains("#### 8"))
        #expect(with.stages.contains { $0.stage == .remember }, "the job was stored")

        let without = try cluster.waitForJob(try client.submit(JobSpec(question: question, rounds: 1, seed: 4, noMemory: true)))
        #expect(without.state == .done)
        #expect(!without.stages.contains { $0.stage == .retrieve || $0.stage == .remember })
        let plain = try #require(without.stages.first { $0.stage == .generate })
        #expect(!plain.result.prompt.contains("Tom has 3 apples"))
        // The stored job is now a memory that search finds.
        let found = try memory(client, ["op": .string("search"), "text": .string("apples"), "k": .number(10)])
        guard case let .array(items) = found else { Issue.record("search returned \(found)"); return }
        #expect(items.contains { $0["id"] == .string("ep-\(with.id)") })
    }

    @Test("recalled memories survive an advanced clock; untouched ones are forgotten, in the index too")
    func retentionWithClock() throws {
        let cluster = try Cluster(extra: ["MEMORY_TEST_CLOCK": "1", "MEMORY_INITIAL_STRENGTH": "100", "MEMORY_STRENGTH_GROWTH": "2",
                                          "MEMORY_FORGET_BELOW": "0.1", "MEMORY_MIN_SIMILARITY": "0.3",
                                          "MEMORY_SWEEP_INTERVAL": "400"])
        try cluster.startBroker()
        try cluster.startWorker("kvindex")
        try cluster.startWorker("memory")
        try cluster.waitForWorkers(["kvindex": 1, "memory": 1])
        let client = try cluster.client()
        try store(client, job: "a", question: "A train travels 60 miles per hour for 3 hours. How far does it go?",
                  solution: "60 * 3 = 180\n#### 180", accepted: true)
        try store(client, job: "b", question: "A baker makes 12 loaves of bread each day. How many in a week?",
                  solution: "12 * 7 = 84\n#### 84", accepted: true)
        _ = try memory(client, ["op": .string("advance_clock"), "seconds": .number(50)])
        let retrieved = try memory(client, ["op": .string("retrieve"), "question": .string("A car drives 50 miles per hour for 2 hours. How far?"),
                                            "k": .number(1)])
        #expect(retrieved["recalled"] == .array([.string("ep-a")]), "\(retrieved)")
        _ = try memory(client, ["op": .string("advance_clock"), "seconds": .number(250)])
        // a: S = 200, t = 250: R = 0.29. b: S = 100, t = 300: R = 0.05.
        let forgotten = try memory(client, ["op": .string("forget")])
        #expect(forgotten["forgotten"] == .number(1))
        let left = try memory(client, ["op": .string("export")])
        guard case let .array(items) = left else { Issue.record("export returned \(left)"); return }
        #expect(items.map { $0["id"] } == [.string("ep-a")])
        #expect(items.first?["recalls"] == .number(1) && items.first?["strength"] == .number(200))
        let stats = try client.request(role: "kvindex", payload: .object(["op": .string("stats")]))
        #expect(stats["namespaces"]?["episodes"] == .number(1), "the index forgot it too: \(stats)")
        // The periodic sweep needs no request: once its interval has passed on the
        // memory's clock, its timer forgets what faded (here, everything).
        try store(client, job: "c", question: "A pool fills at 5 liters a minute. How long for 100 liters?",
                  solution: "100 / 5 = 20\n#### 20", accepted: true)
        _ = try memory(client, ["op": .string("advance_clock"), "seconds": .number(1000)])
        var indexed = 2.0
        let until = Date().addingTimeInterval(15)
        while indexed > 0 && Date() < until {
            Thread.sleep(forTimeInterval: 0.5)
            let s = try client.request(role: "kvindex", payload: .object(["op": .string("stats")]))
            indexed = s["namespaces"]?["episodes"]?.doubleValue ?? 0
        }
        #expect(indexed == 0, "the timer swept without a request to the memory")
        #expect(try memory(client, ["op": .string("stats")])["episodes"] == .number(0))
        #expect(remoteError { _ = try memory(client, ["op": .string("frobnicate")]) }?.contains("unknown op") == true)
    }

    @Test("memories survive kill -9 of both services")
    func persistence() throws {
        let cluster = try Cluster()
        try cluster.startBroker()
        var kv = try cluster.startWorker("kvindex")
        var mem = try cluster.startWorker("memory")
        try cluster.waitForWorkers(["kvindex": 1, "memory": 1])
        var client = try cluster.client()
        for i in 0..<5 {
            try store(client, job: "j\(i)", question: "Question number \(i) about \(["trains", "apples", "money", "time", "paint"][i]).",
                      solution: "#### \(i)", accepted: true)
        }
        cluster.kill9(kv)
        cluster.kill9(mem)
        try cluster.waitForWorkers(["kvindex": 0, "memory": 0], timeout: 15)
        kv = try cluster.startWorker("kvindex")
        mem = try cluster.startWorker("memory")
        try cluster.waitForWorkers(["kvindex": 1, "memory": 1])
        client = try cluster.client()
        let stats = try memory(client, ["op": .string("stats")])
        #expect(stats["episodes"] == .number(5))
        let found = try memory(client, ["op": .string("search"), "text": .string("apples"), "k": .number(1)])
        guard case let .array(items) = found else { Issue.record("search returned \(found)"); return }
        #expect(items.first?["id"] == .string("ep-j1"), "\(found)")
        let index = try client.request(role: "kvindex", payload: .object(["op": .string("stats")]))
        #expect(index["count"] == .number(5) && (index["replayed_changes"]?.doubleValue ?? 0) >= 5)
        _ = (kv, mem)
    }

    @Test("empty and huge texts, wrong dimensions and unknown namespaces get clear errors")
    func badInputs() throws {
        let cluster = try Cluster()
        try cluster.startBroker()
        try cluster.startWorker("kvindex")
        try cluster.startWorker("memory")
        try cluster.waitForWorkers(["kvindex": 1, "memory": 1])
        let client = try cluster.client()
        func kv(_ payload: [String: JSONValue]) -> String? {
            remoteError { _ = try client.request(role: "kvindex", payload: .object(payload)) }
        }
        #expect(kv(["op": .string("upsert"), "namespace": .string("n"), "key": .string("k"), "text": .string("   ")])?.contains("the text is empty") == true)
        #expect(kv(["op": .string("upsert"), "namespace": .string("n"), "key": .string("k"),
                    "text": .string(String(repeating: "word ", count: 30_000))])?.contains("over the limit") == true)
        #expect(kv(["op": .string("upsert"), "namespace": .string("n"), "key": .string("k"),
                    "vector": .array([.number(1), .number(2)])])?.contains("2 dimensions; this index holds 384") == true)
        #expect(kv(["op": .string("query"), "namespace": .string("nowhere"), "text": .string("hello")])?.contains("unknown namespace 'nowhere'") == true)
        #expect(kv(["op": .string("query"), "text": .string("hello"), "k": .number(0)])?.contains("k must be") == true)
        #expect(kv(["op": .string("fly")])?.contains("unknown op") == true)
        #expect(remoteError { _ = try memory(client, ["op": .string("search"), "text": .string("")]) }?.contains("non-empty") == true)
        #expect(remoteError { _ = try memory(client, ["op": .string("forget"), "below": .number(3)]) }?.contains("between 0 and 1") == true)
        // And both keep serving.
        _ = try client.request(role: "kvindex", payload: .object(["op": .string("upsert"), "namespace": .string("n"), "key": .string("k"),
                                                                   "text": .string("fine")]))
        #expect(try memory(client, ["op": .string("stats")])["episodes"] == .number(0))
    }
}
