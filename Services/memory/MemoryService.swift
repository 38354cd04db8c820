import ArgumentParser
import Client
import Foundation
import Memory
import Pipeline
import Protocol
import RoleWorker
import ServiceKit

/// Serves the memory role: long-term memory of episodes and reflections on a
/// forgetting curve, searched through the kvindex role. Payload ops:
/// store_episode, retrieve, search, stats, forget, export (and advance_clock
/// when MEMORY_TEST_CLOCK=1). See docs/PROTOCOL.md, "Role payloads".
final class MemoryHandler: RequestHandler, @unchecked Sendable {
    let store: MemoryStore
    let bus: BusSettings
    let testClock: OffsetClock?
    let examples: Int
    let minimumSimilarity: Double
    let sweepInterval: Double
    var lastSweep: Double
    let lock = NSLock()
    private var client: BusClient?

    init(store: MemoryStore, bus: BusSettings, testClock: OffsetClock?, examples: Int, minimumSimilarity: Double, sweepInterval: Double) {
        self.store = store
        self.bus = bus
        self.testClock = testClock
        self.examples = examples
        self.minimumSimilarity = minimumSimilarity
        self.sweepInterval = sweepInterval
        lastSweep = store.clock.now()
    }

    var modelName: String { "memory" }

    /// The kvindex, through the broker.
    func index(_ payload: JSONValue, queueTimeout: Double = 30) throws -> JSONValue {
        if client == nil { client = try BusClient(settings: bus) }
        do {
            return try client!.request(role: "kvindex", payload: payload, queueTimeout: queueTimeout, timeout: 120)
        } catch let ClientError.remote(e) {
            throw HandlerError("the kvindex said: \(e.message)")
        } catch {
            client = nil
            throw HandlerError("cannot reach the kvindex: \(error)")
        }
    }

    /// Ids of the memories of one namespace most similar to `text` (none if the namespace is empty).
    func similar(_ text: String, namespace: String, k: Int) throws -> [(id: String, score: Double)] {
        do {
            let hits = try index(.object(["op": .string("query"), "namespace": .string(namespace), "text": .string(text),
                                          "k": .number(Double(k))]))
            guard case let .array(items) = hits else { return [] }
            return items.compactMap { h in
                guard let key = h["key"]?.stringValue, let score = h["score"]?.doubleValue else { return nil }
                return (key, score)
            }
        } catch let e as HandlerError where e.description.contains("unknown namespace") {
            return []
        }
    }

    func string(_ p: JSONValue, _ k: String) -> String? { p[k]?.stringValue }

    func handle(_ payload: JSONValue, emit: (String) -> Void) throws -> JSONValue {
        lock.lock()
        defer { lock.unlock() }
        let now = store.clock.now()
        try sweepIfDueLocked()
        switch string(payload, "op") {
        case "store_episode": return try storeEpisode(payload)
        case "retrieve": return try retrieve(payload)
        case "search":
            guard let text = string(payload, "text"), !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
                throw HandlerError("search needs a non-empty 'text'")
            }
            let k = Int(payload["k"]?.doubleValue ?? 5)
            var out: [JSONValue] = []
            for ns in ["episodes", "reflections"] {
                for hit in try similar(text, namespace: ns, k: k) {
                    guard let m = try store.memory(hit.id) else { continue }
                    out.append(.object(["id": .string(m.id), "kind": .string(m.kind.rawValue), "text": .string(m.text),
                                        "similarity": .number(hit.score), "retention": .number(store.retention(m)),
                                        "strength": .number(m.strength), "recalls": .number(Double(m.recalls)), "content": m.content]))
                }
            }
            out.sort { ($0["similarity"]?.doubleValue ?? 0) > ($1["similarity"]?.doubleValue ?? 0) }
            return .array(Array(out.prefix(k)))
        case "stats":
            let all = try store.all()
            let mean = all.isEmpty ? 0 : all.map(store.retention).reduce(0, +) / Double(all.count)
            return .object(["episodes": .number(Double(all.filter { $0.kind == .episode }.count)),
                            "reflections": .number(Double(all.filter { $0.kind == .reflection }.count)),
                            "mean_retention": .number(mean), "forget_below": .number(store.curve.forgetBelow),
                            "initial_strength_seconds": .number(store.curve.initialStrength), "growth": .number(store.curve.growth),
                            "clock": .number(now)])
        case "forget":
            let below = payload["below"]?.doubleValue
            if let below, !(below >= 0 && below <= 1) { throw HandlerError("'below' must be a retention between 0 and 1") }
            return .object(["forgotten": .number(Double(try forget(below: below)))])
        case "export":
            let encoder = JSONEncoder()
            return .array(try store.all().map { try JSONDecoder().decode(JSONValue.self, from: try encoder.encode($0)) })
        case "advance_clock":
            guard let clock = testClock else { throw HandlerError("advance_clock needs MEMORY_TEST_CLOCK=1") }
            clock.advance(payload["seconds"]?.doubleValue ?? 0)
            return .object(["clock": .number(store.clock.now())])
        case let op?:
            throw HandlerError("unknown op '\(op)' (store_episode, retrieve, search, stats, forget, export)")
        case nil:
            throw HandlerError("the payload needs an 'op'")
        }
    }

    /// The periodic sweep: forgets memories whose retention fell below the
    /// threshold, once every `sweepInterval` seconds of the store's clock.
    func sweepIfDue() {
        lock.lock()
        defer { lock.unlock() }
        do { try sweepIfDueLocked() } catch { Log.error("sweep failed: \(error)") }
    }

    private func sweepIfDueLocked() throws {
        let now = store.clock.now()
        guard now - lastSweep >= sweepInterval else { return }
        lastSweep = now
        _ = try forget(below: nil)
    }

    func forget(below: Double?) throws -> Int {
        let gone = try store.sweep(below: below)
        for m in gone {
            _ = try? index(.object(["op": .string("delete"), "namespace": .string(Self.namespace(m.kind)),
                                    "key": .string(m.id)]))
        }
        if !gone.isEmpty { Log.info("forgot \(gone.count) memories") }
        return gone.count
    }

    /// Stores a finished job as an episode and, when its attempt was rejected
    /// or corrected, a short reflection.
    func storeEpisode(_ p: JSONValue) throws -> JSONValue {
        guard let job = string(p, "job_id"), let question = string(p, "question"), !question.isEmpty else {
            throw HandlerError("store_episode needs 'job_id' and 'question'")
        }
        let answer = string(p, "answer")
        let first = string(p, "first_answer")
        var accepted = false
        if case let .bool(b)? = p["accepted"] { accepted = b }
        let score = p["score"]?.doubleValue
        let episodeID = "ep-" + job
        var memories = [MemoryStore.New(id: episodeID, kind: .episode, text: question, content: p)]
        var lesson: String?
        if !accepted {
            lesson = "A solution to a similar problem answered \(answer ?? "nothing") and was judged wrong"
                + (score.map { String(format: " (critic score %.2f)", $0) } ?? "")
                + ". Recompute every step and check the units before giving the final answer."
        } else if let first, let answer, !AnswerExtractor.same(first, answer) {
            lesson = "On a similar problem the first answer \(first) was corrected to \(answer) after verification. Re-read what the question asks before computing."
        }
        if let lesson {
            memories.append(MemoryStore.New(id: "rf-" + job, kind: .reflection, text: question,
                                            content: .object(["lesson": .string(lesson), "job_id": .string(job)])))
        }
        // The episode and its reflection are stored together, then indexed; a
        // memory stopped in between indexes them when it starts again.
        try store.add(memories)
        try indexMemories(memories.map { ($0.id, $0.kind, $0.text, $0.content) })
        return .object(["stored": .array(memories.map { .string($0.id) })])
    }

    /// Puts memories into the kvindex, then marks them indexed in the store.
    func indexMemories(_ memories: [(id: String, kind: Memory.Kind, text: String, content: JSONValue)], queueTimeout: Double = 30) throws {
        for m in memories {
            var accepted = false
            if case .bool(true)? = m.content["accepted"] { accepted = true }
            let value: JSONValue = m.kind == .episode ? .object(["accepted": .bool(accepted)]) : .null
            _ = try index(.object(["op": .string("upsert"), "namespace": .string(Self.namespace(m.kind)), "key": .string(m.id),
                                   "text": .string(m.text), "value": value]), queueTimeout: queueTimeout)
        }
        try store.markIndexed(memories.map(\.id))
    }

    static func namespace(_ kind: Memory.Kind) -> String { kind == .episode ? "episodes" : "reflections" }

    /// Indexes memories that were stored but not indexed (the service was
    /// stopped between the two); waits only briefly for the kvindex, and tries
    /// again on the next call if it is not there.
    func indexPending() {
        lock.lock()
        defer { lock.unlock() }
        do {
            let pending = try store.unindexed()
            guard !pending.isEmpty else { return }
            try indexMemories(pending.map { ($0.id, $0.kind, $0.text, $0.content) }, queueTimeout: 2)
            Log.info("indexed \(pending.count) memories stored before a restart")
        } catch {
            Log.debug("memories wait to be indexed: \(error)")
        }
    }

    /// The k most similar accepted episodes as worked examples, and reflections
    /// from similar past failures; each one recalled is strengthened.
    func retrieve(_ p: JSONValue) throws -> JSONValue {
        guard let question = string(p, "question"), !question.isEmpty else { throw HandlerError("retrieve needs a 'question'") }
        let k = Int(p["k"]?.doubleValue ?? Double(examples))
        var exampleTexts: [JSONValue] = [], lessons: [JSONValue] = [], recalled: [String] = []
        for hit in try similar(question, namespace: "episodes", k: k * 3) where exampleTexts.count < k && hit.score >= minimumSimilarity {
            guard let m = try store.memory(hit.id), case .bool(true)? = m.content["accepted"] else { continue }
            let solution = m.content["solution"]?.stringValue ?? ""
            exampleTexts.append(.string("Problem: \(m.text)\nSolution:\n\(solution)"))
            recalled.append(m.id)
        }
        for hit in try similar(question, namespace: "reflections", k: k) where hit.score >= minimumSimilarity {
            guard let m = try store.memory(hit.id), let lesson = m.content["lesson"]?.stringValue else { continue }
            lessons.append(.string(lesson))
            recalled.append(m.id)
        }
        try store.recall(recalled)
        return .object(["examples": .array(exampleTexts), "reflections": .array(lessons), "recalled": .array(recalled.map { .string($0) })])
    }
}

@main
struct MemoryCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chorus-memory",
        abstract: "The Chorus memory: episodes and reflections on a forgetting curve, as a role service.",
        discussion: """
            Connects out to the broker as the memory role. Memories live in SQLite \
            (MEMORY_DATABASE, default var/memory.sqlite); their texts are embedded and searched \
            through the kvindex role. Retention is R = exp(-t/S): t the time since the last \
            recall, S the strength (MEMORY_INITIAL_STRENGTH seconds, multiplied by \
            MEMORY_STRENGTH_GROWTH at each recall); every MEMORY_SWEEP_INTERVAL seconds, memories \
            with R below MEMORY_FORGET_BELOW are forgotten. MEMORY_EXAMPLES similar accepted \
            cases (similarity at least MEMORY_MIN_SIMILARITY) are given to the generator.
            """
    )

    @OptionGroup var service: ServiceOptions

    func run() throws {
        do {
            let c = try service.start("memory")
            let curve = ForgettingCurve(initialStrength: try c.double("MEMORY_INITIAL_STRENGTH", default: 86_400),
                                        growth: try c.double("MEMORY_STRENGTH_GROWTH", default: 2),
                                        forgetBelow: try c.double("MEMORY_FORGET_BELOW", default: 0.05))
            guard curve.initialStrength > 0, curve.growth >= 1, (0...1).contains(curve.forgetBelow) else {
                throw ValidationError("MEMORY_INITIAL_STRENGTH must be positive, MEMORY_STRENGTH_GROWTH at least 1, MEMORY_FORGET_BELOW in [0, 1]")
            }
            let testClock = c.string("MEMORY_TEST_CLOCK", default: "0") == "1" ? OffsetClock() : nil
            let store = try MemoryStore(path: c.path("MEMORY_DATABASE", default: "var/memory.sqlite"), curve: curve,
                                        clock: testClock ?? SystemClock())
            let bus = try BusSettings(c)
            let handler = MemoryHandler(store: store, bus: bus, testClock: testClock,
                                        examples: try c.int("MEMORY_EXAMPLES", default: 2),
                                        minimumSimilarity: try c.double("MEMORY_MIN_SIMILARITY", default: 0.5),
                                        sweepInterval: try c.double("MEMORY_SWEEP_INTERVAL", default: 600))
            let count = try store.count()
            Log.info("\(count) memories in \(c.path("MEMORY_DATABASE", default: "var/memory.sqlite"))")
            // The sweep runs on its own timer, as well as before any request that
            // finds it due; so does indexing what a previous run left unindexed.
            let sweeper = Thread {
                while !StopSignal.isRequested {
                    handler.indexPending()
                    Thread.sleep(forTimeInterval: 1)
                    handler.sweepIfDue()
                }
            }
            sweeper.start()
            try RoleWorker(role: "memory", bus: bus, handler: .requests(handler)).run()
        } catch let e as ValidationError {
            throw e
        } catch {
            Log.error("\(error)")
            throw ExitCode(1)
        }
    }
}
