/// Qwen3 (dense): Llama's pre-norm blocks without biases, an RMSNorm over
/// each head of the queries and of the keys before RoPE (NeoX pairing), and a
/// head width of its own (`attention.key_length`), so the attention may be
/// wider than the model.
public final class Qwen3Model: DecoderModel, @unchecked Sendable {
    public static let architectures = ["qwen3"]
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
        config = try ModelConfig(gguf: file, architecture: "qwen3", ropeStyle: .neox)
        let load = WeightLoader(file: file, config: config)
        ropes = [config.rope]
        tokenEmbedding = try load.tokenEmbedding()
        layers = try load.preNormLayers(headNorms: true)
        outputNorm = try load.norm("output_norm")
        output = try load.output()
        pool = ThreadPool(threadCount: threads)
    }

    public func forward(_ tokens: UnsafeBufferPointer<Int32>, rows: ForwardRows, logitRows: Range<Int>, mode: ForwardMode) {
        let pass = ForwardPass(self, rows: rows, mode: mode)
        pass.embed(tokens, tokenEmbedding)
        for (l, layer) in layers.enumerated() {
            pass.preNormBlock(layer: l, layer, rope: 0, .silu) // Q and K normalised per head, then rotated
        }
        pass.logits(rows: logitRows, norm: outputNorm, output: output)
    }
}
