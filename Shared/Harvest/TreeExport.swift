import Foundation
import Pipeline
import Protocol

/// A finished tree job as `trees.jsonl` keeps it: the question, its ground
/// truth, and every node with its credit.
public struct HarvestedTree: Codable, Sendable, Equatable {
    /// The question's index in the dataset (from 0).
    public var index: Int
    public var question: String
    /// The ground truth the leaves were rewarded against.
    public var groundTruth: String
    public var jobID: String
    public var branching: Int
    public var seed: UInt64
    public var nodes: [TreeNode]
    public var meanLeafReward: Double

    enum CodingKeys: String, CodingKey {
        case index, question, groundTruth = "ground_truth", jobID = "job_id", branching, seed, nodes
        case meanLeafReward = "mean_leaf_reward"
    }

    public init(index: Int, question: String, groundTruth: String, jobID: String, branching: Int, seed: UInt64, nodes: [TreeNode]) {
        self.index = index
        self.question = question
        self.groundTruth = groundTruth
        self.jobID = jobID
        self.branching = branching
        self.seed = seed
        self.nodes = nodes
        let leaves = nodes.compactMap(\.reward)
        meanLeafReward = leaves.isEmpty ? 0 : leaves.reduce(0, +) / Double(leaves.count)
    }
}

/// One node of a tree: `id` is its path (`g1`, `g1.v0`, `g1.v0.r2`), `parent`
/// its parent's id; `prompt` the chat messages the role saw and `output`
/// what it wrote.
public struct TreeNode: Codable, Sendable, Equatable {
    public var id: String
    public var parent: String?
    public var role: Role
    /// The model that wrote the output (its file name, as the worker reports it): a tree
    /// harvested with a stronger model per role is a teacher's data for a smaller one.
    public var model: String
    public var prompt: [ChatTurn]
    public var output: String
    /// The answer the fixed extractor reads from the output (generations and refinements).
    public var answer: String?
    /// Leaves only: 1 if `answer` equals the ground truth, else 0.
    public var reward: Double?
    public var value: Double
    public var positive: Bool

    enum CodingKeys: String, CodingKey { case id, parent, role, model, prompt, output, answer, reward, value, positive }

    /// Trees harvested before nodes named their model read back with "unknown".
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        parent = try c.decodeIfPresent(String.self, forKey: .parent)
        role = try c.decode(Role.self, forKey: .role)
        model = try c.decodeIfPresent(String.self, forKey: .model) ?? "unknown"
        prompt = try c.decode([ChatTurn].self, forKey: .prompt)
        output = try c.decode(String.self, forKey: .output)
        answer = try c.decodeIfPresent(String.self, forKey: .answer)
        reward = try c.decodeIfPresent(Double.self, forKey: .reward)
        value = try c.decode(Double.self, forKey: .value)
        positive = try c.decode(Bool.self, forKey: .positive)
    }

    /// Every field on every node (null where it does not apply), so that each
    /// line has the same columns.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(parent, forKey: .parent)
        try c.encode(role, forKey: .role)
        try c.encode(model, forKey: .model)
        try c.encode(prompt, forKey: .prompt)
        try c.encode(output, forKey: .output)
        try c.encode(answer, forKey: .answer)
        try c.encode(reward, forKey: .reward)
        try c.encode(value, forKey: .value)
        try c.encode(positive, forKey: .positive)
    }

    public init(id: String, parent: String?, role: Role, model: String, prompt: [ChatTurn], output: String, answer: String?,
                reward: Double?, value: Double, positive: Bool) {
        self.id = id
        self.parent = parent
        self.role = role
        self.model = model
        self.prompt = prompt
        self.output = output
        self.answer = answer
        self.reward = reward
        self.value = value
        self.positive = positive
    }
}

/// A supervised example in TRL's conversational prompt-completion form.
public struct SFTExample: Codable, Sendable, Equatable {
    public var prompt: [ChatTurn]
    public var completion: [ChatTurn]
}

/// A preference pair in TRL's conversational form with an explicit prompt.
public struct DPOExample: Codable, Sendable, Equatable {
    public var prompt: [ChatTurn]
    public var chosen: [ChatTurn]
    public var rejected: [ChatTurn]
}

/// What `summary.json` holds.
public struct HarvestSummary: Codable, Sendable, Equatable {
    public var questions: Int
    public var nodes: [String: Int]
    public var positives: [String: Int]
    public var pairs: [String: Int]
    public var meanLeafReward: Double
    /// The models that wrote each role's nodes (file names, sorted).
    public var models: [String: [String]]
    enum CodingKeys: String, CodingKey { case questions, nodes, positives, pairs, meanLeafReward = "mean_leaf_reward", models }
    public init(questions: Int, nodes: [String: Int], positives: [String: Int], pairs: [String: Int], meanLeafReward: Double,
                models: [String: [String]]) {
        self.models = models
        self.questions = questions
        self.nodes = nodes
        self.positives = positives
        self.pairs = pairs
        self.meanLeafReward = meanLeafReward
    }
}

public enum TreeExport {
    public enum Error: Swift.Error, CustomStringConvertible {
        case notATree(String)
        case incomplete(String)
        public var description: String {
            switch self {
            case let .notATree(id): return "job \(id) is not a finished tree job"
            case let .incomplete(reason): return reason
            }
        }
    }

    /// The id of a node: its path from the generation down.
    public static func nodeID(_ key: StageKey, branching n: Int) -> String {
        switch key.step {
        case 0: return "g\(key.chain)"
        case 1: return "g\(key.chain / n).v\(key.chain % n)"
        default: return "g\(key.chain / (n * n)).v\(key.chain / n % n).r\(key.chain % n)"
        }
    }

    /// A finished tree job as a harvested tree.
    public static func tree(_ job: JobRecord, index: Int) throws -> HarvestedTree {
        guard job.spec.isTree, job.state == .done else { throw Error.notATree(job.id) }
        let plan = TreePlan(spec: job.spec, seed: job.seed, jobID: job.id)
        let n = plan.branching
        let byKey = Dictionary(job.stages.map { (StageKey(chain: $0.chain, step: $0.step), $0) }, uniquingKeysWith: { a, _ in a })
        let nodes = try plan.nodes.map { key -> TreeNode in
            guard let s = byKey[key], let r = s.result, let credit = s.credit else {
                throw Error.incomplete("job \(job.id) lacks node \(nodeID(key, branching: n)) or its credit")
            }
            return TreeNode(id: nodeID(key, branching: n), parent: plan.parent(of: key).map { nodeID($0, branching: n) }, role: s.role,
                            model: r.model, prompt: r.messages ?? [], output: r.text, answer: s.extracted, reward: credit.reward, value: credit.value,
                            positive: credit.positive)
        }
        return HarvestedTree(index: index, question: job.spec.question, groundTruth: job.spec.answer ?? "", jobID: job.id,
                             branching: n, seed: job.seed, nodes: nodes)
    }

    public static let roles = Role.malt
    /// The roles whose siblings make preference pairs (the generator's have no shared parent turn).
    public static let pairRoles: [Role] = [.verifier, .refiner]

    /// Positives of `role`, as supervised examples.
    public static func sft(_ trees: [HarvestedTree], role: Role) -> [SFTExample] {
        trees.flatMap { t in
            t.nodes.filter { $0.role == role && $0.positive }.map {
                SFTExample(prompt: $0.prompt, completion: [ChatTurn(role: "assistant", content: $0.output)])
            }
        }
    }

    /// Preference pairs of `role`: every positive and non-positive pair of
    /// siblings (same parent, so the same prompt).
    public static func dpo(_ trees: [HarvestedTree], role: Role) -> [DPOExample] {
        var pairs: [DPOExample] = []
        for t in trees {
            let nodes = t.nodes.filter { $0.role == role }
            var parents: [String] = []
            var children: [String: [TreeNode]] = [:]
            for node in nodes {
                let parent = node.parent ?? ""
                if children[parent] == nil { parents.append(parent) }
                children[parent, default: []].append(node)
            }
            for parent in parents {
                let siblings = children[parent]!
                for chosen in siblings where chosen.positive {
                    for rejected in siblings where !rejected.positive {
                        pairs.append(DPOExample(prompt: chosen.prompt, chosen: [ChatTurn(role: "assistant", content: chosen.output)],
                                                rejected: [ChatTurn(role: "assistant", content: rejected.output)]))
                    }
                }
            }
        }
        return pairs
    }

    public static func summary(_ trees: [HarvestedTree]) -> HarvestSummary {
        var nodes: [String: Int] = [:], positives: [String: Int] = [:], models: [String: [String]] = [:]
        for role in roles {
            models[role.rawValue] = Set(trees.flatMap { $0.nodes.filter { $0.role == role }.map(\.model) }).sorted()
            nodes[role.rawValue] = trees.reduce(0) { $0 + $1.nodes.filter { $0.role == role }.count }
            positives[role.rawValue] = trees.reduce(0) { $0 + $1.nodes.filter { $0.role == role && $0.positive }.count }
        }
        let pairs = Dictionary(uniqueKeysWithValues: pairRoles.map { ($0.rawValue, dpo(trees, role: $0).count) })
        let leaves = trees.flatMap { $0.nodes.compactMap(\.reward) }
        return HarvestSummary(questions: trees.count, nodes: nodes, positives: positives, pairs: pairs,
                              meanLeafReward: leaves.isEmpty ? 0 : leaves.reduce(0, +) / Double(leaves.count), models: models)
    }

    /// Writes the per-role SFT and DPO sets and the summary under `directory`.
    public static func write(_ trees: [HarvestedTree], to directory: URL) throws {
        let fm = FileManager.default
        try fm.createDirectory(at: directory.appendingPathComponent("sft"), withIntermediateDirectories: true)
        try fm.createDirectory(at: directory.appendingPathComponent("dpo"), withIntermediateDirectories: true)
        for role in roles {
            try JSONLines.write(sft(trees, role: role), to: directory.appendingPathComponent("sft/\(role).jsonl"))
        }
        for role in pairRoles {
            try JSONLines.write(dpo(trees, role: role), to: directory.appendingPathComponent("dpo/\(role).jsonl"))
        }
        let encoder = JSONCoding.encoder(pretty: true)
        try (encoder.encode(summary(trees)) + Data("\n".utf8)).write(to: directory.appendingPathComponent("summary.json"), options: .atomic)
    }
}
