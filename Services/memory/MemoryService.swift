// chorus-memory: the memory role — retrieves similar accepted cases and
// reflections for a job's first stage and stores the finished job as an
// episode, its text embedded and searched through the kvindex role, forgetting
// on the curve.

import ArgumentParser
import Client
import Foundation
import Memory
import Pipeline
import Protocol
import RoleWorker
import ServiceKit

/// Serves the memory role: long-term memory of episodes and reflections on a
/// forgetting curve, searched through the kvindex role. Requests are
/// `MemoryRequest`s: store_episode, retrieve, search, stats, forget, export
/// (and advance_clock when MEMORY_TEST_CLOCK=1). See docs/PROTOCOL.md, "Role payloads".
final class MemoryHandler: RequestHandler, @unchecked Sendable {
    let store: MemoryStore
    let bus: BusSettings
    let testClock: OffsetClock?
    let examples: Int
    let minimumSimilarity: Double
    let sweepInterval: Double
    var lastSweep: Double
    let lock = NSLock()
    private var client: BrokerClient?

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
    func index<Result: Decodable>(_ request: KVIndexRequest, as: Result.Type, queueTimeout: Double = 30) throws -> Result {
        if client == nil {
            let c = try BrokerClient(settings: bus)
            c.start()
            client = c
        }
        let reply: JSONValue
        do {
            let payload = try JSONValue(encoding: request)
            // The client reconnects by itself: it is kept across failures.
            reply = try client!.blocking {
                try await $0.request(role: Role.kvindex.rawValue, payload: payload, queueTimeout: queueTimeout, timeout: 120)
            }
        } catch let ClientError.remote(e) {
            throw HandlerError("the kvindex said: \(e.message)", code: e.code == .notFound ? .notFound : .workerFailed)
        } catch {
            throw HandlerError("cannot reach the kvindex: \(error)")
        }
        do { return try reply.decode(as: Result.self) } catch {
            throw HandlerError("the kvindex returned an unreadable \(request.op.rawValue) result: \(error)")
        }
    }

    /// Ids of the memories of one namespace most similar to `text` (none if the namespace is empty).
    func similar(_ text: String, namespace: String, k: Int) throws -> [KVHit] {
        do {
            return try index(.query(text: text, namespace: namespace, k: k), as: [KVHit].self)
        } catch let e as HandlerError where e.code == .notFound {
            return []
        }
    }

    func handle(_ payload: JSONValue, emit: (String) -> Void) throws -> JSONValue {
        let request = try decodeOpRequest(payload, as: MemoryRequest.self, ops: MemoryOp.self)
        if let ns = request.namespace, !JobSpec.isNamespace(ns) {
            throw HandlerError("'namespace' must be 1 to 64 of a-z, 0-9, '-', '_', '.'", code: .badRequest)
        }
        lock.lock()
        defer { lock.unlock() }
        let now = store.clock.now()
        try sweepIfDueLocked()
        switch request.op {
        case .storeEpisode:
            guard let episode = request.episode, !episode.question.isEmpty else {
                throw HandlerError("store_episode needs 'job_id' and 'question'", code: .badRequest)
            }
            return try JSONValue(encoding: try storeEpisode(episode))
        case .retrieve:
            guard let question = request.question, !question.isEmpty else {
                throw HandlerError("retrieve needs a 'question'", code: .badRequest)
            }
            return try JSONValue(encoding: try retrieve(question, k: request.k ?? examples, namespace: request.namespace))
        case .search:
            guard let text = request.text, !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
                throw HandlerError("search needs a non-empty 'text'", code: .badRequest)
            }
            let k = request.k ?? 5
            var out: [MemoryHit] = []
            for kind in [Memory.Kind.episode, .reflection] {
                for hit in try similar(text, namespace: Self.namespace(kind, request.namespace), k: k) {
                    guard let m = try store.memory(hit.key) else { continue }
                    out.append(MemoryHit(id: m.id, kind: m.kind.rawValue, text: m.text, similarity: hit.score,
                                         retention: store.retention(m), strength: m.strength, recalls: m.recalls, content: m.content))
                }
            }
            out.sort { $0.similarity > $1.similarity }
            return try JSONValue(encoding: Array(out.prefix(k)))
        case .stats:
            let all = try store.all()
            let mean = all.isEmpty ? 0 : all.map(store.retention).reduce(0, +) / Double(all.count)
            return try JSONValue(encoding: MemoryStats(
                episodes: all.filter { $0.kind == .episode }.count, reflections: all.filter { $0.kind == .reflection }.count,
                meanRetention: mean, forgetBelow: store.curve.forgetBelow, initialStrengthSeconds: store.curve.initialStrength,
                growth: store.curve.growth, clock: now))
        case .forget:
            if let below = request.below, !(below >= 0 && below <= 1) {
                throw HandlerError("'below' must be a retention between 0 and 1", code: .badRequest)
            }
            return try JSONValue(encoding: MemoryForgot(forgotten: try forget(below: request.below)))
        case .export:
            return try JSONValue(encoding: try store.all())
        case .advanceClock:
            guard let clock = testClock else { throw HandlerError("advance_clock needs MEMORY_TEST_CLOCK=1", code: .badRequest) }
            clock.advance(request.seconds ?? 0)
            return try JSONValue(encoding: MemoryClock(clock: store.clock.now()))
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
            _ = try? index(.delete(namespace: Self.namespace(m.kind, of: m.content), key: m.id), as: KVDeleted.self)
        }
        if !gone.isEmpty { Log.info("forgot \(gone.count) memories") }
        return gone.count
    }

    /// Stores a finished job as an episode and, when its attempt was rejected
    /// or corrected, a short reflection.
    func storeEpisode(_ episode: Episode) throws -> MemoryStored {
        let content = try JSONValue(encoding: episode)
        let episodeID = "ep-" + episode.jobID
        var memories = [MemoryStore.New(id: episodeID, kind: .episode, text: episode.question, content: content)]
        var lesson: String?
        if !(episode.accepted ?? false) {
            lesson = "A solution to a similar problem answered \(episode.answer ?? "nothing") and was judged wrong"
                + (episode.score.map { String(format: " (critic score %.2f)", $0) } ?? "")
                + ". Recompute every step and check the units before giving the final answer."
        } else if let first = episode.firstAnswer, let answer = episode.answer, !AnswerExtractor.same(first, answer) {
            lesson = "On a similar problem the first answer \(first) was corrected to \(answer) after verification. Re-read what the question asks before computing."
        }
        if let lesson {
            var content: [String: JSONValue] = ["lesson": .string(lesson), "job_id": .string(episode.jobID)]
            if let ns = episode.namespace { content["namespace"] = .string(ns) }
            memories.append(MemoryStore.New(id: "rf-" + episode.jobID, kind: .reflection, text: episode.question, content: .object(content)))
        }
        // The episode and its reflection are stored together, then indexed; a
        // memory stopped in between indexes them when it starts again.
        try store.add(memories)
        try indexMemories(memories.map { ($0.id, $0.kind, $0.text, $0.content) })
        return MemoryStored(stored: memories.map(\.id))
    }

    /// Puts memories into the kvindex, then marks them indexed in the store.
    func indexMemories(_ memories: [(id: String, kind: Memory.Kind, text: String, content: JSONValue)], queueTimeout: Double = 30) throws {
        for m in memories {
            var accepted = false
            if case .bool(true)? = m.content["accepted"] { accepted = true }
            let value: JSONValue = m.kind == .episode ? .object(["accepted": .bool(accepted)]) : .null
            _ = try index(.upsert(namespace: Self.namespace(m.kind, of: m.content), key: m.id, text: m.text, value: value),
                          as: KVUpserted.self,
                          queueTimeout: queueTimeout)
        }
        try store.markIndexed(memories.map(\.id))
    }

    /// The kvindex namespace of a memory of `kind` in memory namespace `ns`
    /// (`episodes` and `reflections` for the shared one, `episodes@ns` and
    /// `reflections@ns` for another): retrieval only ever looks in its own.
    static func namespace(_ kind: Memory.Kind, _ ns: String?) -> String {
        (kind == .episode ? "episodes" : "reflections") + (ns.map { "@" + $0 } ?? "")
    }

    /// The kvindex namespace of a stored memory, from the namespace its content records.
    static func namespace(_ kind: Memory.Kind, of content: JSONValue) -> String {
        namespace(kind, content["namespace"]?.stringValue)
    }

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
    func retrieve(_ question: String, k: Int, namespace ns: String?) throws -> MemoryRetrieval {
        var exampleTexts: [String] = [], lessons: [String] = [], recalled: [String] = []
        for hit in try similar(question, namespace: Self.namespace(.episode, ns), k: k * 3) where exampleTexts.count < k && hit.score >= minimumSimilarity {
            guard let m = try store.memory(hit.key), case .bool(true)? = m.content["accepted"] else { continue }
            let solution = m.content["solution"]?.stringValue ?? ""
            exampleTexts.append("Problem: \(m.text)\nSolution:\n\(solution)")
            recalled.append(m.id)
        }
        for hit in try similar(question, namespace: Self.namespace(.reflection, ns), k: k) where hit.score >= minimumSimilarity {
            guard let m = try store.memory(hit.key), let lesson = m.content["lesson"]?.stringValue else { continue }
            lessons.append(lesson)
            recalled.append(m.id)
        }
        try store.recall(recalled)
        return MemoryRetrieval(examples: exampleTexts, reflections: lessons, recalled: recalled)
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
            try RoleWorker(role: .memory, bus: bus, handler: .requests(handler)).run()
        } catch let e as ValidationError {
            throw e
        } catch {
            Log.error("\(error)")
            throw ExitCode(1)
        }
    }
}
