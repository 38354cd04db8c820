/// Everything one sequence needs across forward passes: its KV cache and
/// scratch buffers for batches of up to `batchCapacity` of its tokens,
/// allocated once.
public final class DecoderState: @unchecked Sendable {
    public let cache: KVCache
    let buffers: ForwardBuffers

    init(config: ModelConfig, ropes: [RotaryEmbedding], capacity: Int, batchCapacity: Int, threads: Int) {
        cache = KVCache(config: config, capacity: capacity)
        buffers = ForwardBuffers(config: config, ropes: ropes, rows: batchCapacity, contextCapacity: capacity, threads: threads)
    }

    /// A state with its own cache on another state's scratch buffers: for
    /// sequences that one thread runs one pass at a time.
    init(config: ModelConfig, capacity: Int, sharing other: DecoderState) {
        precondition(capacity <= other.buffers.contextCapacity, "a cache longer than the shared buffers' context")
        cache = KVCache(config: config, capacity: capacity)
        buffers = other.buffers
    }

    public var capacity: Int { cache.capacity }
    public var batchCapacity: Int { buffers.rows }
    /// Tokens in the cache.
    public var length: Int { cache.length }
    /// Bytes of weights the forward passes on this state's buffers have read
    /// (matrices and embedding rows): divided by the tokens of one-token
    /// passes, the weight traffic of decoding.
    public var weightBytesRead: Int { buffers.weightBytesRead }

    /// Forgets the cached sequence.
    public func reset() { cache.length = 0 }

    /// Keeps only the first `count` cached tokens (to reuse a shared prefix).
    public func truncate(to count: Int) { cache.length = min(cache.length, max(0, count)) }

    /// Logits of batch row `row` from the last forward pass on this state.
    public func logits(row: Int) -> UnsafeBufferPointer<Float> { buffers.logits(row: row) }
}

/// Scratch for decoding up to `capacity` sequences together, one token each
/// per pass (`DecoderModel.decode(_:states:batch:)`): one read of the weights
/// serves every sequence. The sequences' caches stay in their own states.
public final class DecoderBatch: @unchecked Sendable {
    let buffers: ForwardBuffers

    init(config: ModelConfig, ropes: [RotaryEmbedding], sequences: Int, contextCapacity: Int, threads: Int) {
        buffers = ForwardBuffers(config: config, ropes: ropes, rows: sequences, contextCapacity: contextCapacity, threads: threads)
    }

    /// Sequences one pass can decode.
    public var capacity: Int { buffers.rows }
    /// The longest cache (in tokens) of a sequence this batch can decode.
    public var contextCapacity: Int { buffers.contextCapacity }
    /// Bytes of weights the passes on this batch have read.
    public var weightBytesRead: Int { buffers.weightBytesRead }

    /// Next-token logits of the sequence in row `row` of the last pass.
    public func logits(row: Int) -> UnsafeBufferPointer<Float> { buffers.logits(row: row) }
}
