import Client
import Foundation
import ServiceKit
import Protocol
import TestKit
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
        #expect(retrieve.chain == -1 && retrieve.text.hasPrefix("1 example") && retrieve.result == nil)
        #expect(retrieve.memory?.retrieved?.examples.count == 1 && retrieve.memory?.retrieved?.recalled == ["ep-seed"])
        let generate = try #require(with.stages.first { $0.stage == .generate })
        #expect(generate.payload.examples?.count == 1)
        let prompt = try #require(generate.result?.prompt)
        #expect(prompt.contains("Tom has 3 apples and buys 5 more") && prompt.contains("#### 8"))
        #expect(with.stages.contains { $0.stage == .remember }, "the job was stored")

        let without = try cluster.waitForJob(try client.submit(JobSpec(question: question, rounds: 1, seed: 4, noMemory: true)))
        #expect(without.state == .done)
        #expect(!without.stages.contains { $0.stage == .retrieve || $0.stage == .remember })
        let plain = try #require(without.stages.first { $0.stage == .generate })
        #expect(plain.result?.prompt.contains("Tom has 3 apples") == false)
        // The stored job is now a memory that search finds.
        let found = try memory(client, ["op": .string("search"), "text": .string("apples"), "k": .number(10)])
        guard case let .array(items) = found else { Issue.record("search returned \(found)"); return }
        #expect(items.contains { $0["id"] == .string("ep-\(with.id)") })
    }

    @Test("namespaces keep memories apart; chorus eval recalls and stores in a namespace of its own, and says so")
    func namespaces() throws {
        let cluster = try Cluster(extra: ["MEMORY_MIN_SIMILARITY": "0.3", "GENERATOR_MAX_TOKENS": "64", "REFINER_MAX_TOKENS": "64",
                                          "VERIFIER_MAX_TOKENS": "48"])
        try cluster.startBroker()
        for role in ["kvindex", "memory", "generator", "verifier", "refiner", "critic"] { try cluster.startWorker(role) }
        try cluster.waitForWorkers(["kvindex": 1, "memory": 1, "generator": 1, "verifier": 1, "refiner": 1, "critic": 1])
        let client = try cluster.client()
        let question = "Tom has 3 apples and buys 5 more. How many apples does he have?"
        _ = try memory(client, ["op": .string("store_episode"), "job_id": .string("n1"), "question": .string(question),
                                "solution": .string("3 + 5 = 8\n#### 8"), "answer": .string("8"), "accepted": .bool(false),
                                "namespace": .string("alpha")])
        func examples(_ namespace: String?) throws -> (Int, Int) {
            var payload: [String: JSONValue] = ["op": .string("retrieve"), "question": .string("Tom has 4 apples and buys 6 more. How many?")]
            if let namespace { payload["namespace"] = .string(namespace) }
            let r = try memory(client, payload).decode(as: MemoryRetrieval.self)
            return (r.examples.count, r.reflections.count)
        }
        #expect(try examples("alpha") == (0, 1), "its own namespace holds the rejected episode's reflection")
        #expect(try examples("beta") == (0, 0) && (try examples(nil)) == (0, 0), "no other namespace sees it")
        let searched = try memory(client, ["op": .string("search"), "text": .string("apples"), "namespace": .string("alpha")])
        #expect(try searched.decode(as: [MemoryHit].self).map(\.id).sorted() == ["ep-n1", "rf-n1"])
        let bad = remoteError { _ = try memory(client, ["op": .string("retrieve"), "question": .string("q"), "namespace": .string("Not OK")]) }
        #expect(bad?.contains("'namespace' must be") == true, "\(bad ?? "")")

        // An evaluation's memories go to a namespace of its own, named in its report.
        let dataset = cluster.dir.appendingPathComponent("one.jsonl")
        try "{\"question\": \"Tom has 2 apples and buys 2 more. How many apples does he have?\", \"answer\": \"#### 4\"}\n"
            .write(to: dataset, atomically: true, encoding: .utf8)
        let eval = try Program.chorus(["eval", "--dataset", dataset.path, "--rounds", "1", "--config", cluster.configPath])
        #expect(eval.status == 0, "\(eval.stderr)")
        let line = try #require(eval.stdout.split(separator: "\n").first { $0.hasPrefix("memory: namespace eval-") }, "\(eval.stdout)")
        #expect(line.contains("this run's own"))
        let namespace = String(line.split(separator: " ")[2].trimmingCharacters(in: .punctuationCharacters))
        let ownHits = try memory(client, ["op": .string("search"), "text": .string("Tom has 2 apples"), "namespace": .string(namespace)])
        #expect(try !ownHits.decode(as: [MemoryHit].self).isEmpty, "the run's job was stored in \(namespace)")
        let sharedHits = try memory(client, ["op": .string("search"), "text": .string("Tom has 2 apples")])
        #expect(try sharedHits.decode(as: [MemoryHit].self).isEmpty, "and not in the shared namespace")
        let jobs = cluster.dir.appendingPathComponent("jobs.jsonl").path
        let off = try Program.chorus(["eval", "--dataset", dataset.path, "--rounds", "1", "--no-memory", "--json", "--out", jobs,
                                      "--config", cluster.configPath])
        #expect(off.status == 0 && off.stdout.contains("\"memory\":\"off\""), "\(off.stdout)\(off.stderr)")

        // The same report from the jobs' file, without running anything (no broker needed).
        let again = try Program.chorus(["eval", "--from-jobs", jobs, "--json", "--broker", "tcp://127.0.0.1:1"])
        #expect(again.status == 0, "\(again.stderr)")
        func figures(_ text: String) throws -> [String] {
            let o = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
            return ["questions", "rounds", "final_accuracy", "first_answer_accuracy", "first_answers_majority_accuracy", "memory", "prompt_tokens"]
                .map { "\($0)=\(o[$0] ?? "missing")" }
        }
        #expect(try figures(again.stdout) == figures(off.stdout))
        // --resume keeps the jobs already in --out and runs only the questions not among them.
        let two = cluster.dir.appendingPathComponent("two.jsonl")
        try (String(decoding: FileManager.default.contents(atPath: dataset.path)!, as: UTF8.self)
             + "{\"question\": \"Ann has 5 pens and loses 1. How many pens does she have?\", \"answer\": \"#### 4\"}\n")
            .write(to: two, atomically: true, encoding: .utf8)
        let before = try String(contentsOfFile: jobs, encoding: .utf8)
        let resumed = try Program.chorus(["eval", "--dataset", two.path, "--rounds", "1", "--no-memory", "--json", "--out", jobs, "--resume",
                                          "--config", cluster.configPath])
        #expect(resumed.status == 0 && resumed.stderr.contains("1 of 2 questions already done, 1 to run"), "\(resumed.stderr)")
        let after = try String(contentsOfFile: jobs, encoding: .utf8)
        #expect(after.hasPrefix(before) && after.split(separator: "\n").count == 2, "the first job kept, the second appended")
        #expect(resumed.stdout.contains("\"questions\":2"), "\(resumed.stdout)")
        let seeds = try after.split(separator: "\n").map { try JSONDecoder().decode(JobRecord.self, from: Data($0.utf8)).spec.seed }
        #expect(seeds == [1, 2], "each question keeps its seed: \(seeds)")
        // All done: nothing runs, no broker needed; other options are refused, not mixed in.
        let done = try Program.chorus(["eval", "--dataset", two.path, "--rounds", "1", "--no-memory", "--json", "--out", jobs, "--resume",
                                       "--broker", "tcp://127.0.0.1:1"])
        #expect(done.status == 0 && done.stdout.contains("\"questions\":2"), "\(done.stderr)")
        let other = try Program.chorus(["eval", "--dataset", two.path, "--rounds", "2", "--no-memory", "--out", jobs, "--resume",
                                        "--broker", "tcp://127.0.0.1:1"])
        #expect(other.status != 0 && other.stderr.contains("question 1 (seed 1) ran with other options"), "\(other.stderr)")
        #expect(try String(contentsOfFile: jobs, encoding: .utf8) == after, "a refused resume leaves the file as it was")
        let noOut = try Program.chorus(["eval", "--dataset", two.path, "--resume"])
        #expect(noOut.status != 0 && noOut.stderr.contains("give --dataset and --out"), "\(noOut.stderr)")

        // Bad files and options are named, not crashes.
        let garbled = cluster.dir.appendingPathComponent("garbled.jsonl").path
        try (before + "{\"id\": 3}\n")
            .write(toFile: garbled, atomically: true, encoding: .utf8)
        for (args, says) in [(["--from-jobs", garbled], "garbled.jsonl:2: not a job"), (["--from-jobs", cluster.dir.path + "/none.jsonl"], "cannot read"),
                             (["--from-jobs", jobs, "--dataset", dataset.path], "give --dataset"), ([], "give --dataset")] {
            let r = try Program.chorus(["eval"] + args)
            #expect(r.status != 0 && r.stderr.contains(says), "\(args): \(r.stderr)")
        }
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

    /// Writers storing episodes concurrently, each through its own client, noting which stores were acknowledged.
    final class Writers: @unchecked Sendable {
        let lock = NSLock()
        private(set) var acknowledged: Set<String> = []
        private(set) var failures: [String] = []
        private var finished = 0
        let prefix: String, count: Int, perWriter: Int

        init(_ prefix: String, count: Int, perWriter: Int) {
            self.prefix = prefix
            self.count = count
            self.perWriter = perWriter
        }

        static let things = ["marbles", "apples", "trains", "coins", "pencils", "books", "eggs", "stamps", "shells", "cards", "kites", "boats"]
        static func number(_ job: String) -> Int { Int(job.split(separator: "-").last!)! }
        static func question(_ job: String) -> String { "Question \(job): how many \(things[number(job) % things.count]) are in bag \(job)?" }
        static func solution(_ job: String) -> String { "Counting bag \(job) step by step.\n#### \(job.count)" }
        /// A rejected attempt is an episode and a reflection, stored as one: every
        /// third of the "w" writers' stores, all of the others'.
        static func accepted(_ job: String) -> Bool { job.hasPrefix("w") && number(job) % 3 != 0 }

        var jobs: [String] { (0..<count).flatMap { w in (0..<perWriter).map { "\(prefix)\(w)-\($0)" } } }

        func start(_ settings: BusSettings, timeout: Double) {
            for w in 0..<count {
                Thread {
                    defer { self.lock.withLock { self.finished += 1 } }
                    guard let client = try? BusClient(settings: settings) else { return }
                    for i in 0..<self.perWriter {
                        let job = "\(self.prefix)\(w)-\(i)"
                        do {
                            _ = try client.request(role: "memory", payload: .object([
                                "op": .string("store_episode"), "job_id": .string(job), "question": .string(Self.question(job)),
                                "solution": .string(Self.solution(job)), "answer": .string(String(job.count)),
                                "accepted": .bool(Self.accepted(job)), "score": .number(0.25)]), queueTimeout: timeout * 0.8, timeout: timeout)
                            self.lock.withLock { _ = self.acknowledged.insert(job) }
                        } catch {
                            self.lock.withLock { self.failures.append("\(job): \(error)") }
                        }
                    }
                }.start()
            }
        }

        var acknowledgedCount: Int { lock.withLock { acknowledged.count } }
        var done: Bool { lock.withLock { finished == count } }

        /// Waits until `n` stores are acknowledged; fails after 60 s saying how many were.
        func waitUntilAcknowledged(_ n: Int) throws {
            let until = Date().addingTimeInterval(60)
            while acknowledgedCount < n && Date() < until { Thread.sleep(forTimeInterval: 0.005) }
            if acknowledgedCount < n {
                throw TestKitError("only \(acknowledgedCount) of the \(prefix) writers' stores were acknowledged in 60 s, not \(n): \(lock.withLock { failures.prefix(3) })")
            }
        }

        /// Waits until every writer has finished; fails after 180 s.
        func waitUntilDone() throws {
            let until = Date().addingTimeInterval(180)
            while !done && Date() < until { Thread.sleep(forTimeInterval: 0.1) }
            if !done { throw TestKitError("the \(prefix) writers did not finish within 180 s") }
        }
    }

    /// Every acknowledged store is in the memory, whole; whatever the memory
    /// holds is whole (its episode and reflection both, or neither) and is in
    /// the index, and the index holds nothing else.
    func expectStoredWhole(_ client: BusClient, _ writers: [Writers], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let exported = try memory(client, ["op": .string("export")])
        guard case let .array(items) = exported else { Issue.record("export returned \(exported)"); return }
        var episodes: [String: JSONValue] = [:], reflections: Set<String> = []
        for item in items {
            let id = try #require(item["id"]?.stringValue)
            if id.hasPrefix("ep-") { episodes[String(id.dropFirst(3))] = item } else { reflections.insert(String(id.dropFirst(3))) }
        }
        #expect(items.count == episodes.count + reflections.count, "no memory twice", sourceLocation: sourceLocation)
        let attempted = Set(writers.flatMap(\.jobs))
        for w in writers {
            let acknowledged = w.lock.withLock { w.acknowledged }
            for job in acknowledged { #expect(episodes[job] != nil, "acknowledged store \(job) is missing", sourceLocation: sourceLocation) }
            #expect(acknowledged.count + w.failures.count == w.jobs.count, "every store was answered", sourceLocation: sourceLocation)
        }
        for (job, item) in episodes {
            #expect(attempted.contains(job), "\(job) was never stored", sourceLocation: sourceLocation)
            #expect(item["text"] == .string(Writers.question(job)) && item["content"]?["solution"] == .string(Writers.solution(job)),
                    "\(job) is not whole: \(item)", sourceLocation: sourceLocation)
            #expect(reflections.contains(job) == !Writers.accepted(job), "\(job): the episode and its reflection are stored together",
                    sourceLocation: sourceLocation)
        }
        for job in reflections { #expect(episodes[job] != nil, "reflection \(job) without its episode", sourceLocation: sourceLocation) }

        // The index holds exactly what the store holds (a restarted memory indexes what it stored and did not index).
        var indexed: (episodes: Double, reflections: Double) = (-1, -1)
        let deadline = Date().addingTimeInterval(20)
        repeat {
            let stats = try client.request(role: "kvindex", payload: .object(["op": .string("stats")]))
            indexed = (stats["namespaces"]?["episodes"]?.doubleValue ?? 0, stats["namespaces"]?["reflections"]?.doubleValue ?? 0)
            if indexed == (Double(episodes.count), Double(reflections.count)) { break }
            Thread.sleep(forTimeInterval: 0.5)
        } while Date() < deadline
        #expect(indexed.episodes == Double(episodes.count) && indexed.reflections == Double(reflections.count),
                "index \(indexed) vs store \(episodes.count) episodes, \(reflections.count) reflections", sourceLocation: sourceLocation)
        for job in episodes.keys.sorted() {
            let hits = try client.request(role: "kvindex", payload: .object(["op": .string("query"), "namespace": .string("episodes"),
                                                                             "text": .string(Writers.question(job)), "k": .number(1)]))
            guard case let .array(found) = hits else { Issue.record("query returned \(hits)", sourceLocation: sourceLocation); continue }
            #expect(found.first?["key"] == .string("ep-\(job)"), "\(job) is not found by its own question: \(hits)",
                    sourceLocation: sourceLocation)
        }
    }

    @Test("kill -9 of the memory and the kvindex while stores are in flight: every acknowledged store is there, whole and indexed")
    func persistence() throws {
        let cluster = try Cluster()
        try cluster.startBroker()
        var kv = try cluster.startWorker("kvindex")
        var mem = try cluster.startWorker("memory")
        try cluster.waitForWorkers(["kvindex": 1, "memory": 1])

        // Four writers at once; both services die under them and come back.
        let first = Writers("w", count: 4, perWriter: 12)
        first.start(cluster.settings, timeout: 60)
        try first.waitUntilAcknowledged(8)
        let before = first.acknowledgedCount
        #expect(before >= 8 && before < first.jobs.count, "\(before) stores acknowledged when the services were killed")
        cluster.kill9(kv)
        cluster.kill9(mem)
        kv = try cluster.startWorker("kvindex")
        mem = try cluster.startWorker("memory")
        try first.waitUntilDone()
        try cluster.waitForWorkers(["kvindex": 1, "memory": 1])
        try expectStoredWhole(try cluster.client(), [first])
        let index = try cluster.client().request(role: "kvindex", payload: .object(["op": .string("stats")]))
        #expect((index["replayed_changes"]?.doubleValue ?? 0) >= Double(before), "the restarted kvindex replayed its changes")

        // Harder: the kvindex dies first, so the memory is caught between storing
        // and indexing; then the memory dies, and the broker with it, so no
        // queued or re-sent request is left to finish the job.
        let second = Writers("x", count: 3, perWriter: 6)
        second.start(cluster.settings, timeout: 8)
        // Some of this round's stores were acknowledged before the kills, so
        // what follows checks stores made on both sides of them.
        try second.waitUntilAcknowledged(4)
        #expect(second.acknowledgedCount < second.jobs.count, "every store was acknowledged before the kills")
        cluster.kill9(kv)
        Thread.sleep(forTimeInterval: 0.5)
        cluster.kill9(mem)
        cluster.kill9(cluster.broker!)
        try cluster.startBroker()
        try cluster.startWorker("kvindex")
        try cluster.startWorker("memory")
        try second.waitUntilDone()
        try cluster.waitForWorkers(["kvindex": 1, "memory": 1])
        #expect(!second.failures.isEmpty, "the stores in flight when the broker died were lost, not acknowledged")
        try expectStoredWhole(try cluster.client(), [first, second])
        #expect(cluster.fullLogs(of: "memory").contains("memories stored before a restart"),
                "the restarted memory indexed what it had stored\n\(cluster.logs)")
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
        // Each error carries a code the requester can act on, not only a message.
        func code(_ role: String, _ payload: [String: JSONValue]) -> (ErrorCode, String)? {
            do { _ = try client.request(role: role, payload: .object(payload)); return nil } catch let ClientError.remote(e) {
                return (e.code, e.message)
            } catch { return nil }
        }
        let missing = code("kvindex", ["op": .string("query"), "namespace": .string("nowhere"), "text": .string("hello")])
        #expect(missing?.0 == .notFound)
        let unknownOp = code("kvindex", ["op": .string("fly")])
        #expect(unknownOp?.0 == .badRequest && unknownOp?.1.contains("unknown op 'fly' (upsert, delete, query, stats)") == true)
        let noOp = code("memory", ["question": .string("q")])
        #expect(noOp?.0 == .badRequest && noOp?.1.contains("the payload needs an 'op'") == true)
        let mistyped = code("kvindex", ["op": .string("query"), "text": .string("hello"), "k": .string("three")])
        #expect(mistyped?.0 == .badRequest && mistyped?.1.contains("bad query request: 'k' must be an integer") == true, "\(String(describing: mistyped))")
        let wrongType = code("memory", ["op": .string("retrieve"), "question": .number(5)])
        #expect(wrongType?.0 == .badRequest && wrongType?.1.contains("'question' must be a string") == true, "\(String(describing: wrongType))")
        // And both keep serving.
        _ = try client.request(role: "kvindex", payload: .object(["op": .string("upsert"), "namespace": .string("n"), "key": .string("k"),
                                                                   "text": .string("fine")]))
        #expect(try memory(client, ["op": .string("stats")])["episodes"] == .number(0))
    }
}
