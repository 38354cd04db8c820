import Foundation
import Inference
import Protocol

/// Serves the requests of a role without a language model (memory, kvindex,
/// echo): one at a time on the worker's inference thread, or, when cheap
/// enough (`runsInline`), on the socket thread, many at once.
public protocol RequestHandler: AnyObject, Sendable {
    /// What READY reports as the worker's model.
    var modelName: String { get }
    /// Handles one payload (decoding it once, into the handler's own request
    /// type), streaming text through `emit`; the return value is the FINAL
    /// result, encoded once into the FINAL's body; a thrown error becomes an
    /// ERROR reply.
    func handle(_ payload: RawJSON, emit: (String) -> Void) throws -> any Encodable
    /// Whether requests are cheap enough to serve on the socket thread itself.
    var runsInline: Bool { get }
    /// For inline handlers: the result's JSON text straight from the payload's,
    /// without decoding it (nil: use `handle`).
    func passThrough(_ payload: Data) -> Data?
}

extension RequestHandler {
    public var runsInline: Bool { false }
    public func passThrough(_ payload: Data) -> Data? { nil }
}

/// Serves the requests of a model role, several at once in the worker's
/// slots (`SlotScheduler`): each request is first prepared (its prompt
/// tokens, so that it can go to the slot whose cache shares most of them),
/// then started in a slot's session, which evaluates the prompt; what is left
/// to generate is decoded together with the other slots' requests.
public protocol ModelHandler: AnyObject {
    var modelName: String { get }
    var model: LanguageModel { get }
    var settings: RoleSettings { get }
    /// Checks a payload (decoding it once) and builds its prompt.
    func prepare(_ payload: RawJSON) throws -> PreparedRequest
}

/// A request ready to start: its prompt, and how to start it in a session
/// (streaming text through the closure it is given).
public struct PreparedRequest {
    public let prompt: [Int32]
    public let start: (Session, @escaping (String) -> Void) throws -> StartedRequest

    public init(prompt: [Int32], start: @escaping (Session, @escaping (String) -> Void) throws -> StartedRequest) {
        self.prompt = prompt
        self.start = start
    }
}

/// A request started in a slot: the generation still to decode (nil when it
/// was done once its prompt was evaluated) and how to make its result.
public struct StartedRequest {
    public let generation: Generation?
    public let finish: () throws -> StageResult

    public init(generation: Generation?, finish: @escaping () throws -> StageResult) {
        self.generation = generation
        self.finish = finish
    }
}

/// A worker's model does not load: names the role, the file and the reason.
public struct ModelLoadError: Error, CustomStringConvertible {
    public let role: Role
    public let path: String
    public let reason: ModelError
    public var description: String { "cannot load the \(role) model \(path): \(reason)" }
}

/// Returns the payload unchanged: the trivial worker the bus benchmark uses.
public final class EchoHandler: RequestHandler, @unchecked Sendable {
    public init() {}
    public var modelName: String { "none" }
    public var runsInline: Bool { true }
    public func handle(_ payload: RawJSON, emit: (String) -> Void) throws -> any Encodable { try payload.decode(JSONValue.self) }
    public func passThrough(_ payload: Data) -> Data? { payload }
}

/// Generator, verifier and refiner: fill the role's prompt template with the
/// stage's inputs and generate, streaming the text.
public final class StageHandler: ModelHandler, @unchecked Sendable {
    public let settings: RoleSettings
    public let model: LanguageModel

    public init(settings: RoleSettings) throws {
        self.settings = settings
        do { model = try LanguageModel(path: settings.model, threads: settings.threads) } catch {
            throw ModelLoadError(role: settings.role, path: settings.model, reason: error)
        }
        _ = try PromptTemplate.load(settings.promptPath) // fail at start-up, not on the first request
    }

    public var modelName: String { URL(fileURLWithPath: settings.model).lastPathComponent }

    func decodePayload(_ payload: RawJSON) throws -> StagePayload {
        let p: StagePayload
        do { p = try payload.decode(StagePayload.self) } catch let error as DecodingError {
            throw HandlerError("the payload is not a stage request: \(readable(error))", code: .badRequest)
        } catch {
            throw HandlerError("the payload is not a stage request: \(error)", code: .badRequest)
        }
        guard p.stage.role == settings.role else {
            throw HandlerError("a \(settings.role) worker cannot do the \(p.stage.rawValue) stage", code: .badRequest)
        }
        return p
    }

    /// The stage's prompt: the role's template filled with the payload, as
    /// chat messages, and in the model's chat format as text and as tokens.
    func prompt(_ p: StagePayload) throws -> (messages: [ChatTurn], text: String, tokens: [Int32]) {
        let messages = try PromptTemplate.load(settings.promptPath).messages(for: p)
        // The question, solutions, critiques and memories in the messages are
        // text: special tokens come from the chat template alone.
        let chat = model.chatTemplate.renderMarked(messages)
        return (messages.map { ChatTurn(role: $0.role, content: $0.content) }, chat.text, model.tokenizer.encodePrompt(chat))
    }

    public func prepare(_ payload: RawJSON) throws -> PreparedRequest {
        let p = try decodePayload(payload)
        let (messages, promptText, prompt) = try self.prompt(p)
        try checkFits(prompt)
        let (sampling, record, maxTokens) = settings.sampling(p.sampling, seed: p.seed)
        let modelName = self.modelName
        return PreparedRequest(prompt: prompt) { session, emit in
            // Every stage ends its answer with a "#### <number>" line; small models
            // tend to keep going after it, so generation stops at the end of that line.
            final class Seen { var text = ""; var answerLine = false }
            let seen = Seen()
            let generation = try Generation(session: session, request: GenerationRequest(prompt: prompt, maxTokens: maxTokens, sampling: sampling)) { text in
                seen.text += text
                if let end = Self.answerLineEnd(seen.text) {
                    let keep = seen.text.count - text.count
                    if end > keep { emit(String(text.prefix(end - keep))) }
                    seen.text = String(seen.text.prefix(end))
                    seen.answerLine = true
                    return false
                }
                emit(text)
                return true
            }
            return StartedRequest(generation: generation) {
                let result = generation.result
                return StageResult(
                    text: seen.answerLine ? seen.text : result.text, prompt: promptText, sampling: record, model: modelName,
                    promptTokens: prompt.count, completionTokens: result.tokens.count, promptSeconds: result.promptSeconds,
                    generationSeconds: result.generationSeconds, stopReason: seen.answerLine ? "answer_line" : result.stopReason.rawValue,
                    reusedPromptTokens: result.reusedPromptTokens, messages: messages,
                    confidence: Confidence(logProbabilities: result.tokenLogProbabilities))
            }
        }
    }

    /// A prompt that fills the context leaves no room to answer: refused
    /// before any work, saying how long it is and what the context holds.
    func checkFits(_ prompt: [Int32]) throws {
        let context = model.config.contextCapacity(settings.context)
        guard prompt.count < context else {
            throw HandlerError("the prompt has \(prompt.count) tokens; the \(settings.role)'s context holds \(context) (\(settings.role.settingsPrefix)_CONTEXT): shorten the question or the texts it is given",
                               code: .contextLengthExceeded)
        }
    }

    /// Where the first line holding "#### <number>" ends (in characters), once
    /// that line is complete; a "####" line without a number does not count.
    public static func answerLineEnd(_ text: String) -> Int? {
        var rest = text[...]
        while let marker = rest.range(of: "####") {
            guard let newline = rest[marker.upperBound...].firstIndex(of: "\n") else { return nil }
            if rest[marker.upperBound..<newline].contains(where: { $0.isNumber }) {
                return text.distance(from: text.startIndex, to: newline)
            }
            rest = rest[newline...]
        }
        return nil
    }
}

/// The critic: judges a solution from the model's probabilities of answering
/// "Yes" or "No" to the template's question, not by parsing free text. The
/// score is P(yes) / (P(yes) + P(no)) summed over the usual spellings; the
/// verdict is "accept" from 0.5 up.
public final class CriticHandler: ModelHandler, @unchecked Sendable {
    let stage: StageHandler
    let acceptTokens: [Int32]
    let rejectTokens: [Int32]

    public init(settings: RoleSettings) throws {
        stage = try StageHandler(settings: settings)
        let tokenizer = stage.model.tokenizer
        func singleTokens(_ words: [String]) -> [Int32] {
            Array(Set(words.compactMap { w in
                let ids = tokenizer.encode(w, parseSpecial: false)
                return ids.count == 1 ? ids[0] : nil
            })).sorted()
        }
        acceptTokens = singleTokens(["Yes", "yes", " Yes", " yes", "YES"])
        rejectTokens = singleTokens(["No", "no", " No", " no", "NO"])
        guard !acceptTokens.isEmpty, !rejectTokens.isEmpty else {
            throw HandlerError("the model's vocabulary has no single-token Yes/No answers for the critic")
        }
    }

    public var modelName: String { stage.modelName }
    public var model: LanguageModel { stage.model }
    public var settings: RoleSettings { stage.settings }

    public func prepare(_ payload: RawJSON) throws -> PreparedRequest {
        let p = try stage.decodePayload(payload)
        let (messages, promptText, prompt) = try stage.prompt(p)
        try stage.checkFits(prompt)
        let (_, record, _) = settings.sampling(p.sampling, seed: p.seed)
        let accept = acceptTokens, reject = rejectTokens, modelName = self.modelName
        return PreparedRequest(prompt: prompt) { session, emit in
            let (logits, reused, seconds) = try session.prepare(prompt)
            let probability = { (t: Int32) in Foundation.exp(Session.logProbability(logits, of: t)) }
            let yes = accept.map(probability).reduce(0, +)
            let no = reject.map(probability).reduce(0, +)
            let score = yes + no > 0 ? yes / (yes + no) : 0.5
            let verdict = Verdict(score: score)
            let text = String(format: "%@ (P(yes) = %.3f, P(no) = %.3f)", verdict == .accept ? "Yes" : "No", yes, no)
            emit(text)
            let result = StageResult(
                text: text, prompt: promptText, sampling: record, model: modelName, promptTokens: prompt.count, completionTokens: 0,
                promptSeconds: seconds, generationSeconds: 0, stopReason: "scored", verdict: verdict, score: score,
                reusedPromptTokens: reused, messages: messages)
            return StartedRequest(generation: nil) { result }
        }
    }
}
