/// How RoPE pairs the dimensions of a head.
public enum RopeStyle: String, Sendable, Codable {
    /// Adjacent pairs (x[2i], x[2i+1]): what llama.cpp uses for `llama` files.
    case normal
    /// Halves (x[i], x[i + d/2]): Qwen 2 and 3, Gemma 3.
    case neox
}

/// Rotary position embedding as one layer applies it: dimension pair `i` of
/// a head at position `p` turns by `p / scale * base^(-2i / dimensions) / factor[i]`.
public struct RotaryEmbedding: Sendable, Equatable, Codable {
    public var style: RopeStyle
    /// Rotated dimensions per head (the first ones; the rest pass unchanged).
    public var dimensions: Int
    public var base: Float
    /// Positions are divided by this (linear scaling); 1 means none.
    public var scale: Float
    /// Per-frequency divisors (Llama 3's `rope_freqs`), `dimensions / 2` of them.
    public var frequencyFactors: [Float]?

    public init(style: RopeStyle, dimensions: Int, base: Float, scale: Float = 1, frequencyFactors: [Float]? = nil) {
        self.style = style
        self.dimensions = dimensions
        self.base = base
        self.scale = scale
        self.frequencyFactors = frequencyFactors
    }
}

/// The hyperparameters every decoder-only transformer here shares, read from
/// the GGUF file's `<architecture>.*` keys and its tensor shapes. An
/// architecture reads what is particular to it on top of these.
public struct ModelConfig: Sendable, Equatable, Codable {
    public var architecture: String
    public var blockCount: Int
    public var embeddingLength: Int
    public var feedForwardLength: Int
    public var headCount: Int
    public var headCountKV: Int
    /// Width of one attention head (`attention.key_length`, else embedding / heads).
    public var headDim: Int
    /// RoPE as the file describes it (an architecture may use others for some layers).
    public var rope: RotaryEmbedding
    public var rmsEpsilon: Float
    public var contextLength: Int
    public var vocabularySize: Int
    /// The output projection is the token embedding (no `output.weight`).
    public var tiedOutput: Bool

    public var queryDim: Int { headCount * headDim }
    public var kvDim: Int { headCountKV * headDim }
    public var ropeDim: Int { rope.dimensions }

    /// The cache length a state gets for `contextLength` tokens: the model's
    /// own context length when nil or longer, at least 1.
    public func contextCapacity(_ contextLength: Int?) -> Int {
        max(1, min(contextLength ?? self.contextLength, self.contextLength))
    }

    /// Reads the shared keys under `architecture`'s prefix.
    public init(gguf: GGUFFile, architecture arch: String, ropeStyle: RopeStyle) throws(ModelError) {
        do {
            architecture = arch
            blockCount = try gguf.int("\(arch).block_count")
            embeddingLength = try gguf.int("\(arch).embedding_length")
            feedForwardLength = try gguf.int("\(arch).feed_forward_length")
            headCount = try gguf.int("\(arch).attention.head_count")
            headCountKV = gguf.metadata["\(arch).attention.head_count_kv"]?.intValue ?? headCount
            headDim = gguf.metadata["\(arch).attention.key_length"]?.intValue ?? (headCount > 0 ? embeddingLength / headCount : 0)
            if let valueLength = gguf.metadata["\(arch).attention.value_length"]?.intValue, valueLength != headDim {
                throw ModelError.invalidConfiguration("attention.value_length \(valueLength) differs from key_length \(headDim)")
            }
            rmsEpsilon = Float(gguf.metadata["\(arch).attention.layer_norm_rms_epsilon"]?.doubleValue ?? 1e-5)
            contextLength = gguf.metadata["\(arch).context_length"]?.intValue ?? 2048
            var scale: Float = 1
            switch gguf.metadata["\(arch).rope.scaling.type"]?.stringValue {
            case nil, "none", "llama3":
                // Llama 3's scaling lives in the rope_freqs tensor, which the architecture reads.
                break
            case "linear":
                guard let factor = gguf.metadata["\(arch).rope.scaling.factor"]?.doubleValue, factor > 0 else {
                    throw ModelError.invalidConfiguration("linear RoPE scaling without a positive rope.scaling.factor")
                }
                scale = Float(factor)
            case let other?:
                throw ModelError.invalidConfiguration("RoPE scaling '\(other)' is not supported (only linear and llama3)")
            }
            rope = RotaryEmbedding(style: ropeStyle,
                                   dimensions: gguf.metadata["\(arch).rope.dimension_count"]?.intValue ?? headDim,
                                   base: Float(gguf.metadata["\(arch).rope.freq_base"]?.doubleValue ?? 10_000), scale: scale)
            guard let embedding = gguf.tensorInfo("token_embd.weight"), embedding.dimensions.count == 2 else {
                throw ModelError.missingTensor("token_embd.weight")
            }
            vocabularySize = embedding.dimensions[1]
            tiedOutput = gguf.tensorInfo("output.weight") == nil
        } catch let e as ModelError {
            throw e
        } catch let e as GGUFError {
            throw .gguf(e)
        } catch {
            throw .invalidConfiguration("\(error)")
        }
        try validate()
    }

    func validate() throws(ModelError) {
        func check(_ ok: Bool, _ reason: String) throws(ModelError) {
            if !ok { throw .invalidConfiguration(reason) }
        }
        // Activations are quantised in blocks of 32, and attention works in 16-wide vectors.
        try check(blockCount > 0 && blockCount <= 1024, "block_count is \(blockCount)")
        try check(embeddingLength > 0 && embeddingLength % 32 == 0, "embedding_length \(embeddingLength) is not a positive multiple of 32")
        try check(feedForwardLength > 0 && feedForwardLength % 32 == 0, "feed_forward_length \(feedForwardLength) is not a positive multiple of 32")
        try check(headCount > 0 && headCountKV > 0 && headCount % headCountKV == 0,
                  "head_count \(headCount) is not a multiple of head_count_kv \(headCountKV)")
        try check(headDim > 0 && headDim % 16 == 0, "head dimension \(headDim) is not a positive multiple of 16")
        try check(queryDim % 32 == 0, "the attention width \(queryDim) is not a multiple of 32")
        try check(rope.dimensions > 0 && rope.dimensions <= headDim && rope.dimensions % 2 == 0,
                  "rope.dimension_count \(rope.dimensions) does not fit head dimension \(headDim)")
        try check(rope.base > 0, "rope.freq_base is \(rope.base)")
        try check(rmsEpsilon > 0, "layer_norm_rms_epsilon is \(rmsEpsilon)")
        try check(contextLength > 0, "context_length is \(contextLength)")
        try check(vocabularySize > 0, "the vocabulary is empty")
    }
}
