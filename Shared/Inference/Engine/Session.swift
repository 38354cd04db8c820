import Foundation

public enum InferenceError: Error, CustomStringConvertible, Equatable {
    case emptyPrompt
    case promptTooLong(tokens: Int, context: Int)
    case invalidToken(Int32, vocabularySize: Int)
    case invalidParameter(String)

    public var description: String {
        switch self {
        case .emptyPrompt: return "the prompt is empty"
        case let .promptTooLong(tokens, context):
            return "the input has \(tokens) tokens but the context holds \(context); shorten it or raise the context length"
        case let .invalidToken(id, size): return "token id \(id) is outside the vocabulary (0..<\(size))"
        case let .invalidParameter(reason): return reason
        }
    }
}

/// What to generate.
public struct GenerationRequest: Sendable {
    public var prompt: [Int32]
    public var maxTokens: Int
    public var sampling: SamplingParameters
    /// Generation stops before any of these strings; they are not part of the text.
    public var stopStrings: [String]
    /// Stop on the model's end-of-generation tokens (the token is kept in `tokens`).
    public var stopAtEndOfGeneration: Bool

    public init(prompt: [Int32], maxTokens: Int = 256, sampling: SamplingParameters = SamplingParameters(),
                stopStrings: [String] = [], stopAtEndOfGeneration: Bool = true) {
        self.prompt = prompt
        self.maxTokens = maxTokens
        self.sampling = sampling
        self.stopStrings = stopStrings
        self.stopAtEndOfGeneration = stopAtEndOfGeneration
    }
}

public enum StopReason: String, Sendable, Codable {
    case endOfGeneration = "end_of_generation"
    case stopString = "stop_string"
    case maxTokens = "max_tokens"
    case contextFull = "context_full"
    case cancelled
}

/// What a generation produced, with counts and timings.
public struct GenerationResult: Sendable, Codable {
    public var promptTokens: [Int32]
    /// Generated ids, ending with the end-of-generation token when generation stopped on one.
    public var tokens: [Int32]
    public var text: String
    public var stopReason: StopReason
    public var seed: UInt64
    /// Prompt tokens taken from the cache of an earlier request instead of being evaluated again.
    public var reusedPromptTokens: Int
    public var promptSeconds: Double
    public var generationSeconds: Double
    /// Forward passes made while generating (one per generated token but the last).
    public var decodeSteps: Int
    /// Each sampled token's log-probability (`Sampler.lastLogProbability`),
    /// empty for a greedy generation.
    public var tokenLogProbabilities: [Float] = []

    public var promptTokensPerSecond: Double {
        let evaluated = promptTokens.count - reusedPromptTokens
        return promptSeconds > 0 ? Double(evaluated) / promptSeconds : 0
    }

    public var decodeTokensPerSecond: Double {
        generationSeconds > 0 ? Double(decodeSteps) / generationSeconds : 0
    }
}

/// Scores of one forced token.
public struct TokenScore: Sendable, Codable, Equatable {
    /// The model's most likely token at this position.
    public var argmax: Int32
    /// Natural-log probability the model gives the forced token.
    public var logprob: Double
}

/// One conversation with a model: a KV cache and the tokens in it. Not
/// thread-safe; a service serves one request at a time per session.
public final class Session: @unchecked Sendable {
    public let model: LanguageModel
    public let state: DecoderState
    /// Tokens whose keys and values are in the cache, in order.
    public private(set) var cachedTokens: [Int32] = []
    /// How many of the cached tokens were evaluated in `.prompt` mode from the
    /// start; only these are reused for a later prompt, so reuse never changes
    /// a result.
    public private(set) var promptModePrefix = 0

    init(model: LanguageModel, state: DecoderState) {
        self.model = model
        self.state = state
    }

    public var contextLength: Int { state.capacity }

    public func reset() {
        state.reset()
        cachedTokens.removeAll()
        promptModePrefix = 0
    }

    func validate(_ tokens: [Int32]) throws(InferenceError) {
        let v = model.config.vocabularySize
        for t in tokens where t < 0 || Int(t) >= v { throw .invalidToken(t, vocabularySize: v) }
    }

    /// Appends `tokens` to the cache in batches and returns the logits after the
    /// last one (valid until the next call). Prompts use `.prompt`; generation
    /// feeds its tokens back with `.decode`.
    @discardableResult
    public func evaluate(_ tokens: [Int32], mode: ForwardMode = .prompt) throws(InferenceError) -> UnsafeBufferPointer<Float> {
        if tokens.isEmpty { throw .emptyPrompt }
        try validate(tokens)
        guard state.length + tokens.count <= state.capacity else {
            throw .promptTooLong(tokens: state.length + tokens.count, context: state.capacity)
        }
        var start = 0
        while start < tokens.count {
            let end = min(start + state.batchCapacity, tokens.count)
            let last = end == tokens.count
            tokens[start..<end].withUnsafeBufferPointer { batch in
                model.decoder.forward(batch, state: state, logitRows: last ? (batch.count - 1)..<batch.count : 0..<0, mode: mode)
            }
            if mode == .prompt && promptModePrefix == cachedTokens.count { promptModePrefix += end - start }
            cachedTokens.append(contentsOf: tokens[start..<end])
            start = end
        }
        return state.logits(row: 0)
    }

    /// Records a token that a batched decode (`LanguageModel.decode(_:batch:)`) appended to the cache.
    func appendDecoded(_ token: Int32) { cachedTokens.append(token) }

    /// Evaluates `prompt` in prompt mode, reusing the longest prefix it shares
    /// with the tokens already cached (keeping at least one token to evaluate),
    /// and returns the logits for the next token, the number of reused tokens
    /// and the seconds spent.
    public func prepare(_ prompt: [Int32]) throws(InferenceError) -> (logits: UnsafeBufferPointer<Float>, reused: Int, seconds: Double) {
        if prompt.isEmpty { throw .emptyPrompt }
        try validate(prompt)
        guard prompt.count < state.capacity else {
            throw .promptTooLong(tokens: prompt.count, context: state.capacity)
        }
        let shared = reusablePrefix(prompt)
        state.truncate(to: shared)
        cachedTokens.removeSubrange(shared...)
        promptModePrefix = shared
        let start = Date()
        let logits = try evaluate(Array(prompt[shared...]))
        return (logits, shared, Date().timeIntervalSince(start))
    }

    /// How many tokens of `prompt` `prepare` would take from the cache: the
    /// prefix it shares with the tokens cached in prompt mode, keeping at
    /// least one token to evaluate.
    public func reusablePrefix(_ prompt: [Int32]) -> Int {
        var shared = 0
        while shared < min(promptModePrefix, prompt.count - 1) && cachedTokens[shared] == prompt[shared] {
            shared += 1
        }
        return shared
    }

    /// Takes the first `count` tokens of `other`'s prompt-mode prefix, keys and
    /// values copied: what evaluating them here would give, bit for bit,
    /// without the work (requests that share a prompt and arrive together).
    public func copyPrefix(of other: Session, count: Int) throws(InferenceError) {
        guard other.model === model else { throw .invalidParameter("a session of another model") }
        guard other !== self else { return }
        guard count >= 0, count <= other.promptModePrefix, count <= state.capacity else {
            throw .invalidParameter("cannot copy \(count) tokens: the other session holds \(other.promptModePrefix) in prompt mode and this one has room for \(state.capacity)")
        }
        state.cache.copyPrefix(of: other.state.cache, count: count)
        cachedTokens = Array(other.cachedTokens.prefix(count))
        promptModePrefix = count
    }

    /// Probabilities of the next token after `prompt` (a softmax over the whole
    /// vocabulary), for the given candidate tokens.
    public func nextTokenProbabilities(after prompt: [Int32], candidates: [Int32]) throws(InferenceError) -> [Double] {
        let (logits, _, _) = try prepare(prompt)
        return candidates.map { Foundation.exp(Self.logProbability(logits, of: $0)) }
    }

    /// Generates text for `request.prompt`, calling `onText` with each piece of
    /// text as soon as it is complete (never a broken character, never part of
    /// a stop string). Return false from `onText` to stop early.
    public func generate(_ request: GenerationRequest, onText: @escaping (String) -> Bool = { _ in true }) throws(InferenceError) -> GenerationResult {
        let generation = try Generation(session: self, request: request, onText: onText)
        while let token = generation.pending {
            let start = Date()
            let logits = try evaluate([token], mode: .decode)
            generation.advance(with: logits, seconds: Date().timeIntervalSince(start))
        }
        return generation.result
    }

    /// Teacher forcing: evaluates `prompt` followed by `continuation` and, for
    /// each continuation token, returns the model's argmax at that position and
    /// the log-probability it gives the token.
    public func score(prompt: [Int32], continuation: [Int32]) throws(InferenceError) -> [TokenScore] {
        if prompt.isEmpty { throw .emptyPrompt }
        if continuation.isEmpty { return [] }
        let all = prompt + continuation.dropLast()
        try validate(all + [continuation.last!])
        guard all.count <= state.capacity else { throw .promptTooLong(tokens: all.count, context: state.capacity) }
        reset()
        // Logits at positions prompt.count - 1 ..< all.count predict the continuation.
        let wanted = (prompt.count - 1)..<all.count
        var scores: [TokenScore] = []
        var start = 0
        while start < all.count {
            let end = min(start + state.batchCapacity, all.count)
            let rows = max(wanted.lowerBound, start)..<min(wanted.upperBound, end)
            let local = rows.isEmpty ? 0..<0 : (rows.lowerBound - start)..<(rows.upperBound - start)
            all[start..<end].withUnsafeBufferPointer { batch in
                model.decoder.forward(batch, state: state, logitRows: local)
            }
            for (i, position) in rows.enumerated() {
                let target = continuation[position - wanted.lowerBound]
                let logits = state.logits(row: i)
                scores.append(TokenScore(argmax: Sampler.argmax(logits), logprob: Self.logProbability(logits, of: target)))
            }
            start = end
        }
        cachedTokens = Array(all)
        promptModePrefix = all.count
        return scores
    }

    /// Perplexity the way llama.cpp's `llama-perplexity` measures it: the text's
    /// tokens are cut into chunks of `context` tokens (the remainder is dropped),
    /// each chunk is evaluated from an empty cache (its first token replaced by
    /// `chunkStart` when given: the BOS of a model that asks for one), and only
    /// the second half of each chunk is scored. `progress(done, total,
    /// perplexitySoFar)` follows each chunk.
    public func perplexity(tokens: [Int32], context: Int, chunkStart: Int32? = nil,
                           progress: (Int, Int, Double) -> Void = { _, _, _ in }) throws(InferenceError) -> Double {
        guard context >= 4, context <= state.capacity else {
            throw .invalidParameter("the perplexity context must be between 4 and \(state.capacity), got \(context)")
        }
        try validate(tokens)
        let chunks = tokens.count / context
        guard chunks > 0 else {
            throw .invalidParameter("the text has \(tokens.count) tokens, fewer than one context of \(context)")
        }
        let firstScored = context / 2
        var nll = 0.0
        var count = 0
        for chunk in 0..<chunks {
            let base = chunk * context
            reset()
            // Positions firstScored ..< context - 1 predict tokens firstScored + 1 ..< context.
            var start = 0
            while start < context {
                let end = min(start + state.batchCapacity, context)
                let rows = max(firstScored, start)..<min(context - 1, end)
                let local = rows.isEmpty ? 0..<0 : (rows.lowerBound - start)..<(rows.upperBound - start)
                var batch = Array(tokens[(base + start)..<(base + end)])
                if start == 0, let first = chunkStart { batch[0] = first }
                batch.withUnsafeBufferPointer { model.decoder.forward($0, state: state, logitRows: local) }
                for (i, position) in rows.enumerated() {
                    nll -= Self.logProbability(state.logits(row: i), of: tokens[base + position + 1])
                    count += 1
                }
                start = end
            }
            progress(chunk + 1, chunks, exp(nll / Double(count)))
        }
        reset()
        return exp(nll / Double(count))
    }

    /// log softmax(logits)[token], computed in double precision.
    public static func logProbability(_ logits: UnsafeBufferPointer<Float>, of token: Int32) -> Double {
        var maxValue = -Float.infinity
        for v in logits where v > maxValue { maxValue = v }
        var sum = 0.0
        for v in logits { sum += Foundation.exp(Double(v - maxValue)) }
        return Double(logits[Int(token)] - maxValue) - Foundation.log(sum)
    }
}

/// Holds back text that might be the start of a stop string, and cuts the
/// text before a stop string once one appears.
struct StopStringFilter {
    let stops: [String]
    private var held = ""

    init(_ stops: [String]) { self.stops = stops.filter { !$0.isEmpty } }

    /// Adds text; returns what can be shown and whether a stop string was found.
    mutating func push(_ text: String) -> (String, Bool) {
        if stops.isEmpty { return (text, false) }
        held += text
        var earliest: String.Index?
        for s in stops {
            if let r = held.range(of: s), earliest == nil || r.lowerBound < earliest! { earliest = r.lowerBound }
        }
        if let cut = earliest {
            let out = String(held[..<cut])
            held = ""
            return (out, true)
        }
        // Keep the longest tail that is a prefix of some stop string.
        var keep = 0
        for s in stops {
            var n = min(s.count - 1, held.count)
            while n > 0 {
                if held.hasSuffix(s.prefix(n)) { keep = max(keep, n); break }
                n -= 1
            }
        }
        let cut = held.index(held.endIndex, offsetBy: -keep)
        let out = String(held[..<cut])
        held = String(held[cut...])
        return (out, false)
    }

    mutating func finish(_ text: String) -> String {
        let (out, _) = push(text)
        defer { held = "" }
        return out + held
    }
}
