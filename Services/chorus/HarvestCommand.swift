import ArgumentParser
import Client
import Foundation
import Harvest
import Pipeline
import Protocol

struct HarvestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "harvest",
        abstract: "Make MALT training data: a search tree per question, credited, as TRL datasets.",
        discussion: """
            Submits one tree job per question of a GSM8K-format dataset (up to --concurrency at \
            a time): n generations, n verifications of each, n refinements of each verification \
            (n = --branching). Each refinement is rewarded 1 if its answer equals the question's \
            ground truth, else 0; values are averaged up the tree and a node is positive when its \
            value is above 0.5. Writes, under --out: trees.jsonl (one tree per question, every \
            node with id, parent, role, prompt, output, answer, reward, value, positive), \
            sft/{generator,verifier,refiner}.jsonl (positives, TRL conversational \
            prompt-completion), dpo/{verifier,refiner}.jsonl (TRL prompt/chosen/rejected: a \
            positive and a non-positive sibling) and summary.json.

            Resumable: trees are written as they finish, and running the command again with the \
            same arguments skips the questions already in trees.jsonl and waits for jobs it had \
            submitted instead of submitting them again. Tree jobs use no memory. Question i's \
            tree is seeded --seed plus i, so a harvest can be repeated exactly.
            """
    )

    @Option(help: ArgumentHelp("GSM8K-format JSON-lines file.", valueName: "path"))
    var dataset: String

    @Option(help: ArgumentHelp("Harvest only N questions.", valueName: "n"))
    var limit: Int?

    @Option(help: ArgumentHelp("Skip the first N questions.", valueName: "n"))
    var offset: Int = 0

    @Option(help: ArgumentHelp("Branching n at every role (1 to 5): n^3 refinements per question.", valueName: "n"))
    var branching: Int = JobSpec.defaultBranching

    @Option(help: ArgumentHelp("Seed of the first question's tree.", valueName: "s"))
    var seed: UInt64 = 1

    @Option(help: ArgumentHelp("Sampling temperature of every role in the trees (0 to 2; default 0.7): siblings must differ for their credit to tell them apart, and a role served at temperature 0 gives n equal children, no DPO pair.", valueName: "t"))
    var temperature: Double = 0.7

    @Option(help: ArgumentHelp("Folder to write the trees and datasets to.", valueName: "dir"))
    var out: String

    @Option(help: ArgumentHelp("Trees in flight at once.", valueName: "n"))
    var concurrency: Int = 2

    @Option(help: ArgumentHelp("Seconds to wait for each tree.", valueName: "s"))
    var timeout: Double = 7200

    @OptionGroup var bus: BusOptions

    func validate() throws {
        if branching < 1 || branching > JobSpec.maxBranching { throw ValidationError("--branching must be between 1 and \(JobSpec.maxBranching)") }
        if concurrency < 1 || concurrency > 64 { throw ValidationError("--concurrency must be between 1 and 64") }
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
        if offset < 0 { throw ValidationError("--offset must be 0 or more") }
        if !(0...2).contains(temperature) { throw ValidationError("--temperature must be between 0 and 2") }
    }

    /// The arguments that decide what a harvest folder holds; a resumed run must match them.
    struct Arguments: Codable, Equatable {
        var dataset: String
        var offset: Int
        var limit: Int?
        var branching: Int
        var seed: UInt64
        /// nil in folders from before it was an option (their roles' own sampling).
        var temperature: Double?
    }

    func run() throws {
        let all = try loadDataset(dataset)
        let end = limit.map { min(all.count, offset + $0) } ?? all.count
        guard offset < end else { throw CLIError("no questions to harvest (the dataset has \(all.count))") }
        let indices = Array(offset..<end)
        let dir = URL(fileURLWithPath: out)
        let fm = FileManager.default
        try fm.createDirectory(at: dir, withIntermediateDirectories: true)

        // The folder remembers its arguments, its trees and its submitted jobs.
        let arguments = Arguments(dataset: URL(fileURLWithPath: dataset).standardizedFileURL.path, offset: offset, limit: limit,
                                  branching: branching, seed: seed, temperature: temperature)
        let argumentsURL = dir.appendingPathComponent("harvest.json")
        if let data = fm.contents(atPath: argumentsURL.path) {
            let earlier = try? JSONDecoder().decode(Arguments.self, from: data)
            guard earlier == arguments else {
                throw CLIError("\(out) holds a harvest made with other arguments (\(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))); use the same arguments to resume it, or another --out")
            }
        } else {
            try JSONCoding.encoder().encode(arguments).write(to: argumentsURL, options: .atomic)
        }
        let treesURL = dir.appendingPathComponent("trees.jsonl")
        var trees = try readTrees(treesURL)
        let jobsURL = dir.appendingPathComponent("jobs.json")
        var submitted = (try? JSONDecoder().decode([String: String].self, from: Data(contentsOf: jobsURL))) ?? [:]
        let done = Set(trees.map(\.index))
        var waiting = indices.filter { !done.contains($0) }
        if !done.isEmpty { writeErr("resuming: \(done.count) of \(indices.count) trees already harvested in \(out)\n") }

        let client = try bus.brokerClient()
        if !fm.fileExists(atPath: treesURL.path) { _ = fm.createFile(atPath: treesURL.path, contents: nil) }
        guard let treesFile = FileHandle(forWritingAtPath: treesURL.path) else { throw CLIError("cannot write \(treesURL.path)") }
        treesFile.seekToEndOfFile()

        var inFlight: [(index: Int, id: String)] = []
        var failures: [String] = []
        let start = Date()
        var reported = -1
        let total = indices.count
        while !waiting.isEmpty || !inFlight.isEmpty {
            while inFlight.count < concurrency, !waiting.isEmpty {
                let index = waiting.removeFirst()
                if let id = submitted[String(index)] {
                    inFlight.append((index, id)) // submitted by an earlier run: wait for it
                    continue
                }
                let spec = JobSpec(question: all[index].question, seed: seed &+ UInt64(index), answer: all[index].answer,
                                   overrides: Dictionary(uniqueKeysWithValues: Role.malt.map { ($0.rawValue, SamplingOverride(temperature: temperature)) }),
                                   noMemory: true, kind: .tree, branching: branching)
                let id = try client.submit(spec)
                submitted[String(index)] = id
                try saveSubmitted(submitted, to: jobsURL)
                inFlight.append((index, id))
            }
            Thread.sleep(forTimeInterval: 0.5)
            var still: [(index: Int, id: String)] = []
            for (index, id) in inFlight {
                guard let record = try client.knownResult(id) else {
                    // The broker no longer knows the job (another journal): submit it again.
                    submitted[String(index)] = nil
                    waiting.insert(index, at: 0)
                    continue
                }
                switch record.state {
                case .running:
                    if Date().timeIntervalSince1970 - record.createdAt > timeout {
                        throw CLIError("tree job \(id) (question \(index + 1)) did not finish within \(Int(timeout)) s; run again to keep waiting")
                    }
                    still.append((index, id))
                case .done:
                    let tree = try TreeExport.tree(record, index: index)
                    treesFile.write(try JSONLines.encode([tree]))
                    trees.append(tree)
                case .failed, .cancelled:
                    failures.append("question \(index + 1) (job \(id)): \(record.state == .cancelled ? "cancelled" : record.error ?? "failed")")
                    submitted[String(index)] = nil
                    try saveSubmitted(submitted, to: jobsURL)
                }
            }
            inFlight = still
            let finished = trees.count - done.count + failures.count
            if Progress.isTerminal || finished != reported {
                reported = finished
                progress(harvested: trees.count, failed: failures.count, total: total, newlyDone: finished - failures.count,
                         elapsed: Date().timeIntervalSince(start), trees: trees)
            }
        }
        Progress.finish()
        try treesFile.close()
        let chosen = trees.filter { indices.contains($0.index) }.sorted { $0.index < $1.index }
        try TreeExport.write(chosen, to: dir)
        let summary = TreeExport.summary(chosen)
        writeOut("harvested \(summary.questions) trees into \(out): nodes \(summary.nodes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")); "
                 + "positives \(summary.positives.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")); "
                 + "pairs \(summary.pairs.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")); "
                 + String(format: "mean leaf reward %.3f\n", summary.meanLeafReward))
        if !failures.isEmpty {
            writeErr("\(failures.count) tree(s) failed (run the command again to retry them):\n" + failures.map { "  " + $0 }.joined(separator: "\n") + "\n")
            throw ExitCode(1)
        }
    }

    /// Records which job each submitted question's tree is (jobs.json), so a
    /// later run waits for it instead of submitting it again.
    func saveSubmitted(_ submitted: [String: String], to url: URL) throws {
        try JSONCoding.encoder().encode(submitted).write(to: url, options: .atomic)
    }

    /// The trees harvested so far. A line cut short by an interrupted write is
    /// dropped (the file is rewritten without it) and its question harvested again.
    func readTrees(_ url: URL) throws -> [HarvestedTree] {
        guard let data = FileManager.default.contents(atPath: url.path) else { return [] }
        var trees: [HarvestedTree] = [], unreadable = 0
        for (i, line) in String(decoding: data, as: UTF8.self).split(separator: "\n").enumerated() {
            do { trees.append(try JSONDecoder().decode(HarvestedTree.self, from: Data(line.utf8))) } catch {
                writeErr("\(url.path):\(i + 1): unreadable tree, harvesting that question again\n")
                unreadable += 1
            }
        }
        if unreadable > 0 { try JSONLines.write(trees, to: url) }
        return trees
    }

    func progress(harvested: Int, failed: Int, total: Int, newlyDone: Int, elapsed: Double, trees: [HarvestedTree]) {
        let done = harvested + failed
        let reward = trees.isEmpty ? "-" : String(format: "%.2f", trees.map(\.meanLeafReward).reduce(0, +) / Double(trees.count))
        let rate = newlyDone > 0 ? Double(newlyDone) * 3600 / elapsed : 0
        Progress.show(done: done, total: total, " trees  mean leaf reward \(reward)  \(String(format: "%.1f", rate)) trees/h  elapsed \(Int(elapsed)) s"
                      + "  eta \(Progress.eta(elapsed: elapsed, done: newlyDone, left: total - done)) s" + (failed > 0 ? "  failed \(failed)" : ""))
    }
}
