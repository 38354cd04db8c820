/// Llama (1, 2 and 3.x, SmolLM2, Mistral-style files): pre-norm blocks of
/// RMSNorm, grouped-query attention with "normal" (adjacent-pair) RoPE, and a
/// SwiGLU feed-forward. Llama 3's RoPE scaling is the `rope_freqs` tensor of
/// per-frequency divisors, used when the file has it.
public final class LlamaModel: DecoderModel, @unchecked Sendable {
    public static let architectures = ["llama"]
    public let config: ModelConfig
    public let pool: ThreadPool
    public let ropes: [RotaryEmbedding]
    /// The mapped file the weights point into, open as long as the model is.
    let file: GGUFFile
    let tokenEmbedding: WeightMatrix
    let layers: [PreNormLayer]
    let outputNorm: WeightVector
    let output: WeightMatrix

    public init(file: GGUFFile, threads: Int) throws(ModelError) {
        self.file = file
        config = try ModelConfig(gguf: file, architecture: "llama", ropeStyle: .normal)
        let load = WeightLoader(file: file, config: config)
        var rope = config.rope
        if load.has("rope_freqs.weight") {
            let factors = try load.vector("rope_freqs.weight", length: rope.dimensions / 2)
            rope.frequencyFactors = Array(UnsafeBufferPointer(start: factors.values, count: factors.count))
        }
        ropes = [rope]
        tokenEmbedding = try load.tokenEmbedding()
        layers = try load.preNormLayers()
        outputNorm = try load.norm("output_norm")
        output = try load.output()
        pool = ThreadPool(threadCount: threads)
    }

    public func forward(_ tokens: UnsafeBufferPointer<Int32>, rows: ForwardRows, logitRows: Range<Int>, mode: ForwardMode) {
        let pass = ForwardPass(self, rows: rows, mode: mode)
        pass.embed(tokens, tokenEmbedding)
        for (l, layer) in layers.enumerated() {
            pass.preNormBlock(layer: l, layer, rope: 0, .silu)
        }
        pass.logits(rows: logitRows, norm: outputNorm, output: output)
    }
}
