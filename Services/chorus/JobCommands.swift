import ArgumentParser
import Client
import Foundation
import Harvest
import Pipeline
import Protocol
import ServiceKit

/// Where the broker is.
struct BusOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The broker's client endpoint (default: CHORUS_FRONTEND from the config, tcp://127.0.0.1:5555); its events are then read from the same host.",
                               valueName: "endpoint"))
    var broker: String?

    @Option(help: ArgumentHelp("Config file (default: $CHORUS_CONFIG or deploy/chorus.conf).", valueName: "path"))
    var config: String?

    func client() throws -> BusClient {
        do {
            var c = try Configuration(path: config)
            if let broker {
                // The events socket is on the broker's host too (unless the config names another).
                c.set("CHORUS_EVENTS", BusSettings.frontend(c.string("CHORUS_EVENTS", default: "tcp://127.0.0.1:5557"), besideBackend: broker))
                c.set("CHORUS_FRONTEND", broker)
            }
            return try BusClient(settings: BusSettings(c))
        } catch {
            throw CLIError("\(error)")
        }
    }
}

/// How a job is run.
extension RefinePolicy: ExpressibleByArgument {}

struct JobOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Independent chains, majority-voted (MALT's MV@k).", valueName: "k"))
    var samples: Int = 1

    @Option(help: ArgumentHelp("Verify-and-refine rounds at most per chain.", valueName: "r"))
    var rounds: Int = 2

    @Option(help: ArgumentHelp("Seed: the same seed and question give the same trajectory.", valueName: "s"))
    var seed: UInt64?

    @Option(help: ArgumentHelp("Most tokens per generated stage (overrides the workers' settings).", valueName: "n"))
    var maxTokens: Int?

    @Flag(help: "Do not use memory for this job.")
    var noMemory = false

    @Option(help: ArgumentHelp("When the refiner rewrites: always (MALT's), or checked (only when the verifier disagrees or the arithmetic checker finds a wrong computation).",
                               valueName: "policy"))
    var refine: RefinePolicy?

    @Option(help: ArgumentHelp("Recall from and store in this memory namespace instead of the shared one (a-z, 0-9, '-', '_', '.').",
                               valueName: "name"))
    var memoryNamespace: String?

    func spec(_ question: String, answer: String? = nil, seed override: UInt64? = nil, namespace: String? = nil) throws -> JobSpec {
        var overrides: [String: SamplingOverride]?
        if let maxTokens {
            overrides = [:]
            for role in Role.malt { overrides![role.rawValue] = SamplingOverride(maxTokens: maxTokens) }
        }
        let spec = JobSpec(question: question, samples: samples, rounds: rounds, seed: override ?? seed, answer: answer,
                           overrides: overrides, noMemory: noMemory ? true : nil,
                           memoryNamespace: noMemory ? nil : namespace ?? memoryNamespace, refine: refine)
        do { try spec.validate() } catch { throw ValidationError(error.message) }
        return spec
    }
}

func jobJSON(_ job: JobRecord) throws -> String {
    try JSONCoding.string(job, pretty: true)
}

/// Waits for a job to finish, showing its events; returns the final record.
/// With `onInterrupt`, Ctrl-C (after `StopSignal.install`) calls it: a
/// record it returns ends the wait.
func follow(_ client: BusClient, _ jobID: String, stream: Bool, timeout: Double,
            onInterrupt: (() throws -> JobRecord?)? = nil) throws -> JobRecord {
    let deadline = Date().addingTimeInterval(timeout)
    var lastPoll = Date()
    var midLine = false
    while Date() < deadline {
        if let onInterrupt, StopSignal.isRequested {
            if midLine { writeErr("\n"); midLine = false }
            if let record = try onInterrupt() { return record }
            StopSignal.reset()
        }
        if let e = try client.nextEvent(timeout: 0.5), e.jobID == jobID {
            guard stream else {
                if e.kind == .jobDone || e.kind == .jobFailed || e.kind == .jobCancelled { break }
                continue
            }
            switch e.kind {
            case .stageStarted:
                if midLine { writeErr("\n"); midLine = false }
                if e.isMemoryStage {
                    writeErr("── memory · \(e.step == MemoryStage.retrieveStep ? "retrieve" : "remember") · \(e.worker ?? "?") ──\n")
                } else {
                    let chain = (e.chain ?? 0) + 1
                    writeErr("── chain \(chain) · \(JobPlan.stage(at: e.step ?? 0).kind.rawValue) · \(e.worker ?? "?") ──\n")
                }
            case .partial:
                if e.chain == 0 || e.isMemoryStage, let t = e.text {
                    writeErr(t)
                    midLine = !t.hasSuffix("\n")
                }
            case .stageDone:
                if midLine { writeErr("\n"); midLine = false }
            case .jobDone, .jobFailed, .jobCancelled:
                if midLine { writeErr("\n") }
                return try client.result(jobID)
            case .accepted:
                break
            }
        }
        // Events can be missed (a subscriber that joined late): ask now and then.
        if Date().timeIntervalSince(lastPoll) > 2 {
            lastPoll = Date()
            let record = try client.result(jobID)
            if record.state != .running {
                if midLine { writeErr("\n") }
                return record
            }
        }
    }
    let record = try client.result(jobID)
    if record.state == .running { throw CLIError("job \(jobID) is still running after \(Int(timeout)) s; see `chorus watch \(jobID)`") }
    return record
}

/// The answer and a per-stage timing summary.
func summary(_ job: JobRecord) -> String {
    var out = ""
    switch job.state {
    case .done: out += "answer: \(job.answer ?? "(none extracted)")\n"
    case .failed: out += "failed: \(job.error ?? "unknown error")\n"
    case .cancelled: out += "cancelled\n"
    case .running: out += "running\n"
    }
    if job.spec.isTree {
        out += "tree: branching \(job.spec.treeBranching), \(job.stages.count) node(s) done; leaves' majority answer above\n"
    } else if job.spec.samples > 1 {
        out += "chains: " + job.chainAnswers.map { $0 ?? "-" }.joined(separator: ", ") + " (majority vote)\n"
    }
    if let truth = job.spec.answer {
        out += "expected: \(truth) (\(AnswerExtractor.same(job.answer, AnswerExtractor.extract(truth) ?? truth) ? "correct" : "wrong"))\n"
    }
    guard !job.stages.isEmpty else { return out }
    out += (job.spec.isTree ? "\nnode       stage     " : "\nchain step stage     ")
        + "worker                         queued   stage  model   bus  prompt reused  tokens\n"
    let stages = job.spec.isTree ? job.stages.sorted { ($0.step, $0.chain) < ($1.step, $1.chain) }
        : job.stages.sorted { ($0.chain, $0.step) < ($1.chain, $1.step) }
    var queued = 0.0, stageTime = 0.0, model = 0.0, promptTokens = 0, reusedTokens = 0
    for s in stages {
        queued += s.queuedSeconds
        stageTime += s.seconds
        let place = job.spec.isTree ? pad(TreeExport.nodeID(StageKey(chain: s.chain, step: s.step), branching: job.spec.treeBranching), 10) + " "
            : (s.isMemoryStage ? "  mem" : String(format: "%5d", s.chain + 1)) + String(format: " %4d ", s.step)
        let row = place + pad(s.stage.rawValue, 9)
            + " " + pad(String(s.worker.prefix(30)), 30) + String(format: " %6.2fs %6.2fs ", s.queuedSeconds, s.seconds)
        guard let r = s.result else {
            // A memory stage: no model, no tokens; what it did instead.
            out += row + "      -      -       -      -       -\n                 memory: \(s.text)\n"
            continue
        }
        promptTokens += r.promptTokens
        reusedTokens += r.reusedPromptTokens ?? 0
        let compute = r.promptSeconds + r.generationSeconds
        model += compute
        let reused = r.reusedPromptTokens.map(String.init) ?? "-"
        out += row + String(format: "%6.2fs %5.2fs %6d ", compute, max(0, s.seconds - compute), r.promptTokens)
            + String(repeating: " ", count: max(0, 6 - reused.count)) + reused + String(format: " %7d\n", r.completionTokens)
        if let credit = s.credit {
            out += "                 " + (credit.reward.map { String(format: "reward %.0f, ", $0) } ?? "")
                + String(format: "value %.2f", credit.value) + (credit.positive ? " (positive)" : "") + "\n"
        }
        if s.stage == .critic, let v = r.verdict, let score = r.score {
            out += "                 critic: \(v)" + String(format: " (score %.3f)\n", score)
        }
    }
    if let end = job.finishedAt {
        let total = end - job.createdAt
        out += String(format: "\ntotal %.2f s; summed over stages: queueing %.2f s, stages %.2f s (model %.2f s, bus and worker overhead %.2f s)\n",
                      total, queued, stageTime, model, max(0, stageTime - model))
        out += "prompt tokens \(promptTokens), of which \(reusedTokens) reused from the workers' caches\n"
    }
    return out
}

struct Solve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Solve a question with the agents: generate, verify, refine, judge.",
        discussion: """
            Submits a job to the broker, streams its progress and generated text (to standard \
            error), then prints the answer and a per-stage timing summary. With --json, prints \
            the whole job, with its trajectory, as JSON on standard output. Ctrl-C asks whether \
            to cancel the job (without a terminal to ask on, the job keeps running). Exits 1 if \
            the job fails or is cancelled.
            """
    )

    @Argument(help: "The question.")
    var question: String

    @OptionGroup var job: JobOptions
    @OptionGroup var bus: BusOptions

    @Flag(help: "Print the job with its trajectory as JSON.")
    var json = false

    @Flag(help: "Do not stream progress.")
    var quiet = false

    @Option(help: ArgumentHelp("Seconds to wait for the answer.", valueName: "s"))
    var timeout: Double = 1800

    func run() throws {
        let spec = try job.spec(question)
        let client = try bus.client()
        // Live before the job starts, so no event is missed; if the broker does
        // not confirm, following still catches up by asking for the job.
        do { try client.subscribe(nil, confirmWithin: 2) } catch ClientError.noReply {}
        let id: String
        do { id = try client.submit(spec, idempotencyKey: BusClient.newSubmissionKey(), timeout: 5, attempts: 2) } catch { throw CLIError("\(error)") }
        if !quiet { writeErr("job \(id) accepted\n") }
        StopSignal.install()
        let record = try follow(client, id, stream: !quiet && !json, timeout: timeout) {
            try Self.askToCancel(client, id)
        }
        if json { writeOut(try jobJSON(record) + "\n") } else { writeOut(summary(record)) }
        if record.state == .failed || record.state == .cancelled { throw ExitCode(1) }
    }

    /// After Ctrl-C: cancels the job if the user says so; otherwise leaves it
    /// running and stops waiting (nil: go on waiting, after a "no" on a terminal).
    static func askToCancel(_ client: BusClient, _ id: String) throws -> JobRecord? {
        guard isatty(0) == 1 else {
            writeErr("interrupted; job \(id) keeps running (chorus watch \(id) follows it, chorus cancel \(id) stops it)\n")
            throw ExitCode(130)
        }
        writeErr("cancel job \(id)? [y/N] ")
        let answer = readLine()?.trimmingCharacters(in: .whitespaces).lowercased() ?? ""
        guard answer == "y" || answer == "yes" else {
            writeErr("job \(id) keeps running; still following it (Ctrl-C again to ask again)\n")
            return nil
        }
        do { return try client.cancel(id) } catch { throw CLIError("could not cancel \(id): \(error)") }
    }
}

struct Submit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Submit a question and print the job id without waiting.",
        discussion: "Follow it with `chorus watch JOB` or fetch it with `chorus result JOB`."
    )

    @Argument(help: "The question.")
    var question: String

    @OptionGroup var job: JobOptions
    @OptionGroup var bus: BusOptions

    func run() throws {
        let spec = try job.spec(question)
        do { writeOut(try bus.client().submit(spec, idempotencyKey: BusClient.newSubmissionKey(), timeout: 5, attempts: 2) + "\n") } catch { throw CLIError("\(error)") }
    }
}

struct Watch: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Follow a job's progress until it finishes, then print its summary.")

    @Argument(help: "The job id.")
    var jobID: String

    @OptionGroup var bus: BusOptions

    @Option(help: ArgumentHelp("Seconds to wait.", valueName: "s"))
    var timeout: Double = 1800

    func run() throws {
        let client = try bus.client()
        try client.subscribe(jobID)
        var record: JobRecord
        do { record = try client.result(jobID) } catch { throw CLIError("\(error)") }
        if record.state == .running {
            writeErr("job \(jobID) is running; \(record.stages.count) stage(s) done\n")
            record = try follow(client, jobID, stream: true, timeout: timeout)
        }
        writeOut(summary(record))
        if record.state == .failed { throw ExitCode(1) }
    }
}

struct Cancel: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Cancel a running job: its running stages stop at their next token.",
        discussion: "The job is journaled as cancelled, with the stages that had finished. A job that has already finished is left as it is.")

    @Argument(help: "The job id.")
    var jobID: String

    @OptionGroup var bus: BusOptions

    func run() throws {
        let record: JobRecord
        do {
            let client = try bus.client()
            let before = try client.result(jobID)
            guard before.state == .running else {
                writeOut("job \(jobID) had already finished: \(before.state.rawValue)\n")
                return
            }
            record = try client.cancel(jobID)
        } catch { throw CLIError("\(error)") }
        if record.state == .cancelled {
            writeOut("job \(jobID) cancelled (\(record.stages.count) stage(s) had finished)\n")
        } else {
            writeOut("job \(jobID) had already finished: \(record.state.rawValue)\n")
        }
    }
}

struct Result: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a job's state, answer and timings (or the whole job with --json).")

    @Argument(help: "The job id.")
    var jobID: String

    @OptionGroup var bus: BusOptions

    @Flag(help: "Print the job with its trajectory as JSON.")
    var json = false

    func run() throws {
        let record: JobRecord
        do { record = try bus.client().result(jobID) } catch { throw CLIError("\(error)") }
        if json { writeOut(try jobJSON(record) + "\n") } else { writeOut("job \(record.id): \(record.state.rawValue)\n" + summary(record)) }
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the broker's workers per role and their state, queue depths and jobs in flight.")

    @OptionGroup var bus: BusOptions

    @Flag(help: "Print JSON.")
    var json = false

    @Option(help: ArgumentHelp("Wait until at least these workers are registered, e.g. generator=2,critic=1.", valueName: "role=n,..."))
    var expect: String?

    @Option(help: ArgumentHelp("Seconds to wait for the broker and for --expect.", valueName: "s"))
    var wait: Double = 0

    func expected() throws -> [String: Int] {
        var out: [String: Int] = [:]
        for part in (expect ?? "").split(separator: ",") {
            let kv = part.split(separator: "=")
            guard kv.count == 2, let n = Int(kv[1]) else { throw ValidationError("--expect: '\(part)' is not role=count") }
            out[String(kv[0])] = n
        }
        return out
    }

    func run() throws {
        let want = try expected()
        let deadline = Date().addingTimeInterval(wait)
        var s: StatusBody
        while true {
            do { s = try bus.client().status(timeout: max(1, min(5, deadline.timeIntervalSinceNow))) } catch {
                if Date() < deadline { continue }
                throw CLIError("\(error)")
            }
            let missing = want.filter { role, n in s.workers.filter { $0.role.rawValue == role }.count < n }
            if missing.isEmpty { break }
            if Date() >= deadline {
                var parts: [String] = []
                for (role, n) in missing.sorted(by: { $0.key < $1.key }) {
                    let have = s.workers.filter { $0.role.rawValue == role }.count
                    parts.append("\(role) (\(have) of \(n))")
                }
                throw CLIError("still waiting for \(parts.joined(separator: ", ")) after \(Int(wait)) s; see var/log")
            }
            Thread.sleep(forTimeInterval: 0.25)
        }
        if json {
            writeOut(try JSONCoding.string(s, pretty: true) + "\n")
            return
        }
        writeOut(String(format: "broker up %.0f s; %d job(s) in flight\n\n", s.uptimeSeconds, s.jobsInFlight.count))
        writeOut("role        workers  idle  busy  slots in use  queued\n")
        for role in s.roles {
            let ws = s.workers.filter { $0.role.rawValue == role }
            let busy = ws.filter { $0.state == .busy }.count
            let used = ws.reduce(0) { $0 + ($1.inFlight ?? 0) }, capacity = ws.reduce(0) { $0 + ($1.capacity ?? 1) }
            let slots = "\(used)/\(capacity)"
            writeOut(pad(role, 11) + String(format: " %7d %5d %5d ", ws.count, ws.count - busy, busy)
                + String(repeating: " ", count: max(0, 13 - slots.count)) + slots + String(format: " %7d\n", s.queues[role] ?? 0))
        }
        if !s.workers.isEmpty {
            writeOut("\nworker                                    role        state  served  model\n")
            for w in s.workers {
                writeOut(pad(w.workerID, 41) + " " + pad(w.role.rawValue, 11) + " " + pad(w.state.rawValue, 6) + String(format: " %6d  ", w.served) + w.model + "\n")
            }
        }
    }
}

/// `text` padded with spaces to `width` characters.
func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
}

struct Request: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send one JSON payload to a worker of a role and print its result.",
        discussion: """
            For tools and debugging: the request goes through the broker to one worker of ROLE \
            outside any job (for example `chorus request kvindex '{"op": "stats"}'`). Streamed \
            text goes to standard error, the result as JSON to standard output.
            """
    )

    @Argument(help: "The role, e.g. kvindex or memory.")
    var role: String

    @Argument(help: "The payload, a JSON value.")
    var payload: String

    @Option(help: ArgumentHelp("Seconds to wait for the result.", valueName: "s"))
    var timeout: Double = 120

    @OptionGroup var bus: BusOptions

    func run() throws {
        let value: JSONValue
        do { value = try JSONDecoder().decode(JSONValue.self, from: Data(payload.utf8)) } catch {
            throw ValidationError("the payload is not JSON: \(error)")
        }
        let result: JSONValue
        do {
            result = try bus.client().request(role: role, payload: value, queueTimeout: min(timeout, 60), timeout: timeout) { writeErr($0) }
        } catch { throw CLIError("\(error)") }
        writeOut(try JSONCoding.string(result, pretty: true) + "\n")
    }
}
