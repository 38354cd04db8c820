import Foundation
import Inference
import Protocol

/// Serves the requests of a role without a language model (memory, kvindex,
/// echo): one at a time on the worker's inference thread, or, when cheap
/// enough (`runsInline`), on the socket thread, many at once.
public protocol RequestHandler: AnyObject, Sendable {
    /// What READY reports as the worker's model.
    var modelName: String { get }
    /// Handles one payload, streaming text through `emit`; the return value is
    /// the FINAL result, a thrown error becomes an ERROR reply.
    func handle(_ payload: JSONValue, emit: (String) -> Void) throws -> JSONValue
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
    /// Checks a payload and builds its prompt.
    func prepare(_ payload: JSONValue) throws -> PreparedRequest
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
    public let finish: () throws -> JSONValue

    public init(generation: Generation?, finish: @escaping () throws -> JSONValue) {
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

/// A request the handler cannot serve, with a message for the requester and
/// the code its ERROR carries: `bad_request` for a payload that is wrong
/// (sending it again cannot help), `not_found` for something it names that
/// does not exist, `worker_failed` (the default) for anything else.
public struct HandlerError: Error, CustomStringConvertible {
    public let description: String
    public let code: ErrorCode
    public init(_ description: String, code: ErrorCode = .workerFailed) {
        self.description = description
        self.code = code
    }

    /// The ERROR body that reports `error` as the answer to `requestID`.
    public static func body(_ error: Error, requestID: String) -> ErrorBody {
        ErrorBody(requestID: requestID, code: (error as? HandlerError)?.code ?? .workerFailed, message: String(describing: error))
    }
}

/// Returns the payload unchanged: the trivial worker the bus benchmark uses.
public final class EchoHandler: RequestHandler, @unchecked Sendable {
    public init() {}
    public var modelName: String { "none" }
    public var runsInline: Bool { true }
    public func handle(_ payload: JSONValue, emit: (String) -> Void) throws -> JSONValue { payload }
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

    func decodePayload(_ payload: JSONValue) throws -> StagePayload {
        let p: StagePayload
        do { p = try payload.decode(as: StagePayload.self) } catch {
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

    public func prepare(_ payload: JSONValue) throws -> PreparedRequest {
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
                return try JSONValue(encoding: StageResult(
                    text: seen.answerLine ? seen.text : result.text, prompt: promptText, sampling: record, model: modelName,
                    promptTokens: prompt.count, completionTokens: result.tokens.count, promptSeconds: result.promptSeconds,
                    generationSeconds: result.generationSeconds, stopReason: seen.answerLine ? "answer_line" : result.stopReason.rawValue,
                    reusedPromptTokens: result.reusedPromptTokens, messages: messages))
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

    public func prepare(_ payload: JSONValue) throws -> PreparedRequest {
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
            let result = try JSONValue(encoding: StageResult(
                text: text, prompt: promptText, sampling: record, model: modelName, promptTokens: prompt.count, completionTokens: 0,
                promptSeconds: seconds, generationSeconds: 0, stopReason: "scored", verdict: verdict, score: score,
                reusedPromptTokens: reused, messages: messages))
            return StartedRequest(generation: nil) { result }
        }
    }
}

/// Decodes a role's typed request from a payload `{"op": ..., ...}`, with
/// errors (`bad_request`) that name what is missing or wrong.
public func decodeOpRequest<Request: Decodable, Op: RawRepresentable & CaseIterable>(
    _ payload: JSONValue, as: Request.Type, ops: Op.Type
) throws -> Request where Op.RawValue == String {
    guard let op = payload["op"] else { throw HandlerError("the payload needs an 'op'", code: .badRequest) }
    let known = Op.allCases.map(\.rawValue)
    guard let name = op.stringValue, known.contains(name) else {
        let shown = op.stringValue.map { "'\($0)'" } ?? "\(op)"
        throw HandlerError("unknown op \(shown) (\(known.joined(separator: ", ")))", code: .badRequest)
    }
    do { return try payload.decode(as: Request.self) } catch let error as DecodingError {
        throw HandlerError("bad \(name) request: \(readable(error))", code: .badRequest)
    }
}

/// A decoding error as a short sentence naming the field.
public func readable(_ error: DecodingError) -> String {
    func path(_ keys: [CodingKey]) -> String { keys.map(\.stringValue).joined(separator: ".") }
    switch error {
    case let .keyNotFound(key, context): return "'\(path(context.codingPath + [key]))' is missing"
    case let .typeMismatch(type, context): return "'\(path(context.codingPath))' must be \(describe(type))"
    case let .valueNotFound(type, context): return "'\(path(context.codingPath))' must be \(describe(type)), not null"
    case let .dataCorrupted(context):
        return context.codingPath.isEmpty ? context.debugDescription : "'\(path(context.codingPath))': \(context.debugDescription)"
    @unknown default: return "\(error)"
    }
}

private func describe(_ type: Any.Type) -> String {
    switch type {
    case is String.Type: return "a string"
    case is Int.Type, is UInt64.Type: return "an integer"
    case is Double.Type, is Float.Type: return "a number"
    case is Bool.Type: return "true or false"
    case is [Double].Type: return "an array of numbers"
    default: return "\(type)".hasPrefix("Array") ? "an array" : "an object"
    }
}
