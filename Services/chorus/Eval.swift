import ArgumentParser
import Client
import Foundation
import Pipeline
import Protocol

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Evaluate the agents on a GSM8K-format dataset.",
        discussion: """
            Reads a JSON-lines file whose records have `question` and `answer` (ending in \
            `#### n`), submits each question as a job (up to --concurrency at a time), shows a \
            progress bar, and reports the accuracy of the final answers, of the generators' \
            first answers (a single generator, chain 1; with several chains also each chain's \
            alone and the gain of the pipeline with MV@k over their mean, with a paired 95% \
            interval: chain 1 alone can be a lucky or unlucky sample), and the mean latency \
            per stage. Job \
            seeds are --seed plus the question's index, so a run can be repeated exactly.

            --out writes every finished job as it finishes (an existing file is replaced). \
            With --resume the file is kept instead: its finished jobs for this run's questions \
            (the same question and seed) count as done, only the others run, and the report \
            covers them all, so a run stopped partway continues where it stopped. A kept job \
            that ran with other options (samples, rounds, refinement, memory, token limits) is \
            refused rather than mixed in.

            Memory is kept apart from other runs: unless --no-memory, the run recalls from and \
            stores in a namespace of its own (eval-<time>), so a question asked again in a \
            later run cannot recall the answer an earlier run gave it; --memory-namespace NAME \
            chooses the namespace (to share one on purpose). The report says which.
            """
    )

    @Option(help: ArgumentHelp("GSM8K-format JSON-lines file.", valueName: "path"))
    var dataset: String?

    @Option(help: ArgumentHelp("Run nothing: report on the finished jobs in this file, as --out wrote them (a run stopped partway reports on the jobs it finished; the time is from the first job's start to the last one's end).", valueName: "path"))
    var fromJobs: String?

    @Option(help: ArgumentHelp("Evaluate only the first N questions.", valueName: "n"))
    var limit: Int?

    @Option(help: ArgumentHelp("Skip the first N questions.", valueName: "n"))
    var offset: Int = 0

    @Option(help: ArgumentHelp("Jobs in flight at once.", valueName: "n"))
    var concurrency: Int = 2

    @Option(help: ArgumentHelp("Seconds to wait for each job.", valueName: "s"))
    var timeout: Double = 3600

    @Option(help: ArgumentHelp("Write every finished job as a JSON line to this file.", valueName: "path"))
    var out: String?

    @Flag(help: "Keep the finished jobs already in --out and run only this run's questions not among them (a run stopped partway continues; each question keeps its seed).")
    var resume = false

    @OptionGroup var job: JobOptions
    @OptionGroup var bus: BusOptions

    @Flag(help: "Print the report as JSON.")
    var json = false

    @Option(help: ArgumentHelp("Also write the report as JSON to this file.", valueName: "path"))
    var reportJSON: String?

    func load() throws -> [DatasetItem] { try loadDataset(dataset ?? "") }

    func validate() throws {
        if (dataset == nil) == (fromJobs == nil) { throw ValidationError("give --dataset (to run the questions) or --from-jobs (to report on jobs already run)") }
        if concurrency < 1 || concurrency > 64 { throw ValidationError("--concurrency must be between 1 and 64") }
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
        if resume && (out == nil || dataset == nil) { throw ValidationError("--resume continues the run whose jobs --out holds: give --dataset and --out") }
    }

    func run() throws {
        if let fromJobs {
            let jobs = try Compare.readJobs(fromJobs).filter { $0.state != .running }
            guard !jobs.isEmpty else { throw CLIError("\(fromJobs) has no finished job") }
            let start = jobs.map(\.createdAt).min() ?? 0, end = jobs.compactMap(\.finishedAt).max() ?? start
            return try report(jobs, seconds: end - start)
        }
        var items = try load()
        items = Array(items.dropFirst(offset))
        if let limit { items = Array(items.prefix(limit)) }
        guard !items.isEmpty else { throw CLIError("no questions to evaluate") }
        let baseSeed = job.seed ?? 1
        let earlier = try resumed(items, baseSeed: baseSeed)
        let pending = items.indices.filter { earlier.kept[$0] == nil }
        let client = pending.isEmpty ? nil : try bus.brokerClient()  // nothing left to run needs no broker
        let namespace = job.noMemory ? nil : job.memoryNamespace ?? earlier.namespace
            ?? "eval-" + String(UInt64(Date().timeIntervalSince1970 * 1000), radix: 36)
        writeErr("memory: " + memoryDescription(namespace: namespace) + "\n")
        if resume, let out {
            writeErr("resuming \(out): \(earlier.kept.count) of \(items.count) questions already done, \(items.count - earlier.kept.count) to run\n")
        }
        let outFile: FileHandle? = try out.map { path in
            if !resume || !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
            guard let h = FileHandle(forWritingAtPath: path) else { throw CLIError("cannot write \(path)") }
            h.seekToEndOfFile()
            return h
        }
        var next = 0
        var inFlight: [(index: Int, id: String)] = []
        var finished: [(index: Int, job: JobRecord)] = earlier.kept.map { ($0.key, $0.value) }
        var reported = -1
        let start = Date()
        while finished.count < items.count {
            while inFlight.count < concurrency && next < pending.count {
                let index = pending[next]
                let spec = try job.spec(items[index].question, answer: items[index].answer, seed: baseSeed &+ UInt64(index), namespace: namespace)
                inFlight.append((index, try client!.submit(spec)))
                next += 1
            }
            Thread.sleep(forTimeInterval: 0.5)
            var still: [(index: Int, id: String)] = []
            for (index, id) in inFlight {
                let record = try client!.result(id)
                if record.state == .running {
                    if Date().timeIntervalSince1970 - record.createdAt > timeout {
                        throw CLIError("job \(id) (question \(offset + index + 1)) did not finish within \(Int(timeout)) s")
                    }
                    still.append((index, id))
                } else {
                    finished.append((index, record))
                    if let outFile { outFile.write(try JSONLines.encode([record])) }
                }
            }
            inFlight = still
            // Progress goes to standard error, so it shows with --json too; into a
            // log (not a terminal) it is one line per finished question.
            if Progress.isTerminal || finished.count != reported {
                reported = finished.count
                progress(finished, total: items.count, ranBefore: earlier.kept.count, elapsed: Date().timeIntervalSince(start))
            }
        }
        Progress.finish()
        try report(finished.sorted { $0.index < $1.index }.map(\.job), seconds: earlier.seconds + Date().timeIntervalSince(start))
    }

    /// With --resume, the finished jobs in --out that are this run's questions
    /// (by index), the time they took (first start to last end), and the memory
    /// namespace they used; nothing without --resume or before the file exists.
    func resumed(_ items: [DatasetItem], baseSeed: UInt64) throws -> (kept: [Int: JobRecord], seconds: Double, namespace: String?) {
        guard resume, let out, FileManager.default.fileExists(atPath: out) else { return ([:], 0, nil) }
        let jobs = try Compare.readJobs(out).filter { $0.state != .running }
        let namespace = job.noMemory || job.memoryNamespace != nil ? nil : jobs.lazy.compactMap(\.spec.memoryNamespace).first
        struct Key: Hashable { let question: String, seed: UInt64? }
        let bySpec = Dictionary(jobs.map { (Key(question: $0.spec.question, seed: $0.spec.seed), $0) }, uniquingKeysWith: { $1 })  // the last one wins
        var kept: [Int: JobRecord] = [:]
        for (index, item) in items.enumerated() {
            let seed = baseSeed &+ UInt64(index)
            guard let record = bySpec[Key(question: item.question, seed: seed)] else { continue }
            let wanted = try job.spec(item.question, answer: item.answer, seed: seed, namespace: namespace)
            let differences = Self.differences(record.spec, wanted)
            guard differences.isEmpty else {
                throw CLIError("\(out): question \(offset + index + 1) (seed \(seed)) ran with other options than this run's ("
                    + differences.joined(separator: "; ") + "); resume with the options it ran with, or write to another --out")
            }
            kept[index] = record
        }
        let chosen = Array(kept.values)
        let first = chosen.map(\.createdAt).min() ?? 0, last = chosen.compactMap(\.finishedAt).max() ?? first
        return (kept, last - first, namespace)
    }

    /// What memory the run used, in words.
    func memoryDescription(namespace: String?) -> String {
        guard let namespace else { return "off (--no-memory)" }
        return job.memoryNamespace == nil ? "namespace \(namespace), this run's own: no question recalls another run's answer"
            : "namespace \(namespace) (--memory-namespace)"
    }

    /// What memory the jobs had: off when asked, or when no memory service was running.
    func memoryUsed(_ jobs: [JobRecord]) -> (mode: String, text: String) {
        if jobs.allSatisfy({ $0.spec.noMemory == true }) {
            if fromJobs != nil { return ("off", "off (the jobs ran without memory)") }
            return ("off", job.noMemory ? "off (--no-memory)" : "off (no memory service was running)")
        }
        let ns = jobs.first?.spec.memoryNamespace
        return ("namespace:" + (ns ?? ""), memoryDescription(namespace: ns))
    }

    func correct(_ answer: String?, _ truth: String?) -> Bool { AnswerExtractor.same(answer, truth) }

    /// How a kept job's spec differs from the one this run would submit, in
    /// words ("rounds: 1 in the file, 2 now"); empty when they are the same.
    /// Without --refine a job has the broker's default policy, whichever it was.
    static func differences(_ kept: JobSpec, _ wanted: JobSpec) -> [String] {
        var wanted = wanted
        if wanted.refine == nil { wanted.refine = kept.refine }  // no --refine: the broker filled in its default
        func describe<T>(_ v: T?) -> String { v.map { "\($0)" } ?? "none" }
        var out: [String] = []
        func compare<T: Equatable>(_ name: String, _ a: T?, _ b: T?) {
            if a != b { out.append("\(name): \(describe(a)) in the file, \(describe(b)) now") }
        }
        compare("kind", kept.kind, wanted.kind)
        compare("samples", kept.samples, wanted.samples)
        compare("rounds", kept.rounds, wanted.rounds)
        compare("refine", kept.refine?.rawValue, wanted.refine?.rawValue)
        compare("answer", kept.answer, wanted.answer)
        compare("no memory", kept.noMemory, wanted.noMemory)
        compare("memory namespace", kept.memoryNamespace, wanted.memoryNamespace)
        if kept.overrides != wanted.overrides { out.append("token limits (--max-tokens) differ") }
        if out.isEmpty && kept != wanted { out.append("the job's spec differs") }
        return out
    }

    func progress(_ finished: [(index: Int, job: JobRecord)], total: Int, ranBefore: Int, elapsed: Double) {
        let done = finished.count
        let right = finished.filter { correct($0.job.answer, $0.job.spec.answer) }.count
        let accuracy = done > 0 ? String(format: "%.1f", 100 * Double(right) / Double(done)) : "-"
        Progress.show(done: done, total: total, "  accuracy \(accuracy)%  elapsed \(Int(elapsed)) s  eta \(Progress.eta(elapsed: elapsed, done: done - ranBefore, left: total - done)) s")
    }

    func report(_ jobs: [JobRecord], seconds: Double) throws {
        let n = jobs.count
        // As the jobs ran (with --from-jobs, not this command's options).
        let samples = jobs.map(\.spec.samples).max() ?? job.samples, rounds = jobs.map(\.spec.rounds).max() ?? job.rounds
        let final = jobs.filter { correct($0.answer, $0.spec.answer) }.count
        let first = jobs.filter { correct($0.firstAnswers.first ?? nil, $0.spec.answer) }.count
        let firstVote = jobs.filter { correct(AnswerQuality.generatorVote($0), $0.spec.answer) }.count
        let failed = jobs.filter { $0.state == .failed }.count
        var latency: [String: [Double]] = [:]
        for j in jobs { for s in j.stages { latency[s.stage.rawValue, default: []].append(s.seconds) } }
        let jobLatency = jobs.compactMap { j in j.finishedAt.map { $0 - j.createdAt } }
        func mean(_ v: [Double]) -> Double { v.isEmpty ? 0 : v.reduce(0, +) / Double(v.count) }
        let modelResults = jobs.flatMap(\.stages).compactMap(\.result)
        let promptTokens = modelResults.reduce(0) { $0 + $1.promptTokens }
        let reusedTokens = modelResults.reduce(0) { $0 + ($1.reusedPromptTokens ?? 0) }
        let jobsPerHour = seconds > 0 ? Double(n) * 3600 / seconds : 0
        let quality = AnswerQuality(jobs)
        if json || reportJSON != nil {
            var stages: [String: Any] = [:]
            for (k, v) in latency { stages[k] = ["mean_seconds": mean(v), "count": v.count] }
            let report: [String: Any] = [
                "questions": n, "samples": samples, "rounds": rounds, "failed": failed,
                "final_accuracy": Double(final) / Double(n), "first_answer_accuracy": Double(first) / Double(n),
                "first_answers_majority_accuracy": Double(firstVote) / Double(n),
                "mean_job_seconds": mean(jobLatency), "stage_latency": stages, "wall_seconds": seconds,
                "jobs_per_hour": jobsPerHour, "prompt_tokens": promptTokens, "reused_prompt_tokens": reusedTokens,
                "memory": memoryUsed(jobs).mode,
                "answer_quality": [
                    "configurations": quality.configurations.map { c in
                        ["name": c.name, "right": c.right, "total": c.total, "accuracy": c.accuracy,
                         "interval_95": [c.interval.low, c.interval.high], "gained_vs_single": c.gained, "lost_vs_single": c.lost,
                         "mcnemar_p": c.pValue] as [String: Any]
                    },
                    "refine_flips": quality.flips.enumerated().map { r, f in
                        ["round": r + 1, "right_to_wrong": f.rightToWrong, "wrong_to_right": f.wrongToRight,
                         "right_kept": f.rightKept, "wrong_kept": f.wrongKept] as [String: Any]
                    },
                    "verifier_agreed": ["right": quality.agreedRight, "wrong": quality.agreedWrong],
                    "critic": ["accepted_right": quality.verdicts.acceptedRight, "accepted_wrong": quality.verdicts.acceptedWrong,
                               "rejected_right": quality.verdicts.rejectedRight, "rejected_wrong": quality.verdicts.rejectedWrong],
                    "single_by_chain": quality.singleByChain,
                    "gain_over_mean_single": quality.gainOverMeanSingle.map { g -> Any in
                        ["mean": g.mean, "interval_95": [g.low, g.high]] as [String: Any]
                    } ?? NSNull(),
                    "completion_tokens_per_question": quality.completionTokensPerQuestion,
                    "prompt_tokens_per_question": quality.promptTokensPerQuestion,
                ] as [String: Any],
            ]
            if let reportJSON {
                let data = try JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys])
                guard FileManager.default.createFile(atPath: reportJSON, contents: data) else { throw CLIError("cannot write \(reportJSON)") }
            }
            if json {
                try printJSON(report)
                return
            }
        }
        writeOut("questions: \(n) (samples \(samples), rounds \(rounds))" + (failed > 0 ? ", \(failed) failed" : "") + "\n")
        writeOut("memory: \(memoryUsed(jobs).text)\n")
        writeOut(String(format: "final answers:            %d/%d = %.1f%%\n", final, n, 100 * Double(final) / Double(n)))
        writeOut(String(format: "generator's first answer: %d/%d = %.1f%%\n", first, n, 100 * Double(first) / Double(n)))
        if samples > 1 {
            writeOut(String(format: "first answers, majority:  %d/%d = %.1f%%\n", firstVote, n, 100 * Double(firstVote) / Double(n)))
        }
        if quality.questions > 0 {
            writeOut("\nwhat collaboration adds (the same questions, model and seeds; 95% intervals; against the single generator):\n")
            for c in quality.configurations {
                writeOut("  " + pad(c.name, 28) + String(format: "%3d/%d = %5.1f%%  [%4.1f, %4.1f]", c.right, c.total, 100 * c.accuracy,
                                                           100 * c.interval.low, 100 * c.interval.high))
                if c.name != quality.configurations[0].name {
                    writeOut(String(format: "  +%d -%d, McNemar p = %.3g", c.gained, c.lost, c.pValue))
                }
                writeOut("\n")
            }
            if !quality.singleByChain.isEmpty, let gain = quality.gainOverMeanSingle {
                let n = Double(quality.questions), k = quality.singleByChain.count
                let meanRight = Double(quality.singleByChain.reduce(0, +)) / Double(k)
                writeOut("  single generator, each chain alone: " + quality.singleByChain.map(String.init).joined(separator: ", ")
                         + String(format: " of %d (mean %.1f%%)\n", quality.questions, 100 * meanRight / n))
                writeOut(String(format: "  pipeline with MV@%d against that mean: %+.1f points [%+.1f, %+.1f] (paired, 95%%)\n", k,
                                100 * gain.mean, 100 * gain.low, 100 * gain.high))
            }
            for (r, f) in quality.flips.enumerated() where f.total > 0 {
                writeOut("  refine, round \(r + 1): right -> wrong \(f.rightToWrong), wrong -> right \(f.wrongToRight), kept right \(f.rightKept), kept wrong \(f.wrongKept)\n")
            }
            if quality.agreedRight + quality.agreedWrong > 0 {
                writeOut("  ended by the verifier's agreement: \(quality.agreedRight) right, \(quality.agreedWrong) wrong\n")
            }
            let v = quality.verdicts
            if v.acceptedRight + v.acceptedWrong + v.rejectedRight + v.rejectedWrong > 0 {
                writeOut("  critic: accepted \(v.acceptedRight) right and \(v.acceptedWrong) wrong, rejected \(v.rejectedRight) right and \(v.rejectedWrong) wrong\n")
            }
            writeOut(String(format: "  tokens per question: %.0f written, %.0f read as prompts\n\n", quality.completionTokensPerQuestion,
                            quality.promptTokensPerQuestion))
        }
        writeOut("mean latency per stage:\n")
        for kind in StageKind.allCases {
            if let v = latency[kind.rawValue] {
                writeOut("  " + pad(kind.rawValue, 9) + String(format: " %6.2f s  (%d runs)\n", mean(v), v.count))
            }
        }
        writeOut(String(format: "mean job latency %.2f s; wall time %.0f s; %.1f jobs per hour\n", mean(jobLatency), seconds, jobsPerHour))
        writeOut(String(format: "prompt tokens %d, of which %d (%.1f%%) reused from the workers' caches\n", promptTokens, reusedTokens,
                        promptTokens > 0 ? 100 * Double(reusedTokens) / Double(promptTokens) : 0))
    }
}
