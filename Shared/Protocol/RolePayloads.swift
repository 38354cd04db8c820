import Foundation

// Typed payloads and results of the memory and kvindex roles
// (docs/PROTOCOL.md, "Role payloads"). Both sides use these types: the
// services decode their requests with them, and the job engine, the memory
// and the client build requests and read results with them. Keys are
// snake_case on the wire.

// MARK: kvindex

public enum KVIndexOp: String, Codable, Sendable, CaseIterable {
    case upsert, delete, query, stats
}

/// A kvindex request. Where a vector is needed, `text` (embedded by the
/// worker) or `vector` is given.
public struct KVIndexRequest: Codable, Sendable, Equatable {
    public var op: KVIndexOp
    public var namespace: String?
    public var key: String?
    public var text: String?
    public var vector: [Double]?
    /// Stored with an upserted key and returned by queries.
    public var value: JSONValue?
    public var k: Int?
    public var ef: Int?

    public init(op: KVIndexOp, namespace: String? = nil, key: String? = nil, text: String? = nil, vector: [Double]? = nil,
                value: JSONValue? = nil, k: Int? = nil, ef: Int? = nil) {
        self.op = op
        self.namespace = namespace
        self.key = key
        self.text = text
        self.vector = vector
        self.value = value
        self.k = k
        self.ef = ef
    }

    public static func upsert(namespace: String, key: String, text: String, value: JSONValue? = nil) -> Self {
        Self(op: .upsert, namespace: namespace, key: key, text: text, value: value)
    }
    public static func delete(namespace: String, key: String) -> Self { Self(op: .delete, namespace: namespace, key: key) }
    public static func query(text: String, namespace: String? = nil, k: Int) -> Self {
        Self(op: .query, namespace: namespace, text: text, k: k)
    }
    public static var stats: Self { Self(op: .stats) }
}

public struct KVUpserted: Codable, Sendable, Equatable {
    public var replaced: Bool
    public var count: Int
    public init(replaced: Bool, count: Int) {
        self.replaced = replaced
        self.count = count
    }
}

public struct KVDeleted: Codable, Sendable, Equatable {
    public var deleted: Bool
    public init(deleted: Bool) { self.deleted = deleted }
}

/// One result of a kvindex query (a query returns an array of them, best first).
public struct KVHit: Codable, Sendable, Equatable {
    public var namespace: String
    public var key: String
    public var score: Double
    public var value: JSONValue
    public init(namespace: String, key: String, score: Double, value: JSONValue) {
        self.namespace = namespace
        self.key = key
        self.score = score
        self.value = value
    }
}

public struct KVIndexStats: Codable, Sendable, Equatable {
    public var count: Int
    public var dimension: Int
    public var graphElements: Int
    public var namespaces: [String: Int]
    public var loadSeconds: Double
    public var replayedChanges: Int
    enum CodingKeys: String, CodingKey {
        case count, dimension, graphElements = "graph_elements", namespaces, loadSeconds = "load_seconds"
        case replayedChanges = "replayed_changes"
    }
    public init(count: Int, dimension: Int, graphElements: Int, namespaces: [String: Int], loadSeconds: Double, replayedChanges: Int) {
        self.count = count
        self.dimension = dimension
        self.graphElements = graphElements
        self.namespaces = namespaces
        self.loadSeconds = loadSeconds
        self.replayedChanges = replayedChanges
    }
}

// MARK: memory

public enum MemoryOp: String, Codable, Sendable, CaseIterable {
    case storeEpisode = "store_episode", retrieve, search, stats, forget, export
    /// Moves the store's clock on (only with MEMORY_TEST_CLOCK=1).
    case advanceClock = "advance_clock"
}

/// A finished job, as the memory stores it.
public struct Episode: Codable, Sendable, Equatable {
    public var jobID: String
    public var question: String
    /// The winning chain's final solution.
    public var solution: String?
    public var answer: String?
    public var firstAnswer: String?
    /// Whether the critic accepted the solution.
    public var accepted: Bool?
    /// The critic's probability of accepting.
    public var score: Double?
    /// The namespace it is stored in (nil: the shared one).
    public var namespace: String?
    enum CodingKeys: String, CodingKey {
        case jobID = "job_id", question, solution, answer, firstAnswer = "first_answer", accepted, score, namespace
    }
    public init(jobID: String, question: String, solution: String? = nil, answer: String? = nil, firstAnswer: String? = nil,
                accepted: Bool? = nil, score: Double? = nil, namespace: String? = nil) {
        self.namespace = namespace
        self.jobID = jobID
        self.question = question
        self.solution = solution
        self.answer = answer
        self.firstAnswer = firstAnswer
        self.accepted = accepted
        self.score = score
    }
}

/// A memory request: `op` and the fields that op reads (a `store_episode`
/// carries an `Episode`'s fields beside its op).
public struct MemoryRequest: Codable, Sendable, Equatable {
    public var op: MemoryOp
    /// store_episode
    public var episode: Episode?
    /// retrieve
    public var question: String?
    /// search
    public var text: String?
    /// retrieve, search
    public var k: Int?
    /// retrieve, search: the namespace to look in (nil: the shared one)
    public var namespace: String?
    /// forget: a retention threshold (default: the configured one)
    public var below: Double?
    /// advance_clock
    public var seconds: Double?

    enum CodingKeys: String, CodingKey { case op, question, text, k, namespace, below, seconds }

    public init(op: MemoryOp, episode: Episode? = nil, question: String? = nil, text: String? = nil, k: Int? = nil,
                namespace: String? = nil, below: Double? = nil, seconds: Double? = nil) {
        self.op = op
        self.namespace = namespace
        self.episode = episode
        self.question = question
        self.text = text
        self.k = k
        self.below = below
        self.seconds = seconds
    }

    public static func store(_ episode: Episode) -> Self { Self(op: .storeEpisode, episode: episode, namespace: episode.namespace) }
    public static func retrieve(question: String, k: Int? = nil, namespace: String? = nil) -> Self {
        Self(op: .retrieve, question: question, k: k, namespace: namespace)
    }
    public static func search(text: String, k: Int? = nil, namespace: String? = nil) -> Self {
        Self(op: .search, text: text, k: k, namespace: namespace)
    }
    public static var stats: Self { Self(op: .stats) }
    public static func forget(below: Double? = nil) -> Self { Self(op: .forget, below: below) }
    public static var export: Self { Self(op: .export) }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        op = try c.decode(MemoryOp.self, forKey: .op)
        question = try c.decodeIfPresent(String.self, forKey: .question)
        text = try c.decodeIfPresent(String.self, forKey: .text)
        k = try c.decodeIfPresent(Int.self, forKey: .k)
        episode = op == .storeEpisode ? try Episode(from: decoder) : nil
        namespace = op == .storeEpisode ? episode?.namespace : try c.decodeIfPresent(String.self, forKey: .namespace)
        below = try c.decodeIfPresent(Double.self, forKey: .below)
        seconds = try c.decodeIfPresent(Double.self, forKey: .seconds)
    }

    public func encode(to encoder: Encoder) throws {
        try episode?.encode(to: encoder)
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(op, forKey: .op)
        if episode == nil { try c.encodeIfPresent(question, forKey: .question) }
        try c.encodeIfPresent(text, forKey: .text)
        try c.encodeIfPresent(k, forKey: .k)
        if episode == nil { try c.encodeIfPresent(namespace, forKey: .namespace) }
        try c.encodeIfPresent(below, forKey: .below)
        try c.encodeIfPresent(seconds, forKey: .seconds)
    }
}

/// What `store_episode` returns: the ids stored (the episode and, for a
/// rejected or corrected attempt, a reflection).
public struct MemoryStored: Codable, Sendable, Equatable {
    public var stored: [String]
    public init(stored: [String]) { self.stored = stored }
}

/// What `retrieve` returns.
public struct MemoryRetrieval: Codable, Sendable, Equatable {
    /// Accepted similar episodes, as worked examples.
    public var examples: [String]
    /// Lessons from similar past failures.
    public var reflections: [String]
    /// Ids of the memories recalled (and so strengthened).
    public var recalled: [String]
    public init(examples: [String], reflections: [String], recalled: [String]) {
        self.examples = examples
        self.reflections = reflections
        self.recalled = recalled
    }
}

/// One result of `search`.
public struct MemoryHit: Codable, Sendable, Equatable {
    public var id: String
    public var kind: String
    public var text: String
    public var similarity: Double
    public var retention: Double
    public var strength: Double
    public var recalls: Int
    public var content: JSONValue
    public init(id: String, kind: String, text: String, similarity: Double, retention: Double, strength: Double, recalls: Int,
                content: JSONValue) {
        self.id = id
        self.kind = kind
        self.text = text
        self.similarity = similarity
        self.retention = retention
        self.strength = strength
        self.recalls = recalls
        self.content = content
    }
}

public struct MemoryStats: Codable, Sendable, Equatable {
    public var episodes: Int
    public var reflections: Int
    public var meanRetention: Double
    public var forgetBelow: Double
    public var initialStrengthSeconds: Double
    public var growth: Double
    public var clock: Double
    enum CodingKeys: String, CodingKey {
        case episodes, reflections, meanRetention = "mean_retention", forgetBelow = "forget_below"
        case initialStrengthSeconds = "initial_strength_seconds", growth, clock
    }
    public init(episodes: Int, reflections: Int, meanRetention: Double, forgetBelow: Double, initialStrengthSeconds: Double,
                growth: Double, clock: Double) {
        self.episodes = episodes
        self.reflections = reflections
        self.meanRetention = meanRetention
        self.forgetBelow = forgetBelow
        self.initialStrengthSeconds = initialStrengthSeconds
        self.growth = growth
        self.clock = clock
    }
}

public struct MemoryForgot: Codable, Sendable, Equatable {
    public var forgotten: Int
    public init(forgotten: Int) { self.forgotten = forgotten }
}

public struct MemoryClock: Codable, Sendable, Equatable {
    public var clock: Double
    public init(clock: Double) { self.clock = clock }
}

/// What a job's memory stage came to, as its trajectory keeps it: what was
/// retrieved or stored, or why the memory could not help (the job goes on
/// without it).
public struct MemoryOutcome: Codable, Sendable, Equatable {
    public var retrieved: MemoryRetrieval?
    public var stored: [String]?
    public var error: String?
    public init(retrieved: MemoryRetrieval? = nil, stored: [String]? = nil, error: String? = nil) {
        self.retrieved = retrieved
        self.stored = stored
        self.error = error
    }

    /// One line for a trajectory.
    public var summary: String {
        if let error { return "memory unavailable: \(error)" }
        if let r = retrieved { return "\(r.examples.count) example(s) and \(r.reflections.count) reflection(s) retrieved" }
        let n = stored?.count ?? 0
        return "stored \(n) memor\(n == 1 ? "y" : "ies")"
    }
}
