import Foundation
import Inference
import Protocol

/// Serves the requests of one role. Called on the worker's inference thread,
/// one request at a time.
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

/// A worker's model does not load: names the role, the file and the reason.
public struct ModelLoadError: Error, CustomStringConvertible {
    public let role: String
    public let path: String
    public let reason: ModelError
    public var description: String { "cannot load the \(role) model \(path): \(reason)" }
}

/// A request the handler cannot serve, with a message for the requester.
public struct HandlerError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
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
public final class StageHandler: RequestHandler, @unchecked Sendable {
    let settings: RoleSettings
    let model: LanguageModel
    let session: Session

    public init(settings: RoleSettings) throws {
        self.settings = settings
        do { model = try LanguageModel(path: settings.model, threads: settings.threads) } catch {
            throw ModelLoadError(role: settings.role, path: settings.model, reason: error)
        }
        session = model.makeSession(contextLength: settings.context)
        _ = try PromptTemplate.load(settings.promptPath) // fail at start-up, not on the first request
    }

    public var modelName: String { URL(fileURLWithPath: settings.model).lastPathComponent }

    func decodePayload(_ payload: JSONValue) throws -> StagePayload {
        let p: StagePayload
        do { p = try payload.decode(as: StagePayload.self) } catch {
            throw HandlerError("the payload is not a stage request: \(error)")
        }
        guard p.stage.role == settings.role else {
            throw HandlerError("a \(settings.role) worker cannot do the \(p.stage.rawValue) stage")
        }
        return p
    }

    public func handle(_ payload: JSONValue, emit: (String) -> Void) throws -> JSONValue {
        let p = try decodePayload(payload)
        let template = try PromptTemplate.load(settings.promptPath)
        let promptText = model.chatTemplate.render(template.messages(for: p))
        let prompt = model.tokenizer.encodePrompt(promptText)
        let (sampling, record, maxTokens) = settings.sampling(p.sampling, seed: p.seed)
        // Every stage ends its answer with a "#### <number>" line; small models
        // tend to keep going after it, so generation stops at the end of that line.
        var seen = ""
        var stopReason: String?
        let result = try session.generate(GenerationRequest(prompt: prompt, maxTokens: maxTokens, sampling: sampling)) { text in
            seen += text
            if let end = Self.answerLineEnd(seen) {
                let keep = seen.count - text.count
                if end > keep { emit(String(text.prefix(end - keep))) }
                seen = String(seen.prefix(end))
                stopReason = "answer_line"
                return false
            }
            emit(text)
            return true
        }
        return try JSONValue(encoding: StageResult(
            text: stopReason == nil ? result.text : seen, prompt: promptText, sampling: record, model: modelName, promptTokens: prompt.count,
            completionTokens: result.tokens.count, promptSeconds: result.promptSeconds,
            generationSeconds: result.generationSeconds, stopReason: stopReason ?? result.stopReason.rawValue))
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
public final class CriticHandler: RequestHandler, @unchecked Sendable {
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

    public func handle(_ payload: JSONValue, emit: (String) -> Void) throws -> JSONValue {
        let p = try stage.decodePayload(payload)
        let template = try PromptTemplate.load(stage.settings.promptPath)
        let promptText = stage.model.chatTemplate.render(template.messages(for: p))
        let prompt = stage.model.tokenizer.encodePrompt(promptText)
        let (_, record, _) = stage.settings.sampling(p.sampling, seed: p.seed)
        let start = Date()
        let probabilities = try stage.session.nextTokenProbabilities(after: prompt, candidates: acceptTokens + rejectTokens)
        let yes = probabilities[..<acceptTokens.count].reduce(0, +)
        let no = probabilities[acceptTokens.count...].reduce(0, +)
        let score = yes + no > 0 ? yes / (yes + no) : 0.5
        let verdict = score >= 0.5 ? "accept" : "reject"
        let text = String(format: "%@ (P(yes) = %.3f, P(no) = %.3f)", verdict == "accept" ? "Yes" : "No", yes, no)
        emit(text)
        return try JSONValue(encoding: StageResult(
            text: text, prompt: promptText, sampling: record, model: modelName, promptTokens: prompt.count, completionTokens: 0,
            promptSeconds: Date().timeIntervalSince(start), generationSeconds: 0, stopReason: "scored",
            verdict: verdict, score: score))
    }
}
