import ArgumentParser
import Client
import Foundation
import Harvest
import Pipeline
import Protocol
import ServiceKit

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
        let client = try bus.brokerClient()
        // Live before the job starts, so no event is missed; if the broker does
        // not confirm, following still catches up by asking for the job.
        client.client.waitUntilSubscribed(within: 2)
        let id = try client.submit(spec)
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
    static func askToCancel(_ client: Broker, _ id: String) throws -> JobRecord? {
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
        writeOut(try bus.brokerClient().submit(spec) + "\n")
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
        let client = try bus.brokerClient()
        client.client.waitUntilSubscribed(within: 2)
        var record = try client.result(jobID)
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
        let client = try bus.brokerClient()
        let before = try client.result(jobID)
        guard before.state == .running else {
            writeOut("job \(jobID) had already finished: \(before.state.rawValue)\n")
            return
        }
        let record = try client.cancel(jobID)
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
        let record = try bus.brokerClient().result(jobID)
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
        let client = try bus.brokerClient()
        var s: StatusBody
        while true {
            let timeout = max(1, min(5, deadline.timeIntervalSinceNow))
            do { s = try client.call { try await $0.status(scope: .everyTenant, timeout: timeout) } } catch {
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
            result = try bus.brokerClient().call {
                try await $0.request(role: role, payload: value, as: JSONValue.self, queueTimeout: min(timeout, 60), timeout: timeout) { writeErr($0) }
            }
        } catch { throw CLIError("\(error)") }
        writeOut(try JSONCoding.string(result, pretty: true) + "\n")
    }
}
