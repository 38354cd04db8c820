import Foundation

/// The buffers of a `DecoderState` that the steps of a forward pass read and write.
enum Activation {
    /// The residual stream.
    case residual
    /// A normalised copy of the residual stream, the input of a block.
    case normed
    /// A block's output, before it joins the residual stream.
    case projection
}

/// The gating of a feed-forward block.
public enum GatedActivation: Sendable {
    /// SwiGLU: `silu(gate) * up` (Llama, Qwen).
    case silu
    /// GeGLU with the tanh GELU (Gemma).
    case geluTanh
}

/// How a pass multiplies activations by float (F32, F16, BF16) weight
/// matrices; quantised ones always go through the integer kernel.
enum MatrixKernel {
    /// Weight tiles against many tokens at once (prompts).
    case tiled
    /// Row by row, each row against every token (decoding): each token's
    /// result is independent of the others in the pass.
    case rows
}

/// The tokens of one forward pass and where each goes: consecutive positions
/// of one sequence (`DecoderModel.forward(_:state:logitRows:mode:)`), or the
/// next position of each of several sequences (`DecoderModel.decode(_:states:batch:)`).
public struct ForwardRows: @unchecked Sendable {
    let buffers: ForwardBuffers
    /// Each row's cache (the same one for every row of one sequence).
    let caches: [KVCache]
    /// Each row's position in its cache.
    let positions: [Int]
    /// Whether the rows are consecutive tokens of one sequence.
    let oneSequence: Bool

    /// Rows in the pass.
    public var count: Int { positions.count }

    /// `count` tokens at the next positions of `state`.
    static func sequence(_ state: DecoderState, count: Int) -> ForwardRows {
        let first = state.cache.length
        precondition(count > 0 && count <= state.batchCapacity && first + count <= state.capacity, "batch does not fit the state")
        return ForwardRows(buffers: state.buffers, caches: Array(repeating: state.cache, count: count),
                           positions: Array(first..<(first + count)), oneSequence: true)
    }

    /// One token at the next position of each of `states`, in `batch`'s buffers.
    static func sequences(_ states: [DecoderState], batch: DecoderBatch, config: ModelConfig) -> ForwardRows {
        precondition(!states.isEmpty && states.count <= batch.capacity, "\(states.count) sequences for a batch of \(batch.capacity)")
        precondition(Set(states.map { ObjectIdentifier($0.cache) }).count == states.count, "a sequence appears twice in one batch")
        for s in states {
            precondition(s.cache.fits(config), "a state of another model")
            precondition(s.length < s.capacity, "a sequence's cache is full")
            precondition(s.capacity <= batch.contextCapacity, "a sequence's cache is longer than the batch's context capacity")
        }
        return ForwardRows(buffers: batch.buffers, caches: states.map(\.cache), positions: states.map(\.length),
                           oneSequence: states.count == 1)
    }
}

/// The steps every architecture's forward pass is made of, over the tokens
/// of one `ForwardRows`. An architecture calls them in its own order; each
/// works on the pass's buffers, one row per token. The last step, `logits`,
/// appends the rows to their caches.
struct ForwardPass {
    let config: ModelConfig
    let pool: ThreadPool
    let s: ForwardBuffers
    let rows: ForwardRows
    let count: Int
    let mode: ForwardMode
    let ropes: [RotaryEmbedding]
    /// The kernel for the batch's float matrix products.
    let kernel: MatrixKernel

    /// Below this many query-key products, attention runs on the calling
    /// thread: waking the pool costs more than the work.
    static let parallelAttentionWork = 4096
    /// From this many logit rows on, prompt mode multiplies a float output matrix tiled.
    static let tiledLogitRows = 3

    init(_ model: some DecoderModel, rows: ForwardRows, mode: ForwardMode) {
        config = model.config
        pool = model.pool
        s = rows.buffers
        self.rows = rows
        count = rows.count
        self.mode = mode
        ropes = model.ropes
        kernel = mode == .prompt ? .tiled : .rows
        precondition(count > 0 && count <= s.rows, "more rows than the buffers hold")
        prepareRopes()
    }

    func buffer(_ a: Activation) -> UnsafeMutablePointer<Float> {
        switch a {
        case .residual: return s.x.pointer
        case .normed: return s.normed.pointer
        case .projection: return s.projection.pointer
        }
    }

    // MARK: Steps

    /// The tokens' embeddings into the residual stream, multiplied by `scale`.
    func embed(_ tokens: UnsafeBufferPointer<Int32>, _ table: WeightMatrix, scale: Float = 1) {
        let d = config.embeddingLength, x = s.x.pointer
        s.weightBytesRead += table.rowBytes * count
        perToken { t in
            Dequantize.row(table.type, table.row(Int(tokens[t])), count: d, into: x + t * d)
            if scale != 1 { VectorOps.scale(x + t * d, by: scale, count: d) }
        }
    }

    /// `into = RMSNorm(from) * weight`, token by token (`from` and `into` may be the same buffer).
    func rmsNorm(_ from: Activation, _ weight: WeightVector, into: Activation) {
        let d = config.embeddingLength, input = buffer(from), output = buffer(into), epsilon = config.rmsEpsilon
        perToken { t in VectorOps.rmsNorm(input + t * d, weight: weight.values, count: d, epsilon: epsilon, into: output + t * d) }
    }

    /// The residual stream plus a block's output.
    func addToResidual(_ from: Activation = .projection) {
        let d = config.embeddingLength, x = s.x.pointer, y = buffer(from)
        perToken { t in VectorOps.add(x + t * d, y + t * d, count: d) }
    }

    /// Self-attention of layer `layer` over the normalised input, into
    /// `.projection`: project to queries, keys and values, add biases and
    /// normalise heads where the weights have them, rotate queries and keys
    /// with RoPE `rope` (an index into the model's `ropes`), store keys and
    /// values in each row's cache, attend with grouped KV heads (each query
    /// sees at most `window` positions, itself included, when a window is
    /// given), and project back.
    func selfAttention(layer l: Int, _ w: AttentionWeights, rope: Int, window: Int? = nil, scale: Float? = nil) {
        let c = config
        let query = s.query.pointer, keys = s.key.pointer, values = s.value.pointer
        project(buffer(.normed), columns: c.embeddingLength, [
            Projection(w.query, query, stride: c.queryDim),
            Projection(w.key, keys, stride: c.kvDim),
            Projection(w.value, values, stride: c.kvDim),
        ])
        perToken { t in
            let q = query + t * c.queryDim, k = keys + t * c.kvDim, v = values + t * c.kvDim
            if let b = w.queryBias { VectorOps.add(q, b.values, count: c.queryDim) }
            if let b = w.keyBias { VectorOps.add(k, b.values, count: c.kvDim) }
            if let b = w.valueBias { VectorOps.add(v, b.values, count: c.kvDim) }
            if let norm = w.queryNorm { normalizeHeads(q, heads: c.headCount, norm) }
            if let norm = w.keyNorm { normalizeHeads(k, heads: c.headCountKV, norm) }
            rotate(q, heads: c.headCount, rope: rope, token: t)
            rotate(k, heads: c.headCountKV, rope: rope, token: t)
            // llama.cpp multiplies the f16 keys by the queries rounded to f16.
            VectorOps.roundToHalves(q, count: c.queryDim)
            rows.caches[t].store(layer: l, position: rows.positions[t], key: k, value: v)
        }
        attend(layer: l, window: window, scale: scale ?? 1 / Float(c.headDim).squareRoot())
        project(s.attention.pointer, columns: c.queryDim, [Projection(w.output, s.projection.pointer, stride: c.embeddingLength)])
    }

    /// One block of a plain pre-norm decoder: normalise, attend, add to the
    /// residual; normalise, feed forward, add to the residual.
    func preNormBlock(layer l: Int, _ w: PreNormLayer, rope: Int, _ activation: GatedActivation) {
        rmsNorm(.residual, w.attentionNorm, into: .normed)
        selfAttention(layer: l, w.attention, rope: rope)
        addToResidual()
        rmsNorm(.residual, w.feedForwardNorm, into: .normed)
        feedForward(w.feedForward, activation)
        addToResidual()
    }

    /// A gated feed-forward block over the normalised input, into `.projection`.
    func feedForward(_ w: FeedForwardWeights, _ activation: GatedActivation) {
        let c = config, ffn = c.feedForwardLength, gate = s.gate.pointer, up = s.up.pointer
        project(buffer(.normed), columns: c.embeddingLength, [
            Projection(w.gate, gate, stride: ffn),
            Projection(w.up, up, stride: ffn),
        ])
        perToken { t in
            switch activation {
            case .silu: VectorOps.siluMultiply(gate + t * ffn, up + t * ffn, count: ffn)
            case .geluTanh: VectorOps.geluTanhMultiply(gate + t * ffn, up + t * ffn, count: ffn)
            }
        }
        project(gate, columns: ffn, [Projection(w.down, s.projection.pointer, stride: c.embeddingLength)])
    }

    /// The last step: appends the rows to their caches, then the final norm and
    /// the output projection for the batch rows `rows` only (soft-capped at
    /// `softCap` when given).
    func logits(rows: Range<Int>, norm: WeightVector, output: WeightMatrix, softCap: Float? = nil) {
        precondition(rows.lowerBound >= 0 && rows.upperBound <= count)
        for (cache, position) in zip(self.rows.caches, self.rows.positions) { cache.length = max(cache.length, position + 1) }
        let n = rows.count, d = config.embeddingLength, vocabulary = config.vocabularySize
        if n == 0 { return }
        let x = s.x.pointer, normed = s.normed.pointer, epsilon = config.rmsEpsilon
        perToken(n) { i in
            VectorOps.rmsNorm(x + (rows.lowerBound + i) * d, weight: norm.values, count: d, epsilon: epsilon, into: normed + i * d)
        }
        // A few rows of logits from a float output matrix are computed row by row,
        // whatever the mode, so that a prompt's next-token logits never depend on
        // how it was batched.
        project(normed, columns: d, tokens: n, kernel: kernel == .tiled && n >= Self.tiledLogitRows ? .tiled : .rows,
                [Projection(output, s.logits.pointer, stride: vocabulary)])
        if let cap = softCap {
            let logits = s.logits.pointer
            perToken(n) { i in VectorOps.softCap(logits + i * vocabulary, cap: cap, count: vocabulary) }
        }
    }

    // MARK: Parts of the steps

    /// Cosines and sines of every angle of every RoPE for the batch's positions.
    private func prepareRopes() {
        for (r, rope) in ropes.enumerated() {
            let half = rope.dimensions / 2
            let cosines = s.ropeCos[r].pointer, sines = s.ropeSin[r].pointer
            for t in 0..<count {
                let p = Double(rows.positions[t]) / Double(rope.scale)
                for i in 0..<half {
                    var theta = p * pow(Double(rope.base), -2.0 * Double(i) / Double(rope.dimensions))
                    if let factors = rope.frequencyFactors { theta /= Double(factors[i]) }
                    cosines[t * half + i] = Float(cos(theta))
                    sines[t * half + i] = Float(sin(theta))
                }
            }
        }
    }

    private func rotate(_ v: UnsafeMutablePointer<Float>, heads: Int, rope r: Int, token t: Int) {
        let rope = ropes[r], half = rope.dimensions / 2
        let cos = UnsafePointer(s.ropeCos[r].pointer + t * half), sin = UnsafePointer(s.ropeSin[r].pointer + t * half)
        switch rope.style {
        case .normal: VectorOps.ropeNormal(v, heads: heads, headDim: config.headDim, ropeDim: rope.dimensions, cos: cos, sin: sin)
        case .neox: VectorOps.ropeNeoX(v, heads: heads, headDim: config.headDim, ropeDim: rope.dimensions, cos: cos, sin: sin)
        }
    }

    /// RMSNorm over each head of `v` in place, with one weight per head dimension.
    private func normalizeHeads(_ v: UnsafeMutablePointer<Float>, heads: Int, _ weight: WeightVector) {
        let hd = config.headDim
        for h in 0..<heads {
            VectorOps.rmsNorm(v + h * hd, weight: weight.values, count: hd, epsilon: config.rmsEpsilon, into: v + h * hd)
        }
    }

    /// Causal grouped-query attention for the rows: query head `h` reads KV
    /// head `h / (heads / kvHeads)`, each row sees its cache up to its own
    /// position (the last `window` of them, when there is a window).
    private func attend(layer l: Int, window: Int?, scale: Float) {
        let c = config, n = count
        let group = c.headCount / c.headCountKV
        let query = s.query.pointer, out = s.attention.pointer
        // A prompt's consecutive queries attend in tiles, as small matrix products;
        // the tiled kernel keeps 64 value dimensions of four queries in registers.
        if kernel == .tiled && rows.oneSequence && c.headDim % 64 == 0 {
            let p0 = rows.positions[0]
            let cache = rows.caches[0]
            let tiles = (n + Attention.queryTile - 1) / Attention.queryTile
            let units = tiles * c.headCount
            pool.run { thread, threads in
                // Interleaved, so that long (late) and short (early) tiles spread evenly.
                var u = thread
                while u < units {
                    let tile = u / c.headCount, h = u % c.headCount
                    let first = tile * Attention.queryTile
                    Attention.attendTile(queries: query + first * c.queryDim + h * c.headDim, queryStride: c.queryDim,
                                         count: min(Attention.queryTile, n - first), firstPosition: p0 + first,
                                         keys: cache.keys(layer: l, head: h / group, position: 0),
                                         values: cache.values(layer: l, head: h / group, position: 0), stride: c.headDim, headDim: c.headDim,
                                         scale: scale, window: window, scratch: s.scores[thread].pointer,
                                         into: out + first * c.queryDim + h * c.headDim, outStride: c.queryDim)
                    u += threads
                }
            }
            return
        }
        // Otherwise row by row, the query heads of each KV head together (in
        // groups of at most `Attention.groupLimit`), reading its keys and values once.
        let groupsPerKV = (group + Attention.groupLimit - 1) / Attention.groupLimit
        let units = n * c.headCountKV * groupsPerKV
        let work = { (thread: Int, threads: Int) in
            var u = thread
            while u < units {
                let t = u / (c.headCountKV * groupsPerKV), rest = u % (c.headCountKV * groupsPerKV)
                let kv = rest / groupsPerKV, firstHead = kv * group + (rest % groupsPerKV) * Attention.groupLimit
                let heads = min(Attention.groupLimit, (kv + 1) * group - firstHead)
                let cache = rows.caches[t], position = rows.positions[t]
                let start = window.map { max(0, position - $0 + 1) } ?? 0
                Attention.attendGroup(queries: query + t * c.queryDim + firstHead * c.headDim, count: heads,
                                      keys: cache.keys(layer: l, head: kv, position: start),
                                      values: cache.values(layer: l, head: kv, position: start),
                                      stride: c.headDim, length: position + 1 - start, headDim: c.headDim, scale: scale,
                                      scores: s.scores[thread].pointer, into: out + t * c.queryDim + firstHead * c.headDim)
                u += threads
            }
        }
        let products = rows.positions.reduce(0) { $0 + $1 + 1 } * c.headCount
        if products < Self.parallelAttentionWork { work(0, 1) } else { pool.run(work) }
    }

    struct Projection {
        let weight: WeightMatrix
        let output: UnsafeMutablePointer<Float>
        let stride: Int
        init(_ weight: WeightMatrix, _ output: UnsafeMutablePointer<Float>, stride: Int) {
            self.weight = weight
            self.output = output
            self.stride = stride
        }
    }

    private func project(_ input: UnsafeMutablePointer<Float>, columns: Int, _ projections: [Projection]) {
        project(input, columns: columns, tokens: count, kernel: kernel, projections)
    }

    /// Multiplies `tokens` activation rows (`columns` apart) by each weight
    /// matrix, all matrices in one parallel pass. Quantised matrices use the
    /// integer kernel on 8-bit activations, whatever the batch: every token
    /// gets the same result alone, batched or in a prompt. Float matrices use
    /// `kernel`.
    private func project(_ input: UnsafeMutablePointer<Float>, columns: Int, tokens n: Int, kernel: MatrixKernel,
                         _ projections: [Projection]) {
        s.weightBytesRead += projections.reduce(0) { $0 + $1.weight.computeBytes }
        let packed = projections.filter { $0.weight.packed != nil }
        let float = projections.filter { $0.weight.packed == nil }
        if !packed.isEmpty {
            // Each format the matrices pair with, once (ggml's vec_dot_type).
            let formats = ActivationFormat.allCases.filter { f in packed.contains { ActivationFormat(pairedWith: $0.weight.type) == f } }
            for format in formats {
                let batch = s.activations(for: format)
                perToken(n) { t in batch.quantize(input + t * columns, count: columns, column: t) }
            }
            let totalGroups = packed.reduce(0) { $0 + $1.weight.packed!.groups }
            pool.run { thread, threads in
                let mine = ThreadPool.split(totalGroups, part: thread, of: threads)
                var first = 0
                for p in packed {
                    let matrix = p.weight.packed!
                    let lo = max(mine.lowerBound - first, 0), hi = min(mine.upperBound - first, matrix.groups)
                    if lo < hi {
                        matrix.multiply(s.activations(for: ActivationFormat(pairedWith: matrix.type)), columns: 0..<n, into: p.output,
                                        stride: p.stride, groups: lo..<hi)
                    }
                    first += matrix.groups
                }
            }
        }
        if !float.isEmpty { projectFloat(input, columns: columns, tokens: n, kernel: kernel, float) }
    }

    /// Float (F32, F16, BF16) matrices: tiled for prompts, row by row for decoding.
    private func projectFloat(_ input: UnsafeMutablePointer<Float>, columns: Int, tokens n: Int, kernel: MatrixKernel,
                              _ projections: [Projection]) {
        if kernel != .tiled {
            let totalRows = projections.reduce(0) { $0 + $1.weight.rows }
            pool.run { thread, threads in
                let mine = ThreadPool.split(totalRows, part: thread, of: threads)
                var first = 0
                for p in projections {
                    let lo = max(mine.lowerBound - first, 0), hi = min(mine.upperBound - first, p.weight.rows)
                    if lo < hi {
                        MatVec.multiply(p.weight, input, stride: columns, columns: n, into: p.output, yStride: p.stride, rows: lo..<hi)
                    }
                    first += p.weight.rows
                }
            }
            return
        }
        let tokenTiles = (n + MatMul.tokenTile - 1) / MatMul.tokenTile
        pool.parallelFor(tokenTiles) { tiles in
            MatMul.pack(input, stride: columns, tokens: n, columns: columns, into: s.packed.pointer, tiles: tiles)
        }
        let totalTiles = projections.reduce(0) { $0 + MatMul.tileCount(rows: $1.weight.rows) }
        pool.run { thread, threads in
            let mine = ThreadPool.split(totalTiles, part: thread, of: threads)
            var first = 0
            for p in projections {
                let tiles = MatMul.tileCount(rows: p.weight.rows)
                let lo = max(mine.lowerBound - first, 0), hi = min(mine.upperBound - first, tiles)
                if lo < hi {
                    MatMul.multiply(p.weight, packed: s.packed.pointer, tokens: n, into: p.output, yStride: p.stride,
                                    tiles: lo..<hi, scratch: s.weightTiles[thread].pointer)
                }
                first += tiles
            }
        }
    }

    /// Runs `body` for every token of the batch, in parallel for larger batches.
    private func perToken(_ n: Int? = nil, _ body: (Int) -> Void) {
        let n = n ?? count
        if n < 4 {
            for t in 0..<n { body(t) }
        } else {
            pool.parallelFor(n) { range in for t in range { body(t) } }
        }
    }
}
