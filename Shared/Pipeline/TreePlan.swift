import Protocol

/// MALT's data-generation tree as a pure function of a job and the nodes it
/// has finished, like `JobPlan`: n generations of the question; n
/// verifications of each; n refinements of each verification (n^3 leaves).
/// Siblings are asked for together, so a worker's slots and prefix cache
/// serve them at once (their prompts are the same up to the seed).
///
/// A node is a stage keyed by its level (`step`: 0 generate, 1 verify, 2
/// refine) and its index in that level (`chain`): generation g; verification
/// g*n + v of generation g; refinement (g*n + v)*n + r. Its parent is
/// (chain / n, step - 1). Tree jobs use no memory.
public struct TreePlan: StagePlanner {
    public let spec: JobSpec
    public let seed: UInt64
    public let jobID: String
    public let branching: Int

    public init(spec: JobSpec, seed: UInt64, jobID: String = "") {
        self.spec = spec
        self.seed = seed
        self.jobID = jobID
        branching = spec.treeBranching
    }

    public static let levels: [StageKind] = [.generate, .verify, .refine]

    /// The parent of a node (nil for a generation).
    public func parent(of key: StageKey) -> StageKey? {
        key.step == 0 ? nil : StageKey(chain: key.chain / branching, step: key.step - 1)
    }

    /// The children of a node (none for a refinement).
    public func children(of key: StageKey) -> [StageKey] {
        key.step >= 2 ? [] : (0..<branching).map { StageKey(chain: key.chain * branching + $0, step: key.step + 1) }
    }

    /// Every node, level by level.
    public var nodes: [StageKey] {
        (0..<3).flatMap { level in (0..<Self.count(level: level, branching: branching)).map { StageKey(chain: $0, step: level) } }
    }

    public static func count(level: Int, branching n: Int) -> Int { [n, n * n, n * n * n][level] }

    /// What to do given the finished nodes: the nodes whose parents are done
    /// and that are not done themselves, or the tree's answer once every node
    /// is done (the majority of the leaves' answers; the generations' answers
    /// as its first answers).
    public func decide(finished: [StageKey: StageRecord]) -> JobPlan.Decision {
        var pending: [JobPlan.Pending] = []
        for key in nodes where finished[key] == nil {
            let parentRecord = parent(of: key).flatMap { finished[$0] }
            if key.step > 0 && parentRecord == nil { continue }
            let grandparent = parent(of: key).flatMap(parent(of:)).flatMap { finished[$0] }
            let kind = Self.levels[key.step]
            // A verification critiques its generation; a refinement rewrites the
            // generation given the verification's critique.
            let answer = key.step == 1 ? parentRecord?.text : grandparent?.text
            let critique = key.step == 2 ? parentRecord?.text : nil
            let payload = StagePayload(stage: kind, question: spec.question, answer: answer, critique: critique,
                                       seed: JobPlan.stageSeed(seed, chain: key.chain, step: key.step),
                                       sampling: spec.overrides?[kind.role.rawValue])
            pending.append(JobPlan.Pending(chain: key.chain, step: key.step, round: 0, payload: payload))
        }
        if pending.isEmpty && finished.count >= nodes.count {
            let leaves = (0..<Self.count(level: 2, branching: branching)).map { finished[StageKey(chain: $0, step: 2)]?.extracted }
            let firsts = (0..<branching).map { finished[StageKey(chain: $0, step: 0)]?.extracted }
            return .done(answer: MajorityVote.winner(leaves), chainAnswers: leaves, firstAnswers: firsts)
        }
        return .run(pending)
    }

    /// The credit of every node of a complete tree: leaves rewarded by
    /// whether their extracted answer equals the ground truth, values
    /// averaged up.
    public func credit(_ finished: [StageKey: StageRecord]) -> [StageKey: NodeCredit] {
        let truth = spec.answer.map { AnswerExtractor.extract($0) ?? $0 }
        var credit: [StageKey: NodeCredit] = [:]
        for key in nodes.reversed() {
            if key.step == 2 {
                let reward: Double = AnswerExtractor.same(finished[key]?.extracted, truth) ? 1 : 0
                credit[key] = NodeCredit(reward: reward, value: reward)
            } else {
                let values = children(of: key).map { credit[$0]?.value ?? 0 }
                credit[key] = NodeCredit(value: values.reduce(0, +) / Double(values.count))
            }
        }
        return credit
    }
}
