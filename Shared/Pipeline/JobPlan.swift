import Protocol

/// The MALT pipeline as a pure function of a job and the stages it has
/// finished: which stages run next, or the job's answer. The broker journals
/// every finished stage and asks again, so a job resumes after a crash exactly
/// where it stopped.
///
/// Chain `c` runs: generate (step 0); then for each round r: verify
/// (1 + 3r), refine (2 + 3r), critic (3 + 3r). Another round runs only when
/// the critic rejects and rounds remain. With `refine: checked`, a solution
/// the verifier agrees with and whose arithmetic checks ends its chain
/// after the verification. `samples` chains run in parallel and
/// their extracted answers are majority-voted, a tie going to the chain whose
/// generator was surest of its solution (`Confidence.mean`).
///
/// With memory (unless the spec says `no_memory`), a `retrieve` stage runs
/// first (chain -1, step 0): its similar accepted cases become the
/// generators' worked examples and its reflections go to the refiners; and a
/// `remember` stage (chain -1, step 1) stores the finished job last.
public struct JobPlan: StagePlanner {
    public let spec: JobSpec
    public let seed: UInt64
    public let jobID: String

    public static let retrieveKey = StageKey(chain: MemoryStage.chain, step: MemoryStage.retrieveStep)
    public static let rememberKey = StageKey(chain: MemoryStage.chain, step: MemoryStage.rememberStep)

    public init(spec: JobSpec, seed: UInt64, jobID: String = "") {
        self.spec = spec
        self.seed = seed
        self.jobID = jobID
    }

    public var usesMemory: Bool { !(spec.noMemory ?? false) }

    /// A stage that can run now.
    public struct Pending: Sendable, Equatable {
        public let chain: Int
        public let step: Int
        public let round: Int
        public let payload: StagePayload
        public var role: Role { payload.stage.role }
    }

    public enum Decision: Sendable, Equatable {
        /// These stages can run now (possibly none while others are in flight).
        case run([Pending])
        /// Every chain is finished.
        case done(answer: String?, chainAnswers: [String?], firstAnswers: [String?])
    }

    /// The stage kind and round of a step.
    public static func stage(at step: Int) -> (kind: StageKind, round: Int) {
        if step == 0 { return (.generate, 0) }
        let round = (step - 1) / 3
        switch (step - 1) % 3 {
        case 0: return (.verify, round)
        case 1: return (.refine, round)
        default: return (.critic, round)
        }
    }

    /// The seed of one stage, derived from the job's seed so that a seeded job is reproducible.
    public func stageSeed(chain: Int, step: Int) -> UInt64 { Self.stageSeed(seed, chain: chain, step: step) }

    /// The seed of one stage of a job seeded `seed`.
    public static func stageSeed(_ seed: UInt64, chain: Int, step: Int) -> UInt64 {
        var z = seed &+ UInt64(chain) &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(step) &* 0xD1B5_4A32_D192_ED03
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// What to do given the finished stages, keyed by chain and step.
    public func decide(finished: [StageKey: StageRecord]) -> Decision {
        var examples: [String] = [], reflections: [String] = []
        if usesMemory {
            guard let retrieved = finished[Self.retrieveKey] else {
                let request = MemoryRequest.retrieve(question: spec.question, namespace: spec.memoryNamespace)
                return .run([Pending(chain: Self.retrieveKey.chain, step: Self.retrieveKey.step, round: 0,
                                     payload: StagePayload(stage: .retrieve, question: spec.question, seed: 0, memory: request))])
            }
            examples = retrieved.memory?.retrieved?.examples ?? []
            reflections = retrieved.memory?.retrieved?.reflections ?? []
        }
        var pending: [Pending] = []
        var finals: [String?] = []
        var firsts: [String?] = []
        var confidences: [Double?] = []
        var allDone = true
        for chain in 0..<spec.samples {
            switch chainState(chain, finished, examples: examples, reflections: reflections) {
            case let .next(p):
                pending.append(p)
                allDone = false
                firsts.append(finished[StageKey(chain: chain, step: 0)].flatMap { $0.extracted })
            case let .finished(answer, first, confidence):
                finals.append(answer)
                firsts.append(first)
                confidences.append(confidence)
            }
        }
        if allDone {
            let answer = MajorityVote.winner(finals, confidences: confidences)
            if usesMemory && finished[Self.rememberKey] == nil {
                return .run([Pending(chain: Self.rememberKey.chain, step: Self.rememberKey.step, round: 0,
                                     payload: StagePayload(stage: .remember, question: spec.question, answer: answer, seed: 0,
                                                           memory: episode(answer: answer, finals: finals, firsts: firsts, finished)))])
            }
            return .done(answer: answer, chainAnswers: finals, firstAnswers: firsts)
        }
        return .run(pending)
    }

    /// What memory stores of a finished job: the winning chain's final solution,
    /// whether its critic accepted it, and the first answer.
    func episode(answer: String?, finals: [String?], firsts: [String?], _ finished: [StageKey: StageRecord]) -> MemoryRequest {
        let winner = finals.firstIndex { AnswerExtractor.same($0, answer) } ?? 0
        let chainStages = finished.values.filter { $0.chain == winner }.sorted { $0.step < $1.step }
        let critic = chainStages.last { $0.stage == .critic }
        let solution = chainStages.last { $0.stage == .refine || $0.stage == .generate }?.text ?? ""
        return .store(Episode(jobID: jobID, question: spec.question, solution: solution, answer: answer,
                              firstAnswer: firsts.first ?? nil, accepted: critic?.result?.verdict == .accept,
                              score: critic?.result?.score, namespace: spec.memoryNamespace))
    }

    enum ChainState {
        case next(Pending)
        /// `confidence`: the chain's generation's (`Confidence.mean`), for the vote.
        case finished(answer: String?, first: String?, confidence: Double?)
    }

    private func chainState(_ chain: Int, _ finished: [StageKey: StageRecord], examples: [String], reflections: [String]) -> ChainState {
        func make(_ step: Int, _ answer: String? = nil, _ critique: String? = nil) -> ChainState {
            let (kind, round) = Self.stage(at: step)
            let payload = StagePayload(stage: kind, question: spec.question, answer: answer, critique: critique,
                                       examples: kind == .generate && !examples.isEmpty ? examples : nil,
                                       reflections: kind == .refine && !reflections.isEmpty ? reflections : nil,
                                       seed: stageSeed(chain: chain, step: step), sampling: spec.overrides?[kind.role.rawValue])
            return .next(Pending(chain: chain, step: step, round: round, payload: payload))
        }
        guard let generated = finished[StageKey(chain: chain, step: 0)] else { return make(0) }
        let first = generated.extracted
        let confidence = generated.result?.confidence?.mean
        var current = generated.text
        var currentAnswer = generated.extracted
        for round in 0..<spec.rounds {
            let base = 1 + 3 * round
            guard let verified = finished[StageKey(chain: chain, step: base)] else { return make(base, current) }
            guard let refined = finished[StageKey(chain: chain, step: base + 1)] else {
                guard spec.refine == .checked else { return make(base + 1, current, verified.text) }
                // Refined only when disputed: the verifier reaches another answer, or
                // a computation is wrong (the checker's findings join the critique).
                let mistakes = ArithmeticChecker.mistakes(in: current)
                if mistakes.isEmpty, let agreed = AnswerExtractor.extract(verified.text), AnswerExtractor.same(agreed, currentAnswer) {
                    return .finished(answer: currentAnswer, first: first, confidence: confidence)
                }
                let critique = mistakes.isEmpty ? verified.text
                    : verified.text + "\n\nArithmetic check (every computation recomputed exactly):\n" + mistakes.map { "- \($0)" }.joined(separator: "\n")
                return make(base + 1, current, critique)
            }
            current = refined.text
            // A refinement without a readable answer keeps the previous one.
            currentAnswer = refined.extracted ?? currentAnswer
            guard let judged = finished[StageKey(chain: chain, step: base + 2)] else { return make(base + 2, current) }
            if judged.result?.verdict == .accept { break }
        }
        return .finished(answer: currentAnswer, first: first, confidence: confidence)
    }
}

/// Decides a job's next stages from the ones it has finished.
public protocol StagePlanner: Sendable {
    func decide(finished: [StageKey: StageRecord]) -> JobPlan.Decision
}

/// The planner of a job of `spec`'s kind.
public func planner(spec: JobSpec, seed: UInt64, jobID: String) -> any StagePlanner {
    spec.isTree ? TreePlan(spec: spec, seed: seed, jobID: jobID) : JobPlan(spec: spec, seed: seed, jobID: jobID)
}

/// A stage's place in a job.
public struct StageKey: Hashable, Sendable {
    public let chain: Int
    public let step: Int
    public init(chain: Int, step: Int) {
        self.chain = chain
        self.step = step
    }
}
