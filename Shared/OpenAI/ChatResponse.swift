import Foundation
import Pipeline
import Protocol

/// Chat completions in OpenAI's shapes, built from what Chorus produced: a
/// job (model `chorus`, one choice per chain) or one role's stage result.
public enum ChatResponse {
    /// The stage whose text is a chain's final solution: its last refinement
    /// (or its generation), as the job's plan takes it.
    public static func finalStage(chain: Int, in job: JobRecord) -> StageRecord? {
        job.stages.filter { $0.chain == chain && ($0.stage == .refine || $0.stage == .generate) }.max { $0.step < $1.step }
    }

    /// OpenAI's finish reason for a worker's stop reason.
    public static func finishReason(_ stopReason: String?) -> String {
        stopReason == "max_tokens" || stopReason == "context_full" ? "length" : "stop"
    }

    /// Tokens over every stage of a job: prompts read and tokens generated.
    public static func usage(_ job: JobRecord) -> JSONValue {
        let prompt = job.stages.reduce(0) { $0 + ($1.result?.promptTokens ?? 0) }
        let completion = job.stages.reduce(0) { $0 + ($1.result?.completionTokens ?? 0) }
        return usage(prompt: prompt, completion: completion)
    }

    public static func usage(prompt: Int, completion: Int) -> JSONValue {
        .object(["prompt_tokens": .integer(Int64(prompt)), "completion_tokens": .integer(Int64(completion)),
                 "total_tokens": .integer(Int64(prompt + completion))])
    }

    /// What Chorus adds to a job's response (`chorus`): the job's id, its
    /// majority answer and each chain's.
    public static func jobExtras(_ job: JobRecord) -> JSONValue {
        .object(["job_id": .string(job.id), "answer": job.answer.map(JSONValue.string) ?? .null,
                 "chain_answers": .array(job.chainAnswers.map { $0.map(JSONValue.string) ?? .null }),
                 "state": .string(job.state.rawValue), "trajectory": .string("/v1/jobs/\(job.id)")])
    }

    /// The response to a non-streaming request for model `chorus`.
    public static func completion(job: JobRecord, created: Int) -> JSONValue {
        let choices = (0..<job.spec.samples).map { chain -> JSONValue in
            let final = finalStage(chain: chain, in: job)
            return .object(["index": .integer(Int64(chain)),
                            "message": .object(["role": .string("assistant"), "content": .string(final?.text ?? "")]),
                            "finish_reason": .string(finishReason(final?.result?.stopReason)), "logprobs": .null])
        }
        return .object(["id": .string("chatcmpl-\(job.id)"), "object": .string("chat.completion"), "created": .integer(Int64(created)),
                        "model": .string("chorus"), "choices": .array(choices), "usage": usage(job), "chorus": jobExtras(job)])
    }

    /// Chorus's extras for one role's result: the worker's model and, for
    /// the critic, its verdict and score.
    public static func roleExtras(_ result: StageResult) -> JSONValue {
        var o: [String: JSONValue] = ["model": .string(result.model), "stop_reason": .string(result.stopReason)]
        if let v = result.verdict { o["verdict"] = .string(v.rawValue) }
        if let s = result.score { o["score"] = .number(s) }
        return .object(o)
    }

    /// The response to a non-streaming request for a role.
    public static func completion(role: String, id: String, result: StageResult, created: Int) -> JSONValue {
        .object(["id": .string(id), "object": .string("chat.completion"), "created": .integer(Int64(created)), "model": .string(role),
                 "choices": .array([.object(["index": .integer(0), "message": .object(["role": .string("assistant"), "content": .string(result.text)]),
                                             "finish_reason": .string(finishReason(result.stopReason)), "logprobs": .null])]),
                 "usage": usage(prompt: result.promptTokens, completion: result.completionTokens), "chorus": roleExtras(result)])
    }
}

/// Builds the chunks (`chat.completion.chunk`) of one streamed completion.
public struct ChunkMaker: Sendable {
    public let id: String
    public let model: String
    public let created: Int

    public init(id: String, model: String, created: Int) {
        self.id = id
        self.model = model
        self.created = created
    }

    public func chunk(index: Int, role: Bool = false, content: String? = nil, reasoning: String? = nil,
                      finish: String? = nil, extras: JSONValue? = nil) -> JSONValue {
        var delta: [String: JSONValue] = [:]
        if role { delta["role"] = .string("assistant") }
        if let content { delta["content"] = .string(content) }
        if let reasoning { delta["reasoning_content"] = .string(reasoning) }
        var o: [String: JSONValue] = [
            "id": .string(id), "object": .string("chat.completion.chunk"), "created": .integer(Int64(created)), "model": .string(model),
            "choices": .array([.object(["index": .integer(Int64(index)), "delta": .object(delta),
                                        "finish_reason": finish.map(JSONValue.string) ?? .null, "logprobs": .null])]),
        ]
        if let extras { o["chorus"] = extras }
        return .object(o)
    }

    /// The last chunk when the client asked for usage: no choices.
    public func usageChunk(_ usage: JSONValue, extras: JSONValue? = nil) -> JSONValue {
        var o: [String: JSONValue] = ["id": .string(id), "object": .string("chat.completion.chunk"), "created": .integer(Int64(created)),
                                      "model": .string(model), "choices": .array([]), "usage": usage]
        if let extras { o["chorus"] = extras }
        return .object(o)
    }
}

/// Turns a chat job's events into chunks, one choice per chain. The agents'
/// work (the draft, the verifier's critique, refinements that may be
/// replaced, the critic's verdict) streams as `reasoning_content`; a chain's
/// final solution streams as `content`: the last round's refinement token by
/// token as it is produced, or, when the critic accepts an earlier round,
/// that round's refinement at once. A stage that starts again (its worker
/// died and another took it) is not streamed twice: its new text is held
/// back while it repeats what was sent, and only what goes beyond is sent;
/// a new text that differs is sent whole after a blank line (marked as a
/// retry in the reasoning).
public struct JobChatStream: Sendable {
    public let chunks: ChunkMaker
    let rounds: Int
    /// Per chain: the step whose text streams as content.
    private var contentStep: [Int: Int] = [:]
    /// Chains whose content has been sent whole or in part.
    private var contentSent: Set<Int> = []
    private var started: Set<Int> = []
    private var texts: [StageKey: String] = [:]
    /// Per stage: the text streamed so far.
    private var streamed: [StageKey: String] = [:]
    /// Stages started again: the new attempt's text while it repeats `streamed`.
    private var replaying: [StageKey: String] = [:]

    public init(jobID: String, rounds: Int, created: Int) {
        chunks = ChunkMaker(id: "chatcmpl-\(jobID)", model: "chorus", created: created)
        self.rounds = rounds
    }

    /// The first chunk: the assistant's role for each choice, with the job's id.
    public func opening(samples: Int, jobID: String) -> [JSONValue] {
        (0..<samples).map { chunks.chunk(index: $0, role: true, content: "", extras: $0 == 0 ? .object(["job_id": .string(jobID)]) : nil) }
    }

    public mutating func translate(_ e: JobEvent) -> [JSONValue] {
        guard let chain = e.chain, !e.isMemoryStage, let step = e.step else { return [] }
        let (kind, round) = JobPlan.stage(at: step)
        let key = StageKey(chain: chain, step: step)
        switch e.kind {
        case .stageStarted:
            if streamed[key] != nil {
                replaying[key] = ""
                return []
            }
            streamed[key] = ""
            if kind == .refine && round == rounds - 1 {
                contentStep[chain] = step
                return []
            }
            let first = started.insert(chain).inserted
            return [chunks.chunk(index: chain, reasoning: (first ? "" : "\n\n") + "[\(kind.rawValue)" + (e.worker.map { " · \($0)" } ?? "") + "]\n")]
        case .partial:
            guard var text = e.text, !text.isEmpty else { return [] }
            let sent = streamed[key, default: ""]
            if let again = replaying[key].map({ $0 + text }) {
                if sent.hasPrefix(again) {
                    replaying[key] = again
                    return []
                }
                replaying[key] = nil
                if again.hasPrefix(sent) {
                    text = String(again.dropFirst(sent.count))
                    streamed[key] = again
                } else {
                    text = (contentStep[chain] == step ? "\n\n" : "\n\n[\(kind.rawValue), retried]\n") + again
                    streamed[key] = sent + text
                }
            } else {
                streamed[key] = sent + text
            }
            if text.isEmpty { return [] }
            if contentStep[chain] == step {
                contentSent.insert(chain)
                return [chunks.chunk(index: chain, content: text)]
            }
            return [chunks.chunk(index: chain, reasoning: text)]
        case .stageDone:
            texts[key] = e.text
            // An earlier round accepted: that round's refinement is the solution.
            if kind == .critic, e.verdict == .accept, round < rounds - 1, !contentSent.contains(chain),
               let solution = texts[StageKey(chain: chain, step: step - 1)] {
                contentSent.insert(chain)
                return [chunks.chunk(index: chain, content: solution)]
            }
            return []
        default:
            return []
        }
    }

    /// The closing chunks once the job is done: any chain's solution not yet
    /// sent (events can be missed), each choice's finish reason, then the
    /// usage chunk if asked for.
    public mutating func closing(_ job: JobRecord, includeUsage: Bool) -> [JSONValue] {
        var out: [JSONValue] = []
        for chain in 0..<job.spec.samples {
            let final = ChatResponse.finalStage(chain: chain, in: job)
            if !contentSent.contains(chain), let text = final?.text {
                out.append(chunks.chunk(index: chain, content: text))
                contentSent.insert(chain)
            }
            out.append(chunks.chunk(index: chain, finish: ChatResponse.finishReason(final?.result?.stopReason),
                                    extras: chain == job.spec.samples - 1 && !includeUsage ? ChatResponse.jobExtras(job) : nil))
        }
        if includeUsage { out.append(chunks.usageChunk(ChatResponse.usage(job), extras: ChatResponse.jobExtras(job))) }
        return out
    }
}

/// Server-sent events: one `data:` line per JSON chunk (and optionally an
/// `event:` name); text with newlines is split over several `data:` lines.
public enum SSE {
    public static func event(_ value: JSONValue, name: String? = nil) -> String {
        event(encoding: value, name: name)
    }

    public static func event<T: Encodable>(encoding value: T, name: String? = nil) -> String {
        let json = (try? JSONCoding.string(value)) ?? "{}"
        return (name.map { "event: \($0)\n" } ?? "") + "data: \(json)\n\n"
    }

    public static let done = "data: [DONE]\n\n"
    public static let ping = ": ping\n\n"
}
