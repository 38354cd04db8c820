/// How a forward pass computes. Quantised matrices go through the same
/// integer kernel in both modes, each token's column independent of the
/// others; the modes differ in float matrices and attention.
public enum ForwardMode: Sendable {
    /// Tiled float products and tiled attention over the prompt's queries.
    /// Each token's result is the same bit for bit however a sequence's tokens
    /// are split into passes, so a cached prompt prefix gives exactly what a
    /// fresh evaluation would.
    case prompt
    /// For generating: float matrices row by row, attention query by query.
    /// Each token's result is the same bit for bit whatever else is in its
    /// pass: alone, beside more tokens of its sequence, or beside other
    /// sequences (`decode(_:states:batch:)`).
    case decode
}

/// A decoder-only transformer: what `LanguageModel`, `Session` and the
/// workers use, whatever the architecture. Each architecture is one type
/// (one file in `Architectures/`) that reads its own hyperparameters and
/// tensors and composes the shared steps of `ForwardPass` in its own order.
public protocol DecoderModel: AnyObject, Sendable {
    /// The `general.architecture` values this type loads.
    static var architectures: [String] { get }

    /// Loads the weights (in place in the mapped file) and hyperparameters.
    init(file: GGUFFile, threads: Int) throws(ModelError)

    var config: ModelConfig { get }
    var pool: ThreadPool { get }
    /// Every RoPE the layers use (an architecture with local and global
    /// layers has two); a forward pass makes one table of angles for each.
    var ropes: [RotaryEmbedding] { get }

    /// Runs `tokens`, one per row of `rows` (all valid ids), appending each to
    /// its row's cache, and computes the logits of the rows `logitRows` into
    /// the rows' buffers (row 0 of the logits is the first of `logitRows`).
    /// Callers use `forward(_:state:logitRows:mode:)` and `decode(_:states:batch:)`.
    func forward(_ tokens: UnsafeBufferPointer<Int32>, rows: ForwardRows, logitRows: Range<Int>, mode: ForwardMode)
}

extension DecoderModel {
    /// A fresh state with a KV cache for `contextLength` tokens (default: the
    /// model's own context length) and batches of up to `batchSize` tokens.
    public func makeState(contextLength: Int? = nil, batchSize: Int = 512) -> DecoderState {
        DecoderState(config: config, ropes: ropes, capacity: config.contextCapacity(contextLength), batchCapacity: max(1, batchSize),
                     threads: pool.threadCount)
    }

    /// `count` states, each with its own KV cache, sharing one set of scratch
    /// buffers: use them from one thread, one pass at a time.
    public func makeStates(_ count: Int, contextLength: Int? = nil, batchSize: Int = 512) -> [DecoderState] {
        let first = makeState(contextLength: contextLength, batchSize: batchSize)
        return [first] + (1..<max(1, count)).map { _ in DecoderState(config: config, capacity: first.capacity, sharing: first) }
    }

    /// Scratch for decoding up to `sequences` states together, each with a
    /// cache of at most `contextLength` tokens (default: the model's context length).
    public func makeBatch(sequences: Int, contextLength: Int? = nil) -> DecoderBatch {
        DecoderBatch(config: config, ropes: ropes, sequences: max(1, sequences), contextCapacity: config.contextCapacity(contextLength),
                     threads: pool.threadCount)
    }

    /// Runs `tokens` (at most `state.batchCapacity`, all valid ids) at the next
    /// positions of `state`, appending them to its cache, and computes the
    /// logits of the batch rows `logitRows` into `state.logits(row:)` (row 0 is
    /// the first of `logitRows`).
    public func forward(_ tokens: UnsafeBufferPointer<Int32>, state: DecoderState, logitRows: Range<Int>, mode: ForwardMode = .prompt) {
        precondition(logitRows.lowerBound >= 0 && logitRows.upperBound <= tokens.count, "logit rows outside the batch")
        forward(tokens, rows: .sequence(state, count: tokens.count), logitRows: logitRows, mode: mode)
    }

    /// Decodes one token for each of `states` (distinct states of this model,
    /// each with room for one more token and a cache no longer than the batch's
    /// context capacity) in one pass: every weight is read once for all of
    /// them. Token `i` goes to `states[i]`; its next-token logits are
    /// `batch.logits(row: i)`, the same bit for bit as decoding it alone.
    public func decode(_ tokens: [Int32], states: [DecoderState], batch: DecoderBatch) {
        precondition(tokens.count == states.count, "\(tokens.count) tokens for \(states.count) sequences")
        let rows = ForwardRows.sequences(states, batch: batch, config: config)
        tokens.withUnsafeBufferPointer { forward($0, rows: rows, logitRows: 0..<tokens.count, mode: .decode) }
    }
}

/// The architectures Chorus runs, chosen by the file's `general.architecture`.
/// Adding one is adding its file and its type to `all`.
public enum Architectures {
    public static let all: [any DecoderModel.Type] = [LlamaModel.self, Qwen2Model.self, Qwen3Model.self, Gemma3Model.self]

    public static var names: [String] { all.flatMap { $0.architectures } }

    /// The model in `file`, as its architecture's type.
    public static func load(_ file: GGUFFile, threads: Int = ThreadPool.availableCores) throws(ModelError) -> any DecoderModel {
        let name: String
        do { name = try file.string("general.architecture") } catch { throw .gguf(error) }
        guard let type = all.first(where: { $0.architectures.contains(name) }) else { throw .unsupportedArchitecture(name) }
        return try type.init(file: file, threads: threads)
    }
}
