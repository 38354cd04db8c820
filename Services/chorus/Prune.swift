import ArgumentParser
import Foundation
import Journal
import ServiceKit

struct Prune: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove finished jobs from the broker's journal.",
        discussion: """
            Deletes every job that finished (done or failed) more than --older-than days ago, with \
            its stages, in one transaction; running jobs are never touched. Runs on the broker's \
            host, on its journal file (--journal, or CHORUS_JOURNAL from the config), and is safe \
            while the broker runs. --dry-run only counts.
            """
    )

    @Option(help: ArgumentHelp("Remove jobs that finished more than this many days ago (fractions allowed).", valueName: "days"))
    var olderThan: Double

    @Option(help: ArgumentHelp("The journal file (default: CHORUS_JOURNAL from the config, var/journal.sqlite).", valueName: "path"))
    var journal: String?

    @Option(help: ArgumentHelp("Config file (default: $CHORUS_CONFIG or deploy/chorus.conf).", valueName: "path"))
    var config: String?

    @Flag(help: "Count what would be removed, remove nothing.")
    var dryRun = false

    func validate() throws {
        if !(olderThan >= 0) || !olderThan.isFinite { throw ValidationError("--older-than must be a number of days, 0 or more") }
    }

    func run() throws {
        let path: String
        do {
            let c = try Configuration(path: config)
            path = journal.map(c.resolve) ?? c.path("CHORUS_JOURNAL", default: "var/journal.sqlite")
        } catch { throw CLIError("\(error)") }
        guard FileManager.default.fileExists(atPath: path) else {
            throw CLIError("no journal at \(path) (give --journal, or run this on the broker's host)")
        }
        let cutoff = Date().timeIntervalSince1970 - olderThan * 86_400
        let (jobs, stages): (Int, Int)
        do { (jobs, stages) = try JobJournal(path: path).prune(finishedBefore: cutoff, dryRun: dryRun) } catch {
            throw CLIError("cannot prune \(path): \(error)")
        }
        let days = olderThan == olderThan.rounded() ? String(Int(olderThan)) : String(olderThan)
        writeOut((dryRun ? "would remove" : "removed") + " \(jobs) finished job(s) and their \(stages) stage(s), finished more than \(days) day(s) ago, from \(path)\n")
    }
}
