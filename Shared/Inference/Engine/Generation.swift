import Foundation

/// One request's generation in a session, a token at a time: the prompt is
/// evaluated when it is made, then each `advance(with:)` samples a token from
/// the logits that followed the previous one. `Session.generate` drives one
/// alone; `GenerationBatch` drives many together, one forward pass per step.
/// Either way the tokens are the same: sampling depends only on the request,
/// its seed and the logits, and the logits of a decode step do not depend on
/// what else is in the pass.
public final class Generation {
    public let session: Session
    public let request: GenerationRequest
    private var sampler: Sampler
    private var decoder: StreamingDecoder
    private var stops: StopStringFilter
    private var history: [Int32]
    private let onText: (String) -> Bool
    private var generated: [Int32] = []
    private var logProbabilities: [Float] = []
    private var text = ""
    private var reason: StopReason?
    private let reused: Int
    private let promptSeconds: Double
    private var decodeSeconds = 0.0
    private var decodeSteps = 0

    /// The token to decode next (append to the session and get the logits
    /// that follow it); nil once the generation is finished.
    public private(set) var pending: Int32?

    /// Checks the request, evaluates its prompt in `session` (reusing the
    /// prefix it shares with what the session holds) and samples the first
    /// token. `onText` gets each piece of text as soon as it is complete
    /// (never a broken character, never part of a stop string); returning
    /// false from it stops the generation (`cancelled`).
    public init(session: Session, request: GenerationRequest, onText: @escaping (String) -> Bool = { _ in true }) throws(InferenceError) {
        if request.maxTokens < 0 { throw .invalidParameter("max tokens must be 0 or more, got \(request.maxTokens)") }
        do { try request.sampling.validate() } catch { throw .invalidParameter(error.description) }
        self.session = session
        self.request = request
        self.onText = onText
        sampler = Sampler(request.sampling)
        decoder = StreamingDecoder(tokenizer: session.model.tokenizer)
        stops = StopStringFilter(request.stopStrings)
        history = request.prompt
        let (logits, shared, seconds) = try session.prepare(request.prompt)
        reused = shared
        promptSeconds = seconds
        if request.maxTokens == 0 { finish(.maxTokens) } else { advance(with: logits) }
    }

    public var isFinished: Bool { reason != nil }

    /// Samples the next token from `logits`, the model's output after `pending`
    /// (or after the prompt, for the first token), and decides whether to go on.
    /// `seconds` is the time the pass that produced them took.
    public func advance(with logits: UnsafeBufferPointer<Float>, seconds: Double = 0) {
        precondition(reason == nil, "advancing a finished generation")
        if pending != nil {
            decodeSeconds += seconds
            decodeSteps += 1
        }
        pending = nil
        let token = sampler.sample(logits: logits, recent: history[...])
        generated.append(token)
        if let logProbability = sampler.lastLogProbability { logProbabilities.append(logProbability) }
        history.append(token)
        if request.stopAtEndOfGeneration && session.model.tokenizer.isEndOfGeneration(token) { return finish(.endOfGeneration) }
        let (ready, stopped) = stops.push(decoder.append(token))
        text += ready
        if !ready.isEmpty && !onText(ready) { return finish(.cancelled) }
        if stopped { return finish(.stopString) }
        if generated.count == request.maxTokens { return finish(.maxTokens) }
        if session.state.length >= session.state.capacity { return finish(.contextFull) }
        pending = token
    }

    /// Stops the generation now (`cancelled`); the text so far stays.
    public func cancel() {
        if reason == nil { finish(.cancelled) }
    }

    private func finish(_ why: StopReason) {
        reason = why
        pending = nil
        if why != .stopString && why != .cancelled {
            let rest = stops.finish(decoder.finish())
            text += rest
            if !rest.isEmpty { _ = onText(rest) }
        }
    }

    /// What was generated; meaningful once `isFinished`.
    public var result: GenerationResult {
        GenerationResult(promptTokens: request.prompt, tokens: generated, text: text, stopReason: reason ?? .maxTokens,
                         seed: sampler.seed, reusedPromptTokens: reused, promptSeconds: promptSeconds,
                         generationSeconds: decodeSeconds, decodeSteps: decodeSteps, tokenLogProbabilities: logProbabilities)
    }
}

/// Generations decoded together (continuous batching): each `step` is one
/// forward pass over every running generation's pending token, so each weight
/// is read once per step for all of them. Generations join between steps
/// (their prompts evaluated when they were made) and leave as soon as they
/// finish. Each one's tokens are exactly those it would generate alone.
public final class GenerationBatch {
    public let model: LanguageModel
    private let batch: DecoderBatch
    public private(set) var running: [Generation] = []

    /// Room for `capacity` generations whose sessions hold at most `contextLength` tokens.
    public init(model: LanguageModel, capacity: Int, contextLength: Int? = nil) {
        self.model = model
        batch = model.makeBatch(sequences: capacity, contextLength: contextLength)
    }

    public var capacity: Int { batch.capacity }
    public var isEmpty: Bool { running.isEmpty }
    public var isFull: Bool { running.count >= batch.capacity }

    /// Adds a generation that has a token to decode (a finished one is not added).
    public func add(_ generation: Generation) throws(InferenceError) {
        guard generation.pending != nil else { return }
        guard generation.session.model === model else { throw .invalidParameter("a generation of another model") }
        guard !isFull else { throw .invalidParameter("the batch already runs \(batch.capacity) generations") }
        guard !running.contains(where: { $0.session === generation.session }) else {
            throw .invalidParameter("a session already generating in this batch")
        }
        guard generation.session.contextLength <= batch.contextCapacity else {
            throw .invalidParameter("a session's context (\(generation.session.contextLength) tokens) is longer than the batch's (\(batch.contextCapacity))")
        }
        running.append(generation)
    }

    /// Takes a generation out of the batch (one cancelled, say).
    public func remove(_ generation: Generation) {
        running.removeAll { $0 === generation }
    }

    /// Decodes one token of every running generation in one pass; returns
    /// those that finished (and are no longer running).
    @discardableResult
    public func step() throws(InferenceError) -> [Generation] {
        if running.isEmpty { return [] }
        let start = Date()
        let logits = try model.decode(running.map { ($0.session, $0.pending!) }, batch: batch)
        let seconds = Date().timeIntervalSince(start)
        for (g, l) in zip(running, logits) { g.advance(with: l, seconds: seconds) }
        let finished = running.filter(\.isFinished)
        running.removeAll(where: \.isFinished)
        return finished
    }
}
