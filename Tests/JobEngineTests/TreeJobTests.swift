import Foundation
import Harvest
import JobEngine
import Journal
import Pipeline
import Protocol
import TestKit
import Testing

/// Tree jobs through the engine (a real journal, no processes), with the
/// test answering every node; then the exports of the finished tree.
@Suite("Tree jobs and their exports")
struct TreeJobTests {
    let directory: URL

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("chorus-tree-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    var journalPath: String { directory.appendingPathComponent("journal.sqlite").path }

    /// The hand-built tree (n = 2, ground truth 5): the leaves' answers by
    /// node id; nil means the refinement gives no number.
    static let leafAnswers: [String: String?] = [
        "g0.v0.r0": "5", "g0.v0.r1": "5", // value 1
        "g0.v1.r0": "5", "g0.v1.r1": "3", // 0.5
        "g1.v0.r0": "3", "g1.v0.r1": "3", // 0
        "g1.v1.r0": "5", "g1.v1.r1": nil, // 0.5
    ]

    /// Answers one node: generations and verifications say who they are; a
    /// refinement gives its scripted answer.
    static func answer(_ tag: String, role: Role, payload: RawJSON, branching n: Int) throws -> RawJSON {
        let parts = tag.split(separator: "/")
        let key = StageKey(chain: Int(parts[1])!, step: Int(parts[2])!)
        let id = TreeExport.nodeID(key, branching: n)
        let p = try payload.decode(StagePayload.self)
        let text: String
        switch role {
        case .generator: text = "solution \(id)\n#### 4"
        case .verifier: text = "critique \(id) of [\(p.answer ?? "")]"
        default: text = leafAnswers[id]!.map { "refined \(id)\n#### \($0)" } ?? "refined, without an answer"
        }
        let messages = [ChatTurn(role: "system", content: "You are the \(role)."),
                        ChatTurn(role: "user", content: "\(p.question) | \(p.answer ?? "-") | \(p.critique ?? "-")")]
        // A teacher writes the generations (a stronger model per role: distillation data).
        let model = role == .generator ? "teacher-1.5b.gguf" : "student-0.5b.gguf"
        return try RawJSON(encoding: FakeStage.result(text, seed: p.seed, prompt: "rendered", model: model, messages: messages))
    }

    /// Runs every requested node (siblings in the order asked), stopping after `limit` answers.
    @discardableResult
    static func serve(_ engine: JobEngine, _ effects: [EngineEffect], limit: Int = .max, asked: inout [String]) throws -> [EngineEffect] {
        var queue: [(String, Role, RawJSON)] = effects.compactMap {
            if case let .dispatch(tag, role, payload) = $0 { return (tag, role, payload) }
            return nil
        }
        var answered = 0, all = effects
        while let (tag, role, payload) = queue.first, answered < limit {
            queue.removeFirst()
            asked.append(tag)
            let more = try engine.finished(tag, attempt: 1, result: try answer(tag, role: role, payload: payload, branching: 2),
                                           worker: role.rawValue, queued: 0, seconds: 0.1)
            answered += 1
            all += more
            queue += more.compactMap {
                if case let .dispatch(tag, role, payload) = $0 { return (tag, role, payload) }
                return nil
            }
        }
        return all
    }

    @Test("a tree of branching 2: every node asked for once, siblings together; exact credit; SFT positives and DPO sibling pairs")
    func creditAndExports() throws {
        let engine = JobEngine(journal: try JobJournal(path: journalPath), maxJobs: 4)
        let spec = JobSpec(question: "What is 2 + 3?", seed: 9, answer: "#### 5", kind: .tree, branching: 2)
        let (id, first) = try engine.submit(spec, memoryAvailable: true)
        var asked: [String] = []
        let effects = try Self.serve(engine, first, asked: &asked)
        #expect(asked.count == 14 && Set(asked).count == 14, "2 + 4 + 8 nodes, each once")
        #expect(asked.prefix(2) == ["\(id)/0/0", "\(id)/1/0"], "both generations asked for at once")
        // A generation's two verifications are asked for together, right after it.
        #expect(Array(asked[2...3]) == ["\(id)/0/1", "\(id)/1/1"])
        #expect(effects.contains { if case let .publish(e, _) = $0 { return e.kind == .jobDone } else { return false } })

        let job = try #require(try JobJournal(path: journalPath).job(id: id))
        #expect(job.state == .done && job.spec.noMemory == true, "a tree uses no memory")
        let tree = try TreeExport.tree(job, index: 7)
        let byID = Dictionary(uniqueKeysWithValues: tree.nodes.map { ($0.id, $0) })
        #expect(tree.nodes.count == 14 && tree.index == 7 && tree.groundTruth == "#### 5")
        // Rewards, and values averaged up the tree, exactly.
        let values: [String: Double] = [
            "g0": 0.75, "g1": 0.25, "g0.v0": 1, "g0.v1": 0.5, "g1.v0": 0, "g1.v1": 0.5,
            "g0.v0.r0": 1, "g0.v0.r1": 1, "g0.v1.r0": 1, "g0.v1.r1": 0, "g1.v0.r0": 0, "g1.v0.r1": 0, "g1.v1.r0": 1, "g1.v1.r1": 0,
        ]
        for (node, value) in values { #expect(byID[node]?.value == value, "\(node)") }
        #expect(tree.nodes.filter(\.positive).map(\.id).sorted() == ["g0", "g0.v0", "g0.v0.r0", "g0.v0.r1", "g0.v1.r0", "g1.v1.r0"])
        #expect(byID["g0.v0.r0"]?.reward == 1 && byID["g1.v1.r1"]?.reward == 0 && byID["g0"]?.reward == nil)
        #expect(byID["g1.v1.r1"]?.answer == nil && byID["g0.v1.r1"]?.answer == "3" && byID["g0"]?.answer == "4")
        #expect(byID["g1.v0"]?.parent == "g1" && byID["g1.v0.r1"]?.parent == "g1.v0" && byID["g0"]?.parent == nil)
        #expect(tree.meanLeafReward == 0.5)
        // The credit is stored with the nodes in the journal.
        #expect(job.stages.allSatisfy { $0.credit != nil } && job.stages.first { $0.chain == 1 && $0.step == 0 }?.credit == NodeCredit(value: 0.25))
        // Each node's prompt: the messages its role saw (a refinement sees its generation and its verification).
        #expect(byID["g1.v0.r1"]?.prompt.last?.content == "What is 2 + 3? | solution g1\n#### 4 | critique g1.v0 of [solution g1\n#### 4]")

        let sftRefiner = TreeExport.sft([tree], role: .refiner)
        #expect(sftRefiner.count == 4 && sftRefiner.allSatisfy { $0.completion.first?.content.hasSuffix("#### 5") == true })
        #expect(TreeExport.sft([tree], role: .generator).map(\.completion) == [[ChatTurn(role: "assistant", content: "solution g0\n#### 4")]])
        let dpoVerifier = TreeExport.dpo([tree], role: .verifier)
        #expect(dpoVerifier.count == 1 && dpoVerifier[0].chosen[0].content.hasPrefix("critique g0.v0")
                && dpoVerifier[0].rejected[0].content.hasPrefix("critique g0.v1"))
        let dpoRefiner = TreeExport.dpo([tree], role: .refiner)
        #expect(dpoRefiner.map { [$0.chosen[0].content, $0.rejected[0].content] } == [
            ["refined g0.v1.r0\n#### 5", "refined g0.v1.r1\n#### 3"], ["refined g1.v1.r0\n#### 5", "refined, without an answer"]])
        #expect(dpoRefiner.allSatisfy { $0.prompt == byID["g0.v1.r0"]?.prompt || $0.prompt == byID["g1.v1.r0"]?.prompt })
        let summary = TreeExport.summary([tree])
        #expect(summary == HarvestSummary(questions: 1, nodes: ["generator": 2, "verifier": 4, "refiner": 8],
                                          positives: ["generator": 1, "verifier": 1, "refiner": 4],
                                          pairs: ["verifier": 1, "refiner": 2], meanLeafReward: 0.5,
                                          models: ["generator": ["teacher-1.5b.gguf"], "verifier": ["student-0.5b.gguf"],
                                                   "refiner": ["student-0.5b.gguf"]]))
        // Each node says which model wrote it.
        #expect(byID["g0"]?.model == "teacher-1.5b.gguf" && byID["g0.v1"]?.model == "student-0.5b.gguf"
                && byID["g1.v1.r0"]?.model == "student-0.5b.gguf")

        // The files load with the datasets package and have TRL's columns.
        let out = directory.appendingPathComponent("harvest")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        try JSONLines.write([tree], to: out.appendingPathComponent("trees.jsonl"))
        try TreeExport.write([tree], to: out)
        let check = try Program.checkExports(out.path, expectRows: true)
        #expect(check.status == 0, "\(check.output)")
        #expect(check.output.contains("sft/refiner.jsonl: 4 rows") && check.output.contains("dpo/refiner.jsonl: 2 rows"), "\(check.output)")
    }

    @Test("a tree resumes from its journal after a restart: only unfinished nodes are asked for again")
    func resumes() throws {
        let spec = JobSpec(question: "What is 2 + 3?", seed: 9, answer: "5", kind: .tree, branching: 2)
        var asked: [String] = []
        let id: String
        do {
            let engine = JobEngine(journal: try JobJournal(path: journalPath), maxJobs: 4)
            let (jobID, first) = try engine.submit(spec, memoryAvailable: false)
            id = jobID
            try Self.serve(engine, first, limit: 5, asked: &asked)
        }
        let restarted = JobEngine(journal: try JobJournal(path: journalPath), maxJobs: 4)
        var again: [String] = []
        try Self.serve(restarted, try restarted.resume(), asked: &again)
        #expect(Set(asked).isDisjoint(with: again), "no node done twice")
        #expect(asked.count + again.count == 14)
        let job = try #require(try restarted.job(id))
        #expect(job.state == .done && job.stages.count == 14 && job.stages.allSatisfy { $0.credit != nil })
    }

    @Test("tree specs are checked: branching 1 to 5, a ground truth, branching only on trees")
    func validation() {
        #expect(throws: ProtocolError.self) { try JobSpec(question: "q", answer: "1", kind: .tree, branching: 6).validate() }
        #expect(throws: ProtocolError.self) { try JobSpec(question: "q", kind: .tree).validate() }
        #expect(throws: ProtocolError.self) { try JobSpec(question: "q", branching: 2).validate() }
        #expect((try? JobSpec(question: "q", answer: "1", kind: .tree).validate()) != nil)
        #expect(JobSpec(question: "q", kind: .tree).treeBranching == 3)
    }
}
