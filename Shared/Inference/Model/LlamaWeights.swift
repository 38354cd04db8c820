/// A vector of norm weights: the f32 values in place in the file, or a
/// converted copy when the file stores them in another type.
public struct NormWeight: @unchecked Sendable {
    public let values: UnsafePointer<Float>
    private let storage: FloatBuffer?

    init(gguf: GGUFFile, name: String, length: Int) throws(ModelError) {
        guard let info = gguf.tensorInfo(name) else { throw .missingTensor(name) }
        guard info.elementCount == length else { throw .wrongShape(tensor: name, expected: [length], found: info.dimensions) }
        guard info.type.isComputable else { throw .unsupportedTensorType(tensor: name, type: info.type) }
        let data = gguf.data(of: info)
        if info.type == .f32 && Int(bitPattern: data) % 4 == 0 {
            values = data.assumingMemoryBound(to: Float.self)
            storage = nil
        } else {
            let buffer = FloatBuffer(count: length)
            Dequantize.reference(info.type, data, count: length, into: buffer.pointer)
            values = UnsafePointer(buffer.pointer)
            storage = buffer
        }
    }
}

/// One transformer block's weights.
public struct LlamaLayer: Sendable {
    public let attentionNorm: NormWeight
    public let query: WeightMatrix
    public let key: WeightMatrix
    public let value: WeightMatrix
    public let attentionOutput: WeightMatrix
    public let feedForwardNorm: NormWeight
    public let gate: WeightMatrix
    public let up: WeightMatrix
    public let down: WeightMatrix
}

/// All weights of a Llama-family model, in place in the memory-mapped file.
public struct LlamaWeights: Sendable {
    public let tokenEmbedding: WeightMatrix
    public let layers: [LlamaLayer]
    public let outputNorm: NormWeight
    /// The output projection; the token embedding itself when the model ties them.
    public let output: WeightMatrix

    public init(gguf: GGUFFile, config c: LlamaConfig) throws(ModelError) {
        tokenEmbedding = try Self.matrix(gguf, "token_embd.weight", rows: c.vocabularySize, columns: c.embeddingLength)
        var layers: [LlamaLayer] = []
        for i in 0..<c.blockCount {
            let p = "blk.\(i)."
            layers.append(LlamaLayer(
                attentionNorm: try NormWeight(gguf: gguf, name: p + "attn_norm.weight", length: c.embeddingLength),
                query: try Self.matrix(gguf, p + "attn_q.weight", rows: c.queryDim, columns: c.embeddingLength),
                key: try Self.matrix(gguf, p + "attn_k.weight", rows: c.kvDim, columns: c.embeddingLength),
                value: try Self.matrix(gguf, p + "attn_v.weight", rows: c.kvDim, columns: c.embeddingLength),
                attentionOutput: try Self.matrix(gguf, p + "attn_output.weight", rows: c.embeddingLength, columns: c.queryDim),
                feedForwardNorm: try NormWeight(gguf: gguf, name: p + "ffn_norm.weight", length: c.embeddingLength),
                gate: try Self.matrix(gguf, p + "ffn_gate.weight", rows: c.feedForwardLength, columns: c.embeddingLength),
                up: try Self.matrix(gguf, p + "ffn_up.weight", rows: c.feedForwardLength, columns: c.embeddingLength),
                down: try Self.matrix(gguf, p + "ffn_down.weight", rows: c.embeddingLength, columns: c.feedForwardLength)))
        }
        self.layers = layers
        outputNorm = try NormWeight(gguf: gguf, name: "output_norm.weight", length: c.embeddingLength)
        output = c.tiedOutput ? tokenEmbedding
            : try Self.matrix(gguf, "output.weight", rows: c.vocabularySize, columns: c.embeddingLength)
    }

    static func matrix(_ gguf: GGUFFile, _ name: String, rows: Int, columns: Int) throws(ModelError) -> WeightMatrix {
        guard let info = gguf.tensorInfo(name) else { throw .missingTensor(name) }
        guard info.dimensions == [columns, rows] else {
            throw .wrongShape(tensor: name, expected: [columns, rows], found: info.dimensions)
        }
        guard info.type.isComputable else { throw .unsupportedTensorType(tensor: name, type: info.type) }
        return WeightMatrix(name: name, type: info.type, rows: rows, columns: columns, data: gguf.data(of: info))
    }
}
