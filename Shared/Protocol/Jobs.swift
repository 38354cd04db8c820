import Foundation

/// Sampling settings a job may override per role (unset fields keep the worker's configuration).
public struct SamplingOverride: Codable, Sendable, Equatable {
    public var temperature: Double?
    public var topK: Int?
    public var topP: Double?
    public var minP: Double?
    public var maxTokens: Int?
    enum CodingKeys: String, CodingKey {
        case temperature, topK = "top_k", topP = "top_p", minP = "min_p", maxTokens = "max_tokens"
    }
    public init(temperature: Double? = nil, topK: Int? = nil, topP: Double? = nil, minP: Double? = nil, maxTokens: Int? = nil) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.maxTokens = maxTokens
    }
}

/// What a job does with its question.
public enum JobKind: String, Codable, Sendable {
    /// MALT at test time: `samples` generate, verify, refine, critic chains, majority-voted.
    case pipeline
    /// MALT's data generation: `branching` generations, as many verifications
    /// of each and refinements of each verification, rewarded against `answer`.
    case tree
}

/// When a pipeline chain's refiner rewrites the solution.
public enum RefinePolicy: String, Codable, Sendable, CaseIterable {
    /// MALT's: after every verification, with the verifier's critique.
    case always
    /// Only when the solution is disputed: the verifier's answer differs from
    /// it, or the arithmetic checker finds a wrong computation (its findings
    /// are added to the critique); an undisputed solution ends its chain.
    case checked
}

/// What a client asks for: a question and how to work on it.
public struct JobSpec: Codable, Sendable, Equatable {
    public var question: String
    /// The kind of job (default `pipeline`).
    public var kind: JobKind?
    /// A tree's branching n at every role (1 to 5, default 3): n^3 leaves.
    public var branching: Int?
    /// Independent chains whose answers are majority-voted (MALT's MV@k).
    public var samples: Int
    /// Verify-and-refine rounds at most per chain; a round after the first
    /// happens only when the critic rejects.
    public var rounds: Int
    /// Seed of the whole job; every stage's seed is derived from it.
    public var seed: UInt64?
    /// The known answer, if any (kept with the job for evaluation).
    public var answer: String?
    /// Per-role sampling overrides, keyed by role name.
    public var overrides: [String: SamplingOverride]?
    /// Skip retrieval from and storage to memory.
    public var noMemory: Bool?
    /// The memory namespace the job recalls from and is stored in (default:
    /// the shared one). An evaluation uses its own, so that no question
    /// recalls an answer another run gave it.
    public var memoryNamespace: String?
    /// When the refiner rewrites (default `always`, MALT's).
    public var refine: RefinePolicy?

    enum CodingKeys: String, CodingKey {
        case question, kind, branching, samples, rounds, seed, answer, overrides, noMemory = "no_memory"
        case memoryNamespace = "memory_namespace", refine
    }

    public init(question: String, samples: Int = 1, rounds: Int = 2, seed: UInt64? = nil, answer: String? = nil,
                overrides: [String: SamplingOverride]? = nil, noMemory: Bool? = nil, kind: JobKind? = nil, branching: Int? = nil,
                memoryNamespace: String? = nil, refine: RefinePolicy? = nil) {
        self.question = question
        self.refine = refine
        self.memoryNamespace = memoryNamespace
        self.kind = kind
        self.branching = branching
        self.samples = samples
        self.rounds = rounds
        self.seed = seed
        self.answer = answer
        self.overrides = overrides
        self.noMemory = noMemory
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        question = try c.decode(String.self, forKey: .question)
        kind = try c.decodeIfPresent(JobKind.self, forKey: .kind)
        branching = try c.decodeIfPresent(Int.self, forKey: .branching)
        samples = try c.decodeIfPresent(Int.self, forKey: .samples) ?? 1
        rounds = try c.decodeIfPresent(Int.self, forKey: .rounds) ?? 2
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed)
        answer = try c.decodeIfPresent(String.self, forKey: .answer)
        overrides = try c.decodeIfPresent([String: SamplingOverride].self, forKey: .overrides)
        noMemory = try c.decodeIfPresent(Bool.self, forKey: .noMemory)
        memoryNamespace = try c.decodeIfPresent(String.self, forKey: .memoryNamespace)
        refine = try c.decodeIfPresent(RefinePolicy.self, forKey: .refine)
    }

    public static let maxQuestionBytes = 32 * 1024
    public static let maxSamples = 9
    public static let maxRounds = 5
    public static let maxBranching = 5
    public static let defaultBranching = 3

    public var isTree: Bool { kind == .tree }

    /// Whether `name` can name a memory namespace.
    public static func isNamespace(_ name: String) -> Bool {
        (1...64).contains(name.utf8.count) && name.utf8.allSatisfy {
            ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 45 || $0 == 95 || $0 == 46
        }
    }
    /// A tree's branching, its default filled in.
    public var treeBranching: Int { branching ?? Self.defaultBranching }

    /// Checks the limits, naming the first value out of range.
    public func validate() throws(ProtocolError) {
        if question.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            throw ProtocolError(.badRequest, "the question is empty")
        }
        if question.utf8.count > Self.maxQuestionBytes {
            throw ProtocolError(.tooLarge, "the question has \(question.utf8.count) bytes (at most \(Self.maxQuestionBytes))")
        }
        if samples < 1 || samples > Self.maxSamples { throw ProtocolError(.badRequest, "samples must be between 1 and \(Self.maxSamples), got \(samples)") }
        if rounds < 1 || rounds > Self.maxRounds { throw ProtocolError(.badRequest, "rounds must be between 1 and \(Self.maxRounds), got \(rounds)") }
        if let ns = memoryNamespace, !Self.isNamespace(ns) {
            throw ProtocolError(.badRequest, "memory_namespace must be 1 to 64 of a-z, 0-9, '-', '_', '.', got '\(ns.prefix(80))'")
        }
        if isTree {
            if treeBranching < 1 || treeBranching > Self.maxBranching {
                throw ProtocolError(.badRequest, "branching must be between 1 and \(Self.maxBranching), got \(treeBranching)")
            }
            if (answer ?? "").trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
                throw ProtocolError(.badRequest, "a tree job needs the ground-truth 'answer' to reward its leaves")
            }
        } else if branching != nil {
            throw ProtocolError(.badRequest, "'branching' is for tree jobs (\"kind\": \"tree\")")
        }
        for (role, o) in overrides ?? [:] {
            if let t = o.temperature, !(t >= 0 && t <= 5) { throw ProtocolError(.badRequest, "\(role) temperature must be in [0, 5], got \(t)") }
            if let m = o.maxTokens, m < 1 || m > 4096 { throw ProtocolError(.badRequest, "\(role) max_tokens must be in [1, 4096], got \(m)") }
            if let p = o.topP, !(p > 0 && p <= 1) { throw ProtocolError(.badRequest, "\(role) top_p must be in (0, 1], got \(p)") }
            if let p = o.minP, !(p >= 0 && p <= 1) { throw ProtocolError(.badRequest, "\(role) min_p must be in [0, 1], got \(p)") }
            if let k = o.topK, k < 0 { throw ProtocolError(.badRequest, "\(role) top_k must be 0 or more, got \(k)") }
        }
    }
}

/// The stages of a job: the four of the MALT pipeline, each served by the
/// role of the same name, and the memory's retrieval before and storage after.
public enum StageKind: String, Codable, Sendable, CaseIterable {
    case generate, verify, refine, critic, retrieve, remember

    public var role: Role {
        switch self {
        case .generate: return .generator
        case .verify: return .verifier
        case .refine: return .refiner
        case .critic: return .critic
        case .retrieve, .remember: return .memory
        }
    }

    /// The model stage a role serves (nil for memory and other roles): `role` read backwards.
    public init?(modelRole role: Role) {
        guard role != .memory, let kind = StageKind.allCases.first(where: { $0.role == role }) else { return nil }
        self = kind
    }
}

/// What the broker asks a role worker to do (the payload of a REQUEST).
public struct StagePayload: Codable, Sendable, Equatable {
    public var stage: StageKind
    public var question: String
    /// The solution to verify, refine or judge.
    public var answer: String?
    /// The verifier's critique, for the refiner.
    public var critique: String?
    /// Worked examples from memory, for the generator.
    public var examples: [String]?
    /// Lessons from past failures, for the refiner.
    public var reflections: [String]?
    public var seed: UInt64
    public var sampling: SamplingOverride?
    /// For memory stages: the request the memory worker gets.
    public var memory: MemoryRequest?

    public init(stage: StageKind, question: String, answer: String? = nil, critique: String? = nil,
                examples: [String]? = nil, reflections: [String]? = nil, seed: UInt64, sampling: SamplingOverride? = nil,
                memory: MemoryRequest? = nil) {
        self.stage = stage
        self.question = question
        self.answer = answer
        self.critique = critique
        self.examples = examples
        self.reflections = reflections
        self.seed = seed
        self.sampling = sampling
        self.memory = memory
    }
}

/// Sampling settings as a worker actually used them.
public struct SamplingRecord: Codable, Sendable, Equatable {
    public var temperature: Double
    public var topK: Int
    public var topP: Double
    public var minP: Double
    public var repetitionPenalty: Double
    public var maxTokens: Int
    public var seed: UInt64
    enum CodingKeys: String, CodingKey {
        case temperature, topK = "top_k", topP = "top_p", minP = "min_p", repetitionPenalty = "repetition_penalty"
        case maxTokens = "max_tokens", seed
    }
    public init(temperature: Double, topK: Int, topP: Double, minP: Double, repetitionPenalty: Double, maxTokens: Int, seed: UInt64) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.repetitionPenalty = repetitionPenalty
        self.maxTokens = maxTokens
        self.seed = seed
    }
}

/// What a role worker returns (the result of a FINAL).
public struct StageResult: Codable, Sendable, Equatable {
    public var text: String
    /// The whole prompt the model saw.
    public var prompt: String
    public var sampling: SamplingRecord
    public var model: String
    public var promptTokens: Int
    /// Prompt tokens taken from the worker's cache (a prefix shared with an earlier request) instead of being evaluated.
    public var reusedPromptTokens: Int?
    public var completionTokens: Int
    public var promptSeconds: Double
    public var generationSeconds: Double
    public var stopReason: String
    /// The critic's verdict and its probability of accepting.
    public var verdict: Verdict?
    public var score: Double?
    /// The chat messages the prompt was made from (system and user), before the model's chat format.
    public var messages: [ChatTurn]?
    /// How sure the model was of a sampled text (nil when it chose greedily).
    public var confidence: Confidence?

    enum CodingKeys: String, CodingKey {
        case text, prompt, sampling, model, promptTokens = "prompt_tokens", reusedPromptTokens = "reused_prompt_tokens"
        case completionTokens = "completion_tokens"
        case promptSeconds = "prompt_seconds", generationSeconds = "generation_seconds", stopReason = "stop_reason"
        case verdict, score, messages, confidence
    }

    public init(text: String, prompt: String, sampling: SamplingRecord, model: String, promptTokens: Int, completionTokens: Int,
                promptSeconds: Double, generationSeconds: Double, stopReason: String, verdict: Verdict? = nil, score: Double? = nil,
                reusedPromptTokens: Int? = nil, messages: [ChatTurn]? = nil, confidence: Confidence? = nil) {
        self.confidence = confidence
        self.reusedPromptTokens = reusedPromptTokens
        self.messages = messages
        self.text = text
        self.prompt = prompt
        self.sampling = sampling
        self.model = model
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.promptSeconds = promptSeconds
        self.generationSeconds = generationSeconds
        self.stopReason = stopReason
        self.verdict = verdict
        self.score = score
    }
}

/// How sure a model was of a text it sampled, from the natural-log
/// probabilities of its tokens (each under the model's untempered
/// distribution): the mean over all tokens, the lowest mean over any
/// `window` consecutive tokens (the least sure stretch), and the mean of the
/// last `window` (where the answer is written). Closer to 0 is surer.
public struct Confidence: Codable, Sendable, Equatable {
    public var mean: Double
    public var lowestWindow: Double
    public var tail: Double

    public static let window = 16

    enum CodingKeys: String, CodingKey {
        case mean, lowestWindow = "lowest_window", tail
    }

    public init(mean: Double, lowestWindow: Double, tail: Double) {
        self.mean = mean
        self.lowestWindow = lowestWindow
        self.tail = tail
    }

    /// The summary of these log-probabilities; nil for none, or when one is
    /// not a finite number (a broken model's logits: JSON has no NaN).
    public init?(logProbabilities p: [Float]) {
        guard !p.isEmpty, p.allSatisfy(\.isFinite) else { return nil }
        let values = p.map { Double($0) }
        mean = values.reduce(0, +) / Double(values.count)
        let w = min(Self.window, values.count)
        var sum = values[0..<w].reduce(0, +)
        var lowest = sum
        for i in w..<values.count {
            sum += values[i] - values[i - w]
            lowest = min(lowest, sum)
        }
        lowestWindow = lowest / Double(w)
        tail = values.suffix(w).reduce(0, +) / Double(w)
    }
}

/// One stage of a job's trajectory, as the journal stores it.
public struct StageRecord: Codable, Sendable, Equatable {
    public var chain: Int
    public var step: Int
    public var round: Int
    public var stage: StageKind
    public var role: Role
    public var attempt: Int
    public var worker: String
    public var payload: StagePayload
    /// What a model role returned (model stages).
    public var result: StageResult?
    /// What a memory stage came to (memory stages).
    public var memory: MemoryOutcome?
    /// A tree node's reward, value and whether it is positive (tree jobs, once the tree is complete).
    public var credit: NodeCredit?
    /// The answer extracted from this stage's text (generate and refine).
    public var extracted: String?
    public var queuedSeconds: Double
    public var seconds: Double
    public var finishedAt: Double

    /// The stage's text: the model's output, or a line saying what the memory did.
    public var text: String { result?.text ?? memory?.summary ?? "" }

    enum CodingKeys: String, CodingKey {
        case chain, step, round, stage, role, attempt, worker, payload, result, memory, credit, extracted
        case queuedSeconds = "queued_seconds", seconds, finishedAt = "finished_at"
    }

    public init(chain: Int, step: Int, round: Int, stage: StageKind, role: Role, attempt: Int, worker: String,
                payload: StagePayload, result: StageResult? = nil, memory: MemoryOutcome? = nil, extracted: String?,
                queuedSeconds: Double, seconds: Double, finishedAt: Double) {
        self.chain = chain
        self.step = step
        self.round = round
        self.stage = stage
        self.role = role
        self.attempt = attempt
        self.worker = worker
        self.payload = payload
        self.result = result
        self.memory = memory
        self.extracted = extracted
        self.queuedSeconds = queuedSeconds
        self.seconds = seconds
        self.finishedAt = finishedAt
    }
}

extension StageRecord {
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        chain = try c.decode(Int.self, forKey: .chain)
        step = try c.decode(Int.self, forKey: .step)
        round = try c.decode(Int.self, forKey: .round)
        stage = try c.decode(StageKind.self, forKey: .stage)
        role = try c.decode(Role.self, forKey: .role)
        attempt = try c.decode(Int.self, forKey: .attempt)
        worker = try c.decode(String.self, forKey: .worker)
        payload = try c.decode(StagePayload.self, forKey: .payload)
        memory = try c.decodeIfPresent(MemoryOutcome.self, forKey: .memory)
        credit = try c.decodeIfPresent(NodeCredit.self, forKey: .credit)
        extracted = try c.decodeIfPresent(String.self, forKey: .extracted)
        queuedSeconds = try c.decode(Double.self, forKey: .queuedSeconds)
        seconds = try c.decode(Double.self, forKey: .seconds)
        finishedAt = try c.decode(Double.self, forKey: .finishedAt)
        if stage.role == .memory && memory == nil {
            // Journals written before memory stages had their own outcome kept
            // it as the `data` of a result.
            let data = (try? c.decode(LegacyMemoryResult.self, forKey: .result))?.data
            memory = MemoryOutcome(retrieved: data.flatMap { try? $0.decode(as: MemoryRetrieval.self) },
                                   stored: data.flatMap { try? $0.decode(as: MemoryStored.self) }?.stored,
                                   error: data?["error"]?.stringValue)
            result = nil
        } else {
            result = try c.decodeIfPresent(StageResult.self, forKey: .result)
        }
    }

    private struct LegacyMemoryResult: Decodable { var data: JSONValue? }
}

public enum JobState: String, Codable, Sendable {
    case running, done, failed, cancelled
}

/// A job with everything known about it.
public struct JobRecord: Codable, Sendable {
    public var id: String
    public var spec: JobSpec
    /// The seed actually used (the spec's, or one chosen at submission).
    public var seed: UInt64
    public var state: JobState
    public var answer: String?
    /// Each chain's final extracted answer.
    public var chainAnswers: [String?]
    /// Each chain's first (generator) answer.
    public var firstAnswers: [String?]
    public var error: String?
    public var createdAt: Double
    public var finishedAt: Double?
    public var stages: [StageRecord]
    /// Who submitted it (nil for jobs journaled before owners were: the local client's).
    public var owner: JobOwner?

    enum CodingKeys: String, CodingKey {
        case id, spec, seed, state, answer, chainAnswers = "chain_answers", firstAnswers = "first_answers", error
        case createdAt = "created_at", finishedAt = "finished_at", stages, owner
    }

    public init(id: String, spec: JobSpec, seed: UInt64, state: JobState, answer: String?, chainAnswers: [String?],
                firstAnswers: [String?], error: String?, createdAt: Double, finishedAt: Double?, stages: [StageRecord],
                owner: JobOwner? = nil) {
        self.owner = owner
        self.id = id
        self.spec = spec
        self.seed = seed
        self.state = state
        self.answer = answer
        self.chainAnswers = chainAnswers
        self.firstAnswers = firstAnswers
        self.error = error
        self.createdAt = createdAt
        self.finishedAt = finishedAt
        self.stages = stages
    }
}

/// An event on the PUB socket.
public struct JobEvent: Codable, Sendable {
    public enum Kind: String, Codable, Sendable {
        case accepted, stageStarted = "stage_started", partial, stageDone = "stage_done", jobDone = "job_done", jobFailed = "job_failed"
        case jobCancelled = "job_cancelled"
    }
    public var jobID: String
    public var kind: Kind
    public var chain: Int?
    public var step: Int?
    public var role: Role?
    public var worker: String?
    public var text: String?
    public var seconds: Double?
    public var queuedSeconds: Double?
    public var promptTokens: Int?
    public var reusedPromptTokens: Int?
    public var completionTokens: Int?
    public var answer: String?
    public var error: String?
    /// On stage_done: the model that ran the stage, and the critic's verdict and score.
    public var model: String?
    public var verdict: Verdict?
    public var score: Double?
    public var time: Double

    enum CodingKeys: String, CodingKey {
        case jobID = "job_id", kind, chain, step, role, worker, text, seconds, queuedSeconds = "queued_seconds"
        case promptTokens = "prompt_tokens", reusedPromptTokens = "reused_prompt_tokens", completionTokens = "completion_tokens", answer, error, time
        case model, verdict, score
    }

    public init(jobID: String, kind: Kind, chain: Int? = nil, step: Int? = nil, role: Role? = nil, worker: String? = nil,
                text: String? = nil, seconds: Double? = nil, queuedSeconds: Double? = nil, promptTokens: Int? = nil,
                completionTokens: Int? = nil, answer: String? = nil, error: String? = nil, time: Double = Date().timeIntervalSince1970,
                reusedPromptTokens: Int? = nil, model: String? = nil, verdict: Verdict? = nil, score: Double? = nil) {
        self.reusedPromptTokens = reusedPromptTokens
        self.model = model
        self.verdict = verdict
        self.score = score
        self.jobID = jobID
        self.kind = kind
        self.chain = chain
        self.step = step
        self.role = role
        self.worker = worker
        self.text = text
        self.seconds = seconds
        self.queuedSeconds = queuedSeconds
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.answer = answer
        self.error = error
        self.time = time
    }

    /// The topic a subscriber asks for: one job's events, or with "" every
    /// job's it may see. (The broker publishes each event under its owner's
    /// topic, `publishedTopic`, and subscribes each subscriber to its own.)
    public static func topic(_ jobID: String) -> String { "job.\(jobID)" }

    /// The topic an event of a job owned by `client` is published under:
    /// `job.<client in hex>.<job id>`. Only the owner's subscriptions match it.
    public static func publishedTopic(jobID: String, client: String) -> String {
        "job.\(hexTopic(client)).\(jobID)"
    }

    /// A subscription to `requested` (`job.` or `job.<id>`) from `client`, as
    /// the broker applies it: to that client's own jobs only.
    public static func ownTopic(_ requested: String, client: String) -> String? {
        guard requested.hasPrefix("job.") else { return nil }
        return "job.\(hexTopic(client)).\(requested.dropFirst(4))"
    }

    public static func hexTopic(_ client: String) -> String { client.utf8.map { String(format: "%02x", $0) }.joined() }

    /// Topics a subscriber uses to learn that its subscriptions are live: the
    /// broker answers a subscription to `sync.<token>` by publishing one
    /// message on that topic, and a publisher takes one subscriber's
    /// subscriptions in order, so the ones made before it are live once it arrives.
    public static let syncTopicPrefix = "sync."
}


/// One chat message: `role` is "system", "user" or "assistant".
public struct ChatTurn: Codable, Sendable, Equatable {
    public var role: String
    public var content: String
    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// A tree node's credit (MALT): a refinement's reward is 1 when its answer
/// equals the ground truth, else 0, and its value is its reward; a
/// verification's value is the mean of its refinements', a generation's the
/// mean of its verifications'. A node is positive when its value is above 0.5.
public struct NodeCredit: Codable, Sendable, Equatable {
    /// Leaves (refinements) only.
    public var reward: Double?
    public var value: Double
    public var positive: Bool
    public init(reward: Double? = nil, value: Double) {
        self.reward = reward
        self.value = value
        positive = value > 0.5
    }
}
