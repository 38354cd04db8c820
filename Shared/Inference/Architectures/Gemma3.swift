/// Gemma 3 (text): token embeddings scaled by sqrt(width); each block
/// normalises before and after both attention and the feed-forward (the
/// converter has already added Gemma's "1 +" to every norm weight); queries
/// and keys are normalised per head; the feed-forward is GeGLU with the tanh
/// GELU. Most layers are local: they attend to the last `sliding_window`
/// positions and use RoPE base `rope.freq_base_swa` (10000); every
/// `sliding_window_pattern`-th (6th) layer is global, with the file's RoPE.
public final class Gemma3Model: DecoderModel, @unchecked Sendable {
    public static let architectures = ["gemma3"]
    public let config: ModelConfig
    public let pool: ThreadPool
    public let ropes: [RotaryEmbedding]
    /// The mapped file the weights point into, open as long as the model is.
    let file: GGUFFile
    let tokenEmbedding: WeightMatrix
    let layers: [Layer]
    let outputNorm: WeightVector
    let output: WeightMatrix
    /// Positions a local layer attends to (nil: every layer is global).
    let slidingWindow: Int?
    let attentionScale: Float
    let softCap: Float?

    struct Layer {
        let attentionNorm: WeightVector
        let attention: AttentionWeights
        let postAttentionNorm: WeightVector
        let feedForwardNorm: WeightVector
        let feedForward: FeedForwardWeights
        let postFeedForwardNorm: WeightVector
        let isLocal: Bool
    }

    static let globalRope = 0, localRope = 1

    public init(file: GGUFFile, threads: Int) throws(ModelError) {
        self.file = file
        let arch = "gemma3"
        config = try ModelConfig(gguf: file, architecture: arch, ropeStyle: .neox)
        let load = WeightLoader(file: file, config: config)
        let window = file.metadata["\(arch).attention.sliding_window"]?.intValue ?? 0
        slidingWindow = window > 0 ? window : nil
        let pattern = file.metadata["\(arch).attention.sliding_window_pattern"]?.intValue ?? 6
        guard pattern > 0 else { throw .invalidConfiguration("attention.sliding_window_pattern is \(pattern)") }
        var local = config.rope
        local.base = Float(file.metadata["\(arch).rope.freq_base_swa"]?.doubleValue ?? 10_000)
        local.scale = 1
        ropes = [config.rope, local]
        // Gemma 3 27B scales queries by its width per head rather than its head width (as llama.cpp does).
        attentionScale = 1 / Float(config.blockCount == 62 ? config.embeddingLength / config.headCount : config.headDim).squareRoot()
        let cap = file.metadata["\(arch).final_logit_softcapping"]?.doubleValue ?? 0
        softCap = cap > 0 ? Float(cap) : nil
        tokenEmbedding = try load.tokenEmbedding()
        var layers: [Layer] = []
        for l in 0..<config.blockCount {
            layers.append(Layer(attentionNorm: try load.norm("attn_norm", layer: l),
                                attention: try load.attention(layer: l, headNorms: true),
                                postAttentionNorm: try load.norm("post_attention_norm", layer: l),
                                feedForwardNorm: try load.norm("ffn_norm", layer: l),
                                feedForward: try load.feedForward(layer: l),
                                postFeedForwardNorm: try load.norm("post_ffw_norm", layer: l),
                                isLocal: slidingWindow != nil && l % pattern < pattern - 1))
        }
        self.layers = layers
        outputNorm = try load.norm("output_norm")
        output = try load.output()
        pool = ThreadPool(threadCount: threads)
    }

    public func forward(_ tokens: UnsafeBufferPointer<Int32>, rows: ForwardRows, logitRows: Range<Int>, mode: ForwardMode) {
        let pass = ForwardPass(self, rows: rows, mode: mode)
        pass.embed(tokens, tokenEmbedding, scale: Float(config.embeddingLength).squareRoot())
        for (l, layer) in layers.enumerated() {
            pass.rmsNorm(.residual, layer.attentionNorm, into: .normed)
            pass.selfAttention(layer: l, layer.attention, rope: layer.isLocal ? Self.localRope : Self.globalRope,
                               window: layer.isLocal ? slidingWindow : nil, scale: attentionScale)
            pass.rmsNorm(.projection, layer.postAttentionNorm, into: .projection)
            pass.addToResidual()
            pass.rmsNorm(.residual, layer.feedForwardNorm, into: .normed)
            pass.feedForward(layer.feedForward, .geluTanh)
            pass.rmsNorm(.projection, layer.postFeedForwardNorm, into: .projection)
            pass.addToResidual()
        }
        pass.logits(rows: logitRows, norm: outputNorm, output: output, softCap: softCap)
    }
}
