import ArgumentParser
import Foundation
import Pipeline
import Protocol

/// `chorus compare`: two evaluations of the same questions, question by question.
struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare two evaluations of the same questions (a base team against a trained one).",
        discussion: """
            Reads two files of finished jobs as `chorus eval --out` writes them, pairs the jobs by \
            question and seed, and reports for each configuration (single generator, the \
            pipeline, MV@k, the pipeline with MV@k) the answers right before and after with 95% \
            intervals, the questions gained and lost, and McNemar's exact test. Jobs without a \
            partner in the other file are left out and counted.
            """
    )

    @Argument(help: ArgumentHelp("Jobs of the first evaluation (the base).", valueName: "before.jsonl"))
    var before: String

    @Argument(help: ArgumentHelp("Jobs of the second evaluation (the trained team).", valueName: "after.jsonl"))
    var after: String

    @Flag(help: "Print the comparison as JSON.")
    var json = false

    func run() throws {
        let a = try Self.readJobs(before), b = try Self.readJobs(after)
        let comparison = AnswerComparison(before: a, after: b)
        guard comparison.questions > 0 else {
            throw CLIError("no question is in both files with the same seed (\(a.count) and \(b.count) jobs); compare evaluations of the same questions")
        }
        if json {
            try printJSON(["questions": comparison.questions, "unmatched": comparison.unmatched, "configurations": comparison.rows.map { r in
                ["name": r.name, "before": r.before, "after": r.after, "total": r.total, "gained": r.gained, "lost": r.lost,
                 "mcnemar_p": r.pValue, "interval_before": [r.intervalBefore.low, r.intervalBefore.high],
                 "interval_after": [r.intervalAfter.low, r.intervalAfter.high]] as [String: Any]
            }])
            return
        }
        writeOut("\(comparison.questions) questions in both" + (comparison.unmatched > 0 ? " (\(comparison.unmatched) jobs without a partner left out)" : "")
                 + "; before: \(before), after: \(after)\n")
        for r in comparison.rows {
            writeOut("  " + pad(r.name, 28)
                     + String(format: "%3d -> %3d of %d  [%4.1f, %4.1f] -> [%4.1f, %4.1f]  +%d -%d, McNemar p = %.3g\n", r.before, r.after, r.total,
                              100 * r.intervalBefore.low, 100 * r.intervalBefore.high, 100 * r.intervalAfter.low, 100 * r.intervalAfter.high,
                              r.gained, r.lost, r.pValue))
        }
    }

    /// Every job of a JSON-lines file; a line that is not a job is an error naming it.
    static func readJobs(_ path: String) throws -> [JobRecord] {
        guard let data = FileManager.default.contents(atPath: path) else { throw CLIError("cannot read \(path)") }
        var jobs: [JobRecord] = []
        for (n, line) in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() where !line.allSatisfy({ $0 == 32 || $0 == 13 }) {
            do { jobs.append(try JSONDecoder().decode(JobRecord.self, from: Data(line))) } catch {
                throw CLIError("\(path):\(n + 1): not a job as chorus eval --out writes them")
            }
        }
        return jobs
    }
}
