/// The scratch of a forward pass over up to `rows` tokens: activations, one
/// row per token, and per-thread working space. Allocated once, reused by
/// every pass.
final class ForwardBuffers: @unchecked Sendable {
    let rows: Int
    /// The longest cache a pass on these buffers may attend over.
    let contextCapacity: Int
    /// Bytes of weights the passes on these buffers have read (matrices and
    /// embedding rows).
    var weightBytesRead = 0

    /// The residual stream.
    let x: FloatBuffer
    /// Normalised input of the next block.
    let normed: FloatBuffer
    let query: FloatBuffer
    /// The batch's keys and values, before they go into each row's cache.
    let key: FloatBuffer
    let value: FloatBuffer
    let attention: FloatBuffer
    /// A block's output before it joins the residual stream.
    let projection: FloatBuffer
    let gate: FloatBuffer
    let up: FloatBuffer
    /// Activations laid out for the tiled float kernel.
    let packed: FloatBuffer
    /// Cosines and sines of the rows' RoPE angles, one table per distinct RoPE of the model.
    let ropeCos: [FloatBuffer]
    let ropeSin: [FloatBuffer]
    let logits: FloatBuffer
    let vocabularySize: Int
    /// Per-thread scratch: dequantised weight tiles (float matrices), attention scores.
    let weightTiles: [FloatBuffer]
    let scores: [FloatBuffer]
    /// The rows' activations quantised to 8 bits for the integer kernels, in
    /// each format a weight type pairs with (Q8_0 for the 32-value types,
    /// Q8_K for the K-quants).
    let activations: ActivationBatch
    let superActivations: ActivationBatch

    func activations(for format: ActivationFormat) -> ActivationBatch {
        format == .q8_K ? superActivations : activations
    }

    init(config c: ModelConfig, ropes: [RotaryEmbedding], rows: Int, contextCapacity: Int, threads: Int) {
        let b = max(1, rows)
        self.rows = b
        self.contextCapacity = contextCapacity
        vocabularySize = c.vocabularySize
        x = FloatBuffer(count: b * c.embeddingLength)
        normed = FloatBuffer(count: b * c.embeddingLength)
        query = FloatBuffer(count: b * c.queryDim)
        key = FloatBuffer(count: b * c.kvDim)
        value = FloatBuffer(count: b * c.kvDim)
        attention = FloatBuffer(count: b * c.queryDim)
        projection = FloatBuffer(count: b * c.embeddingLength)
        gate = FloatBuffer(count: b * c.feedForwardLength)
        up = FloatBuffer(count: b * c.feedForwardLength)
        let widest = max(c.embeddingLength, c.feedForwardLength, c.queryDim)
        packed = FloatBuffer(count: MatMul.packedCount(tokens: b, columns: widest))
        ropeCos = ropes.map { FloatBuffer(count: b * $0.dimensions / 2) }
        ropeSin = ropes.map { FloatBuffer(count: b * $0.dimensions / 2) }
        logits = FloatBuffer(count: b * c.vocabularySize)
        weightTiles = (0..<threads).map { _ in FloatBuffer(count: MatMul.scratchCount(columns: widest)) }
        scores = (0..<threads).map { _ in FloatBuffer(count: Attention.tileScratchCount(capacity: contextCapacity, headDim: c.headDim)) }
        activations = ActivationBatch(capacity: b, width: widest, format: .q8_0)
        superActivations = ActivationBatch(capacity: b, width: widest, format: .q8_K)
    }

    func logits(row: Int) -> UnsafeBufferPointer<Float> {
        UnsafeBufferPointer(start: logits.pointer + row * vocabularySize, count: vocabularySize)
    }
}
