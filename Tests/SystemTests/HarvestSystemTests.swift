import Client
import Foundation
import Journal
import Protocol
import TestKit
import Testing

/// MALT's tree search through real processes: a broker, one worker per
/// role with its slots, the real model, the command line.
@Suite("Tree jobs and harvest, as separate processes", .serialized)
struct HarvestSystemTests {
    static let shortStages = ["GENERATOR_MAX_TOKENS": "96", "VERIFIER_MAX_TOKENS": "64", "REFINER_MAX_TOKENS": "96"]

    func startTreeRoles(_ cluster: Cluster) throws {
        try cluster.startBroker()
        for role in ["generator", "verifier", "refiner"] { try cluster.startWorker(role) }
        try cluster.waitForWorkers(["generator": 1, "verifier": 1, "refiner": 1])
    }

    @Test("chorus harvest of 2 questions with n = 2: trees, SFT and DPO files that load with datasets; a second run resumes and submits nothing")
    func harvestEndToEnd() throws {
        let cluster = try Cluster(extra: Self.shortStages)
        try startTreeRoles(cluster)
        let out = cluster.dir.appendingPathComponent("harvest")
        let dataset = Paths.repositoryRoot.appendingPathComponent("datasets/gsm8k/test.jsonl").path
        let arguments = ["harvest", "--dataset", dataset, "--limit", "2", "--branching", "2", "--out", out.path, "--config", cluster.configPath]
        let first = try Program.chorus(arguments)
        #expect(first.status == 0, "\(first.stderr)\n\(cluster.logs)")
        #expect(first.stdout.contains("harvested 2 trees") && first.stderr.contains("2/2 trees"), "\(first.stdout)\(first.stderr)")
        let trees = try JSONRead.lines(out.appendingPathComponent("trees.jsonl"))
        #expect(trees.count == 2)
        for tree in trees {
            let nodes = try JSONRead.value(tree, "nodes", as: [[String: Any]].self)
            #expect(nodes.count == 14, "2 + 4 + 8 nodes")
            #expect(Set(nodes.compactMap { $0["role"] as? String }) == ["generator", "verifier", "refiner"])
            for node in nodes {
                let prompt = try JSONRead.value(node, "prompt", as: [[String: String]].self)
                let output = try JSONRead.value(node, "output", as: String.self)
                #expect(prompt.last?["role"] == "user" && !output.isEmpty, "\(node)")
                // Which model wrote it: the workers' file (a teacher's data for distillation).
                #expect(node["model"] as? String == URL(fileURLWithPath: Models.smolLM2).lastPathComponent, "\(node)")
            }
        }
        let summary = try JSONRead.object(try Data(contentsOf: out.appendingPathComponent("summary.json")), "summary.json")
        #expect(summary["questions"] as? Int == 2 && (summary["nodes"] as? [String: Int]) == ["generator": 4, "verifier": 8, "refiner": 16])
        let check = try Program.checkExports(out.path)
        #expect(check.status == 0, "\(check.output)")

        // Again with the same arguments: everything is there, nothing is submitted.
        let journal = try JobJournal(path: cluster.dir.appendingPathComponent("journal.sqlite").path)
        let jobsBefore = try journal.counts().values.reduce(0, +)
        let again = try Program.chorus(arguments)
        #expect(again.status == 0 && again.stderr.contains("resuming: 2 of 2 trees already harvested"), "\(again.stderr)")
        #expect(try journal.counts().values.reduce(0, +) == jobsBefore, "no job submitted again")
        // A tree cut short by an interrupted write is dropped and its question harvested again.
        let treesURL = out.appendingPathComponent("trees.jsonl")
        let whole = try String(contentsOf: treesURL, encoding: .utf8).split(separator: "\n")
        try (whole[0] + "\n" + whole[1].prefix(whole[1].count / 2)).write(to: treesURL, atomically: true, encoding: .utf8)
        try FileManager.default.removeItem(at: out.appendingPathComponent("jobs.json"))
        let repaired = try Program.chorus(arguments)
        #expect(repaired.status == 0 && repaired.stderr.contains("trees.jsonl:2: unreadable tree, harvesting that question again")
                && repaired.stderr.contains("resuming: 1 of 2 trees already harvested"), "\(repaired.stderr)")
        let after = try String(contentsOf: treesURL, encoding: .utf8).split(separator: "\n")
        #expect(after.count == 2 && after.allSatisfy { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) != nil })
        #expect(try journal.counts().values.reduce(0, +) == jobsBefore + 1, "one tree submitted again")
        // Other arguments for the same folder are refused, saying why.
        let other = try Program.chorus(["harvest", "--dataset", dataset, "--limit", "2", "--branching", "3", "--out", out.path, "--config", cluster.configPath])
        #expect(other.status != 0 && other.stderr.contains("holds a harvest made with other arguments"), "\(other.stderr)")
    }

    @Test("kill -9 of the broker in the middle of a tree: restarted, the tree completes, no node done twice, every node credited")
    func killBrokerMidTree() throws {
        let cluster = try Cluster(extra: Self.shortStages)
        try startTreeRoles(cluster)
        let (question, answer) = try gsm8kQuestion(1)
        let (done, job) = try cluster.killBrokerMidJob(JobSpec(question: question, seed: 5, answer: answer, kind: .tree, branching: 2),
                                                       afterStages: 3, within: 90)
        let id = job.id
        #expect(done >= 3)
        #expect(job.state == .done, "\(job.error ?? "")\n\(cluster.logs)")
        #expect(job.stages.count == 14 && Set(job.stages.map { "\($0.chain)/\($0.step)" }).count == 14)
        let journal = try JobJournal(path: cluster.dir.appendingPathComponent("journal.sqlite").path)
        #expect(try journal.stageCount(jobID: id) == 14)
        #expect(try journal.job(id: id)?.stages.allSatisfy { $0.credit != nil } == true, "credit stored with every node")
        #expect(cluster.log("broker.log").contains("resuming job \(id)"))
    }
}

@Suite("chorus prune")
struct PruneCommandTests {
    @Test("prune removes jobs finished more than N days ago from the journal file; a dry run counts; bad input is explained")
    func prune() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("chorus-prune-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("journal.sqlite").path
        let journal = try JobJournal(path: path)
        let now = Date().timeIntervalSince1970
        for (id, age) in [("three-days", 3.0), ("an-hour", 1.0 / 24)] {
            try journal.insertJob(id: id, spec: JobSpec(question: "q"), seed: 1, createdAt: now - age * 86_400)
            try journal.finishJob(id: id, state: .done, answer: "1", chainAnswers: [], firstAnswers: [], error: nil, finishedAt: now - age * 86_400)
        }
        let dry = try Program.chorus(["prune", "--older-than", "2", "--journal", path, "--dry-run"])
        #expect(dry.status == 0 && dry.stdout.contains("would remove 1 finished job(s)"), "\(dry.stdout)\(dry.stderr)")
        let real = try Program.chorus(["prune", "--older-than", "2", "--journal", path])
        #expect(real.status == 0 && real.stdout.contains("removed 1 finished job(s) and their 0 stage(s), finished more than 2 day(s) ago"),
                "\(real.stdout)\(real.stderr)")
        #expect(try journal.job(id: "three-days") == nil && journal.job(id: "an-hour") != nil)
        let negative = try Program.chorus(["prune", "--older-than=-1", "--journal", path])
        #expect(negative.status != 0 && negative.stderr.contains("--older-than must be a number of days"), "\(negative.stderr)")
        let missing = try Program.chorus(["prune", "--older-than", "1", "--journal", dir.appendingPathComponent("none.sqlite").path])
        #expect(missing.status != 0 && missing.stderr.contains("no journal at"), "\(missing.stderr)")
    }
}
