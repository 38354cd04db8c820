/// How a forward pass computes.
public enum ForwardMode: Sendable {
    /// F32 activations and the tiled kernels for any number of tokens. Each
    /// token's result is the same bit for bit however the tokens are split
    /// into batches, so a cached prompt prefix gives exactly what a fresh
    /// evaluation would.
    case prompt
    /// For generating: a few tokens are multiplied one at a time against
    /// 8-bit quantised activations, as llama.cpp does, which streams each
    /// weight once per token; larger batches as in `prompt`.
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

    /// Runs `tokens` (at most `state.batchCapacity`, all valid ids) at the next
    /// positions of `state`, appending them to its cache, and computes the
    /// logits of the batch rows `logitRows` into `state.logits(row:)` (row 0 is
    /// the first of `logitRows`).
    func forward(_ tokens: UnsafeBufferPointer<Int32>, state: DecoderState, logitRows: Range<Int>, mode: ForwardMode)
}

extension DecoderModel {
    /// A fresh state with a KV cache for `contextLength` tokens (default: the
    /// model's own context length) and batches of up to `batchSize` tokens.
    public func makeState(contextLength: Int? = nil, batchSize: Int = 512) -> DecoderState {
        let capacity = max(1, min(contextLength ?? config.contextLength, config.contextLength))
        return DecoderState(config: config, ropes: ropes, capacity: capacity, batchCapacity: max(1, batchSize),
                            threads: pool.threadCount)
    }

    public func forward(_ tokens: UnsafeBufferPointer<Int32>, state: DecoderState, logitRows: Range<Int>) {
        forward(tokens, state: state, logitRows: logitRows, mode: .prompt)
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
