/// Qwen2 and Qwen2.5: Llama's blocks with biases on the query, key and value
/// projections and NeoX (half-split) RoPE.
public final class Qwen2Model: DecoderModel, @unchecked Sendable {
    public static let architectures = ["qwen2"]
    public let config: ModelConfig
    public let pool: ThreadPool
    public let ropes: [RotaryEmbedding]
    let tokenEmbedding: WeightMatrix
    let layers: [Layer]
    let outputNorm: WeightVector
    let output: WeightMatrix

    struct Layer {
        let attentionNorm: WeightVector
        let attention: AttentionWeights
        let feedForwardNorm: WeightVector
        let feedForward: FeedForwardWeights
    }

    public init(file: GGUFFile, threads: Int) throws(ModelError) {
        config = try ModelConfig(gguf: file, architecture: "qwen2", ropeStyle: .neox)
        let load = WeightLoader(file: file, config: config)
        ropes = [config.rope]
        tokenEmbedding = try load.tokenEmbedding()
        var layers: [Layer] = []
        for l in 0..<config.blockCount {
            layers.append(Layer(attentionNorm: try load.norm("attn_norm", layer: l),
                                attention: try load.attention(layer: l, biases: true),
                                feedForwardNorm: try load.norm("ffn_norm", layer: l), feedForward: try load.feedForward(layer: l)))
        }
        self.layers = layers
        outputNorm = try load.norm("output_norm")
        output = try load.output()
        pool = ThreadPool(threadCount: threads)
    }

    public func forward(_ tokens: UnsafeBufferPointer<Int32>, state: DecoderState, logitRows: Range<Int>, mode: ForwardMode) {
        let pass = ForwardPass(self, state: state, count: tokens.count, mode: mode)
        pass.embed(tokens, tokenEmbedding)
        for (l, layer) in layers.enumerated() {
            pass.rmsNorm(.residual, layer.attentionNorm, into: .normed)
            pass.selfAttention(layer: l, layer.attention, rope: 0) // Q, K and V with their biases
            pass.addToResidual()
            pass.rmsNorm(.residual, layer.feedForwardNorm, into: .normed)
            pass.feedForward(layer.feedForward, .silu)
            pass.addToResidual()
        }
        pass.logits(rows: logitRows, norm: outputNorm, output: output)
    }
}
