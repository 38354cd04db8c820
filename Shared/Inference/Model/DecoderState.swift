/// Everything one sequence needs across forward passes: the KV cache and the
/// scratch buffers, allocated once. The cache is contiguous per layer,
/// position-major: key `pos` of layer `l` is `kvDim` floats at
/// `keys + (l * capacity + pos) * kvDim`, heads side by side.
public final class DecoderState: @unchecked Sendable {
    public let capacity: Int
    public let batchCapacity: Int
    /// Tokens in the cache.
    public internal(set) var length = 0
    /// Bytes of weights the forward passes on this state have read (matrices
    /// and embedding rows): divided by the tokens of one-token passes, the
    /// weight traffic of decoding.
    public internal(set) var weightBytesRead = 0

    let keys: FloatBuffer
    let values: FloatBuffer
    /// The residual stream, one row per token of the batch.
    let x: FloatBuffer
    /// Normalised input of the next block.
    let normed: FloatBuffer
    let query: FloatBuffer
    let attention: FloatBuffer
    /// A block's output before it joins the residual stream.
    let projection: FloatBuffer
    let gate: FloatBuffer
    let up: FloatBuffer
    let packed: FloatBuffer
    /// Cosines and sines of the batch's RoPE angles, one table per distinct RoPE of the model.
    let ropeCos: [FloatBuffer]
    let ropeSin: [FloatBuffer]
    let logits: FloatBuffer
    /// Per-thread scratch: dequantised weight tiles (float matrices), attention scores.
    let weightTiles: [FloatBuffer]
    /// The batch's activations quantised to 8 bits for the integer kernels.
    let activations: ActivationBatch
    let scores: [FloatBuffer]
    let vocabularySize: Int
    let kvDim: Int

    init(config c: ModelConfig, ropes: [RotaryEmbedding], capacity: Int, batchCapacity: Int, threads: Int) {
        self.capacity = capacity
        self.batchCapacity = batchCapacity
        vocabularySize = c.vocabularySize
        kvDim = c.kvDim
        let b = batchCapacity
        keys = FloatBuffer(count: c.blockCount * capacity * c.kvDim)
        values = FloatBuffer(count: c.blockCount * capacity * c.kvDim)
        x = FloatBuffer(count: b * c.embeddingLength)
        normed = FloatBuffer(count: b * c.embeddingLength)
        query = FloatBuffer(count: b * c.queryDim)
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
        activations = ActivationBatch(capacity: b, width: widest)
        scores = (0..<threads).map { _ in FloatBuffer(count: Attention.tileScratchCount(capacity: capacity, headDim: c.headDim)) }
    }

    /// Forgets the cached sequence.
    public func reset() { length = 0 }

    /// Keeps only the first `count` cached tokens (to reuse a shared prefix).
    public func truncate(to count: Int) { length = min(length, max(0, count)) }

    /// Logits of batch row `row` from the last forward pass.
    public func logits(row: Int) -> UnsafeBufferPointer<Float> {
        UnsafeBufferPointer(start: logits.pointer + row * vocabularySize, count: vocabularySize)
    }

    func keyCache(layer: Int, position: Int) -> UnsafeMutablePointer<Float> {
        keys.pointer + (layer * capacity + position) * kvDim
    }

    func valueCache(layer: Int, position: Int) -> UnsafeMutablePointer<Float> {
        values.pointer + (layer * capacity + position) * kvDim
    }
}
