import Foundation
import Protocol

/// An error in the form OpenAI's API answers with:
/// `{"error": {"message", "type", "param", "code"}}`, with its HTTP status.
public struct APIError: Error, CustomStringConvertible, Sendable, Equatable {
    public let status: Int
    public let message: String
    public let type: String
    public let code: String
    public let param: String?
    /// Whether a client may send the request again (OpenAI's clients read
    /// the `x-should-retry` header).
    public let retryable: Bool

    public init(status: Int, message: String, type: String? = nil, code: String, param: String? = nil, retryable: Bool? = nil) {
        self.status = status
        self.message = message
        self.type = type ?? (status >= 500 ? "server_error" : status == 401 ? "authentication_error" : "invalid_request_error")
        self.code = code
        self.param = param
        self.retryable = retryable ?? (status == 429 || status == 503)
    }

    public var description: String { "\(status) \(code): \(message)" }

    public static func invalid(_ message: String, param: String? = nil) -> APIError {
        APIError(status: 400, message: message, code: "invalid_request", param: param)
    }

    public var body: JSONValue {
        .object(["error": .object([
            "message": .string(message), "type": .string(type), "code": .string(code),
            "param": param.map(JSONValue.string) ?? .null,
        ])])
    }
}

/// One message of a chat request. `content` is a string, or a list of parts
/// of which the text ones count.
public struct ChatMessage: Decodable, Sendable, Equatable {
    public var role: String
    public var content: String

    enum CodingKeys: String, CodingKey { case role, content }
    struct Part: Decodable { var type: String; var text: String? }

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        role = try c.decode(String.self, forKey: .role)
        if let text = try? c.decodeIfPresent(String.self, forKey: .content) {
            content = text
        } else if let parts = try? c.decode([Part].self, forKey: .content) {
            content = parts.filter { $0.type == "text" }.compactMap(\.text).joined(separator: "\n")
        } else if (try? c.decodeNil(forKey: .content)) ?? true {
            content = ""
        } else {
            throw DecodingError.dataCorruptedError(forKey: .content, in: c, debugDescription: "content must be a string or a list of parts")
        }
    }
}

/// `POST /v1/chat/completions`: the fields Chorus reads (others are ignored,
/// as OpenAI-compatible servers do), with Chorus's own extra fields.
public struct ChatRequest: Decodable, Sendable {
    public var model: String
    public var messages: [ChatMessage]
    public var stream: Bool?
    public var streamOptions: StreamOptions?
    public var n: Int?
    public var maxTokens: Int?
    public var maxCompletionTokens: Int?
    public var temperature: Double?
    public var topP: Double?
    public var seed: UInt64?
    // Chorus's own fields.
    public var rounds: Int?
    public var noMemory: Bool?
    public var memoryNamespace: String?
    public var topK: Int?
    public var minP: Double?
    /// For the verifier, refiner and critic: the solution (default: the last
    /// assistant message after the question) and, for the refiner, the critique.
    public var answer: String?
    public var critique: String?

    public struct StreamOptions: Decodable, Sendable {
        public var includeUsage: Bool?
        enum CodingKeys: String, CodingKey { case includeUsage = "include_usage" }
    }

    enum CodingKeys: String, CodingKey {
        case model, messages, stream, streamOptions = "stream_options", n, maxTokens = "max_tokens"
        case maxCompletionTokens = "max_completion_tokens", temperature, topP = "top_p", seed, rounds
        case noMemory = "no_memory", memoryNamespace = "memory_namespace", topK = "top_k", minP = "min_p", answer, critique
    }

    /// Reads a request body; what is wrong with it is an `APIError`.
    public static func parse(_ body: Data) throws(APIError) -> ChatRequest {
        do {
            return try JSONDecoder().decode(ChatRequest.self, from: body)
        } catch let error as DecodingError {
            throw .invalid(Self.explain(error), param: Self.field(error))
        } catch {
            throw .invalid("the body is not JSON: \(error)")
        }
    }

    static func field(_ error: DecodingError) -> String? {
        let path: [CodingKey]
        switch error {
        case let .keyNotFound(key, context): path = context.codingPath + [key]
        case let .typeMismatch(_, context), let .valueNotFound(_, context), let .dataCorrupted(context): path = context.codingPath
        @unknown default: return nil
        }
        return path.isEmpty ? nil : path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
    }

    static func explain(_ error: DecodingError) -> String {
        switch error {
        case let .keyNotFound(key, context):
            let at = field(.keyNotFound(key, context)) ?? key.stringValue
            return "'\(at)' is required"
        case let .typeMismatch(type, context):
            return "'\(field(error) ?? "body")' has the wrong type (expected \(type)): \(context.debugDescription)"
        case .valueNotFound:
            return "'\(field(error) ?? "body")' is null"
        case let .dataCorrupted(context):
            return context.codingPath.isEmpty ? "the body is not valid JSON" : "'\(field(error) ?? "body")': \(context.debugDescription)"
        @unknown default:
            return "the body is not a chat request"
        }
    }

    public var wantsStream: Bool { stream ?? false }
    public var wantsUsageChunk: Bool { streamOptions?.includeUsage ?? false }

    /// The question: the last user message.
    public func question() throws(APIError) -> String {
        guard !messages.isEmpty else { throw .invalid("'messages' is empty: send at least one user message", param: "messages") }
        guard let last = messages.lastIndex(where: { $0.role == "user" }),
              !messages[last].content.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw .invalid("no user message with text: the last user message is the question", param: "messages")
        }
        return messages[last].content
    }

    /// The solution a verifier, refiner or critic works on: `answer`, or the
    /// last assistant message after the question.
    public func solution() -> String? {
        if let answer { return answer }
        guard let question = messages.lastIndex(where: { $0.role == "user" }) else { return nil }
        return messages[question...].last { $0.role == "assistant" && !$0.content.isEmpty }?.content
    }

    /// Sampling settings the request sets, for the stages that generate.
    public func sampling() throws(APIError) -> SamplingOverride? {
        let tokens = maxCompletionTokens ?? maxTokens
        if let tokens, !(1...4096).contains(tokens) {
            throw .invalid("max_tokens must be between 1 and 4096", param: maxCompletionTokens != nil ? "max_completion_tokens" : "max_tokens")
        }
        if let temperature, !(0...2).contains(temperature) { throw .invalid("temperature must be between 0 and 2", param: "temperature") }
        if let topP, !(topP > 0 && topP <= 1) { throw .invalid("top_p must be in (0, 1]", param: "top_p") }
        if let minP, !(0...1).contains(minP) { throw .invalid("min_p must be between 0 and 1", param: "min_p") }
        if let topK, topK < 0 { throw .invalid("top_k must not be negative", param: "top_k") }
        let o = SamplingOverride(temperature: temperature, topK: topK, topP: topP, minP: minP, maxTokens: tokens)
        return o == SamplingOverride() ? nil : o
    }

    /// The job for model `chorus`: `n` chains on the last user message.
    public func jobSpec() throws(APIError) -> JobSpec {
        let sampling = try sampling()
        var overrides: [String: SamplingOverride]?
        if let sampling { overrides = Dictionary(uniqueKeysWithValues: Role.malt.map { ($0.rawValue, sampling) }) }
        let spec = JobSpec(question: try question(), samples: n ?? 1, rounds: rounds ?? 2, seed: seed, overrides: overrides,
                           noMemory: noMemory == true ? true : nil, memoryNamespace: noMemory == true ? nil : memoryNamespace)
        do { try spec.validate() } catch {
            let param = error.message.contains("samples") ? "n" : error.message.contains("rounds") ? "rounds"
                : error.message.contains("namespace") ? "memory_namespace" : "messages"
            throw .invalid(error.message.replacingOccurrences(of: "samples", with: "n (samples)"), param: param)
        }
        return spec
    }

    /// The payload of one request to a model role.
    public func stagePayload(for stage: StageKind) throws(APIError) -> StagePayload {
        guard n ?? 1 == 1 else { throw .invalid("n must be 1 for a role model (model 'chorus' runs n chains)", param: "n") }
        let question = try question()
        var answer: String?
        if stage != .generate {
            guard let s = solution() else {
                throw .invalid("the \(stage.role) works on a solution: send it as an assistant message after the question, or as 'answer'",
                               param: "answer")
            }
            answer = s
        }
        if stage == .refine && critique == nil {
            throw .invalid("the refiner needs the verifier's critique as 'critique'", param: "critique")
        }
        // Each text a role is given has the question's limit, so that a request stays far below the bus's message limit.
        for (name, text) in [("messages", question), ("answer", answer ?? ""), ("critique", critique ?? "")]
        where text.utf8.count > JobSpec.maxQuestionBytes {
            throw APIError(status: 413, message: "the \(name == "messages" ? "question" : name) has \(text.utf8.count) bytes, over the limit of \(JobSpec.maxQuestionBytes)",
                           code: "request_too_large", param: name)
        }
        return StagePayload(stage: stage, question: question, answer: answer, critique: stage == .refine ? critique : nil,
                            seed: seed ?? UInt64.random(in: 0...UInt64.max), sampling: try sampling())
    }
}
