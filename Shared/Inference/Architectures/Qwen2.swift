/// Qwen2 and Qwen2.5: Llama's pre-norm blocks with biases on the query, key
/// and value projections, and NeoX (half-split) RoPE.
public final class Qwen2Model: DecoderModel, @unchecked Sendable {
    public static let architectures = ["qwen2"]
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
        config = try ModelConfig(gguf: file, architecture: "qwen2", ropeStyle: .neox)
        let load = WeightLoader(file: file, config: config)
        ropes = [config.rope]
        tokenEmbedding = try load.tokenEmbedding()
        layers = try load.preNormLayers(biases: true)
        outputNorm = try load.norm("output_norm")
        output = try load.output()
        pool = ThreadPool(threadCount: threads)
    }

    public func forward(_ tokens: UnsafeBufferPointer<Int32>, rows: ForwardRows, logitRows: Range<Int>, mode: ForwardMode) {
        let pass = ForwardPass(self, rows: rows, mode: mode)
        pass.embed(tokens, tokenEmbedding)
        for (l, layer) in layers.enumerated() {
            pass.preNormBlock(layer: l, layer, rope: 0, .silu) // Q, K and V with their biases
        }
        pass.logits(rows: logitRows, norm: outputNorm, output: output)
    }
}
