// What the job commands show: a job followed as it runs, its summary table, its JSON.

import Client
import Foundation
import Harvest
import Pipeline
import Protocol
import ServiceKit

func jobJSON(_ job: JobRecord) throws -> String {
    try JSONCoding.string(job, pretty: true)
}

/// Waits for a job to finish, showing its events; returns the final record.
/// With `onInterrupt`, Ctrl-C (after `StopSignal.install`) calls it: a
/// record it returns ends the wait.
/// The job's events come from the client's `events(of:)`, which catches up
/// on a missed last event by asking for the job.
func follow(_ broker: Broker, _ jobID: String, stream: Bool, timeout: Double,
            onInterrupt: (() throws -> JobRecord?)? = nil) throws -> JobRecord {
    let deadline = Date().addingTimeInterval(timeout)
    let events = BlockingEvents(broker.client, jobID: jobID)
    defer { events.stop() }
    var midLine = false
    while Date() < deadline && !events.ended {
        if let onInterrupt, StopSignal.isRequested {
            if midLine { writeErr("\n"); midLine = false }
            if let record = try onInterrupt() { return record }
            StopSignal.reset()
        }
        if let e = events.next(timeout: 0.5) {
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
                return try broker.result(jobID)
            case .accepted:
                break
            }
        }
    }
    if midLine { writeErr("\n") }
    let record = try broker.result(jobID)
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

/// `text` padded with spaces to `width` characters.
func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
}
