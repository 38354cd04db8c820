/// A vector of weights (a norm's scale, a bias): the f32 values in place in
/// the file, or a converted copy when the file stores them in another type.
public struct WeightVector: @unchecked Sendable {
    public let values: UnsafePointer<Float>
    public let count: Int
    private let storage: FloatBuffer?

    init(gguf: GGUFFile, name: String, length: Int) throws(ModelError) {
        guard let info = gguf.tensorInfo(name) else { throw .missingTensor(name) }
        guard info.elementCount == length else { throw .wrongShape(tensor: name, expected: [length], found: info.dimensions) }
        guard info.type.isComputable else { throw .unsupportedTensorType(tensor: name, type: info.type) }
        let data = gguf.data(of: info)
        count = length
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

/// The weights of one self-attention block: the four projections, and what
/// some architectures add (biases on Q, K and V; an RMSNorm over each head of
/// Q and of K).
public struct AttentionWeights: Sendable {
    public let query: WeightMatrix
    public let key: WeightMatrix
    public let value: WeightMatrix
    public let output: WeightMatrix
    public let queryBias: WeightVector?
    public let keyBias: WeightVector?
    public let valueBias: WeightVector?
    public let queryNorm: WeightVector?
    public let keyNorm: WeightVector?
}

/// The weights of a gated feed-forward block: `down(act(gate x) * up x)`.
public struct FeedForwardWeights: Sendable {
    public let gate: WeightMatrix
    public let up: WeightMatrix
    public let down: WeightMatrix
}

/// One block of a plain pre-norm decoder (Llama, Qwen2, Qwen3): RMSNorm, then
/// attention, then RMSNorm, then the feed-forward, each added to the residual.
public struct PreNormLayer: Sendable {
    public let attentionNorm: WeightVector
    public let attention: AttentionWeights
    public let feedForwardNorm: WeightVector
    public let feedForward: FeedForwardWeights
}

/// Reads tensors by their llama.cpp names, checking shape and type.
public struct WeightLoader {
    public let file: GGUFFile
    public let config: ModelConfig

    public init(file: GGUFFile, config: ModelConfig) {
        self.file = file
        self.config = config
    }

    /// A matrix of `rows` rows of `columns` values (GGUF lists them as [columns, rows]),
    /// repacked for the kernels unless it is only `lookedUp` row by row.
    public func matrix(_ name: String, rows: Int, columns: Int, lookedUp: Bool = false) throws(ModelError) -> WeightMatrix {
        guard let info = file.tensorInfo(name) else { throw .missingTensor(name) }
        guard info.dimensions == [columns, rows] else {
            throw .wrongShape(tensor: name, expected: [columns, rows], found: info.dimensions)
        }
        guard info.type.isComputable else { throw .unsupportedTensorType(tensor: name, type: info.type) }
        let inPlace = WeightMatrix(name: name, type: info.type, rows: rows, columns: columns, data: file.data(of: info))
        if lookedUp { return inPlace }
        // The kernels read the packed copy; the file's pages are given back as
        // they are repacked (so a large matrix and its copy are never both
        // resident), and read again only for a row lookup.
        var discarded = 0
        let matrix = inPlace.packing { read in
            if read - discarded >= 1 << 20 {
                file.discard(info, bytes: discarded..<read)
                discarded = read
            }
        }
        if matrix.packed != nil { file.discard(info) }
        return matrix
    }

    public func vector(_ name: String, length: Int) throws(ModelError) -> WeightVector {
        try WeightVector(gguf: file, name: name, length: length)
    }

    public func has(_ name: String) -> Bool { file.tensorInfo(name) != nil }

    /// The token embedding, for looking up rows: used in place in the file, not repacked.
    public func tokenEmbedding() throws(ModelError) -> WeightMatrix {
        try matrix("token_embd.weight", rows: config.vocabularySize, columns: config.embeddingLength, lookedUp: true)
    }

    /// `output.weight`, or the token embedding when the model ties them, repacked for the kernels.
    public func output() throws(ModelError) -> WeightMatrix {
        try matrix(config.tiedOutput ? "token_embd.weight" : "output.weight", rows: config.vocabularySize, columns: config.embeddingLength)
    }

    /// Norm weights of the model's width, `blk.<layer>.<name>.weight` (or `<name>.weight` for no layer).
    public func norm(_ name: String, layer: Int? = nil) throws(ModelError) -> WeightVector {
        try vector(layer.map { "blk.\($0).\(name).weight" } ?? "\(name).weight", length: config.embeddingLength)
    }

    /// Layer `layer`'s attention; `biases` and `headNorms` say which of the
    /// optional tensors the architecture has.
    public func attention(layer: Int, biases: Bool = false, headNorms: Bool = false) throws(ModelError) -> AttentionWeights {
        let c = config, p = "blk.\(layer)."
        func bias(_ name: String, _ length: Int) throws(ModelError) -> WeightVector? {
            biases ? try vector(p + name + ".bias", length: length) : nil
        }
        return AttentionWeights(
            query: try matrix(p + "attn_q.weight", rows: c.queryDim, columns: c.embeddingLength),
            key: try matrix(p + "attn_k.weight", rows: c.kvDim, columns: c.embeddingLength),
            value: try matrix(p + "attn_v.weight", rows: c.kvDim, columns: c.embeddingLength),
            output: try matrix(p + "attn_output.weight", rows: c.embeddingLength, columns: c.queryDim),
            queryBias: try bias("attn_q", c.queryDim), keyBias: try bias("attn_k", c.kvDim), valueBias: try bias("attn_v", c.kvDim),
            queryNorm: headNorms ? try vector(p + "attn_q_norm.weight", length: c.headDim) : nil,
            keyNorm: headNorms ? try vector(p + "attn_k_norm.weight", length: c.headDim) : nil)
    }

    /// Every block of a plain pre-norm decoder, with the attention's optional tensors as `attention(layer:)` takes them.
    public func preNormLayers(biases: Bool = false, headNorms: Bool = false) throws(ModelError) -> [PreNormLayer] {
        var layers: [PreNormLayer] = []
        for l in 0..<config.blockCount {
            layers.append(PreNormLayer(attentionNorm: try norm("attn_norm", layer: l),
                                       attention: try attention(layer: l, biases: biases, headNorms: headNorms),
                                       feedForwardNorm: try norm("ffn_norm", layer: l), feedForward: try feedForward(layer: l)))
        }
        return layers
    }

    public func feedForward(layer: Int) throws(ModelError) -> FeedForwardWeights {
        let c = config, p = "blk.\(layer)."
        return FeedForwardWeights(
            gate: try matrix(p + "ffn_gate.weight", rows: c.feedForwardLength, columns: c.embeddingLength),
            up: try matrix(p + "ffn_up.weight", rows: c.feedForwardLength, columns: c.embeddingLength),
            down: try matrix(p + "ffn_down.weight", rows: c.embeddingLength, columns: c.feedForwardLength))
    }
}
