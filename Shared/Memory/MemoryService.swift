import Foundation
import Pipeline
import Protocol
import ServiceKit

/// The index a memory's texts are searched in: the kvindex role, reached
/// through the broker by the memory service; a `KVStore` in this process in
/// tests and tools. Namespaces are the index's (`episodes`, `reflections@ns`).
public protocol MemoryIndex: AnyObject {
    /// Puts a text under `key`, with `value` kept beside it; `wait` is how
    /// long the index may take to be reachable.
    func upsert(namespace: String, key: String, text: String, value: JSONValue, wait: Double) throws
    func delete(namespace: String, key: String) throws
    /// The `k` keys of `namespace` whose texts are most similar to `text`
    /// (none when the namespace does not exist).
    func query(_ text: String, namespace: String, k: Int) throws -> [KVHit]
}

/// The memory role's logic: serves `MemoryRequest`s (store_episode, retrieve,
/// search, stats, forget, export, and advance_clock with a test clock) from a
/// `MemoryStore`, searching through a `MemoryIndex`, and sweeps what the
/// curve forgets. It knows neither the bus nor the worker that serves it: the
/// `chorus-memory` executable puts it behind a role worker, tests call it
/// directly. Calls are serialised (one at a time), sweeps included.
public final class MemoryService: @unchecked Sendable {
    public let store: MemoryStore
    let index: MemoryIndex
    let testClock: OffsetClock?
    let examples: Int
    let minimumSimilarity: Double
    let sweepInterval: Double
    var lastSweep: Double
    let lock = NSLock()

    public init(store: MemoryStore, index: MemoryIndex, testClock: OffsetClock? = nil, examples: Int = 2,
                minimumSimilarity: Double = 0.5, sweepInterval: Double = 600) {
        self.store = store
        self.index = index
        self.testClock = testClock
        self.examples = examples
        self.minimumSimilarity = minimumSimilarity
        self.sweepInterval = sweepInterval
        lastSweep = store.clock.now()
    }

    /// Serves one request; its result is what the FINAL carries. Errors are
    /// `HandlerError`s (`bad_request` for a request that is wrong).
    public func handle(_ request: MemoryRequest) throws -> any Encodable & Sendable {
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
            return try storeEpisode(episode)
        case .retrieve:
            guard let question = request.question, !question.isEmpty else {
                throw HandlerError("retrieve needs a 'question'", code: .badRequest)
            }
            return try retrieve(question, k: request.k ?? examples, namespace: request.namespace)
        case .search:
            guard let text = request.text, !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
                throw HandlerError("search needs a non-empty 'text'", code: .badRequest)
            }
            return try search(text, k: request.k ?? 5, namespace: request.namespace)
        case .stats:
            let all = try store.all()
            let mean = all.isEmpty ? 0 : all.map(store.retention).reduce(0, +) / Double(all.count)
            return MemoryStats(
                episodes: all.filter { $0.kind == .episode }.count, reflections: all.filter { $0.kind == .reflection }.count,
                meanRetention: mean, forgetBelow: store.curve.forgetBelow, initialStrengthSeconds: store.curve.initialStrength,
                growth: store.curve.growth, clock: now)
        case .forget:
            if let below = request.below, !(below >= 0 && below <= 1) {
                throw HandlerError("'below' must be a retention between 0 and 1", code: .badRequest)
            }
            return MemoryForgot(forgotten: try forget(below: request.below))
        case .export:
            return try store.all()
        case .advanceClock:
            guard let clock = testClock else { throw HandlerError("advance_clock needs MEMORY_TEST_CLOCK=1", code: .badRequest) }
            clock.advance(request.seconds ?? 0)
            return MemoryClock(clock: store.clock.now())
        }
    }

    /// The periodic sweep: forgets memories whose retention fell below the
    /// threshold, once every `sweepInterval` seconds of the store's clock.
    public func sweepIfDue() {
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
        for m in gone { try? index.delete(namespace: Self.namespace(m.kind, of: m.content), key: m.id) }
        if !gone.isEmpty { Log.info("forgot \(gone.count) memories") }
        return gone.count
    }

    /// Ids of the memories of one namespace most similar to `text`.
    func similar(_ text: String, namespace: String, k: Int) throws -> [KVHit] {
        try index.query(text, namespace: namespace, k: k)
    }

    func search(_ text: String, k: Int, namespace: String?) throws -> [MemoryHit] {
        var out: [MemoryHit] = []
        for kind in [Memory.Kind.episode, .reflection] {
            for hit in try similar(text, namespace: Self.namespace(kind, namespace), k: k) {
                guard let m = try store.memory(hit.key) else { continue }
                out.append(MemoryHit(id: m.id, kind: m.kind.rawValue, text: m.text, similarity: hit.score,
                                     retention: store.retention(m), strength: m.strength, recalls: m.recalls, content: m.content))
            }
        }
        out.sort { $0.similarity > $1.similarity }
        return Array(out.prefix(k))
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

    /// Puts memories into the index, then marks them indexed in the store.
    func indexMemories(_ memories: [(id: String, kind: Memory.Kind, text: String, content: JSONValue)], wait: Double = 30) throws {
        for m in memories {
            var accepted = false
            if case .bool(true)? = m.content["accepted"] { accepted = true }
            let value: JSONValue = m.kind == .episode ? .object(["accepted": .bool(accepted)]) : .null
            try index.upsert(namespace: Self.namespace(m.kind, of: m.content), key: m.id, text: m.text, value: value, wait: wait)
        }
        try store.markIndexed(memories.map(\.id))
    }

    /// The index namespace of a memory of `kind` in memory namespace `ns`
    /// (`episodes` and `reflections` for the shared one, `episodes@ns` and
    /// `reflections@ns` for another): retrieval only ever looks in its own.
    public static func namespace(_ kind: Memory.Kind, _ ns: String?) -> String {
        (kind == .episode ? "episodes" : "reflections") + (ns.map { "@" + $0 } ?? "")
    }

    /// The index namespace of a stored memory, from the namespace its content records.
    static func namespace(_ kind: Memory.Kind, of content: JSONValue) -> String {
        namespace(kind, content["namespace"]?.stringValue)
    }

    /// Indexes memories that were stored but not indexed (the service was
    /// stopped between the two); waits only briefly for the index, and tries
    /// again on the next call if it is not there.
    public func indexPending() {
        lock.lock()
        defer { lock.unlock() }
        do {
            let pending = try store.unindexed()
            guard !pending.isEmpty else { return }
            try indexMemories(pending.map { ($0.id, $0.kind, $0.text, $0.content) }, wait: 2)
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
