import Foundation

/// A Llama-family decoder: RMSNorm, RoPE, grouped-query attention over a KV
/// cache, SwiGLU feed-forward, output projection. The weights stay in the
/// memory-mapped GGUF file; one model serves any number of `LlamaState`s
/// (one at a time: the thread pool runs one forward pass at a time).
public final class LlamaModel: @unchecked Sendable {
    public let config: LlamaConfig
    public let weights: LlamaWeights
    public let pool: ThreadPool
    let file: GGUFFile

    /// How a forward pass computes.
    public enum Mode: Sendable {
        /// F32 activations and the tiled kernels for any number of tokens. Each
        /// token's result is the same bit for bit however the tokens are split
        /// into batches, so a cached prompt prefix gives exactly what a fresh
        /// evaluation would.
        case prompt
        /// For generating: a few tokens are multiplied one at a time against
        /// 8-bit quantised activations, as llama.cpp does, which streams each
        /// weight once per token; from `tiledThreshold` tokens on, as `prompt`.
        case decode
    }

    /// From this many tokens on, a `decode` pass uses the tiled kernels.
    public var tiledThreshold = 3

    public init(file: GGUFFile, threads: Int = ThreadPool.availableCores) throws(ModelError) {
        self.file = file
        config = try LlamaConfig(gguf: file)
        weights = try LlamaWeights(gguf: file, config: config)
        pool = ThreadPool(threadCount: threads)
    }

    /// A fresh state with a KV cache for `contextLength` tokens (default: the
    /// model's own context length) and batches of up to `batchSize` tokens.
    public func makeState(contextLength: Int? = nil, batchSize: Int = 512) -> LlamaState {
        let capacity = max(1, min(contextLength ?? config.contextLength, config.contextLength))
        return LlamaState(config: config, capacity: capacity, batchCapacity: max(1, batchSize), threads: pool.threadCount)
    }

    /// Runs `tokens` (at most `state.batchCapacity`, all valid ids) at the next
    /// positions of `state`, appending them to its cache, and computes the
    /// logits of the batch rows `logitRows` into `state.logits(row:)` (row 0 is
    /// the first of `logitRows`).
    public func forward(_ tokens: UnsafeBufferPointer<Int32>, state s: LlamaState, logitRows: Range<Int>, mode: Mode = .prompt) {
        let c = config
        let n = tokens.count
        let tiled = mode == .prompt || n >= tiledThreshold
        let kernel: Kernel = tiled ? .tiled : .eightBit
        let p0 = s.length
        precondition(n > 0 && n <= s.batchCapacity && p0 + n <= s.capacity, "batch does not fit the state")
        precondition(logitRows.lowerBound >= 0 && logitRows.upperBound <= n)
        let d = c.embeddingLength

        // Token embeddings.
        perToken(n) { t in
            Dequantize.row(weights.tokenEmbedding.type, weights.tokenEmbedding.row(Int(tokens[t])), count: d,
                           into: s.x.pointer + t * d)
        }
        prepareRope(state: s, positions: p0..<(p0 + n))

        for (l, layer) in weights.layers.enumerated() {
            // Attention: normalise, project to queries, keys and values (keys and
            // values straight into the cache), rotate, attend, project back.
            perToken(n) { t in
                VectorOps.rmsNorm(s.x.pointer + t * d, weight: layer.attentionNorm.values, count: d,
                                  epsilon: c.rmsEpsilon, into: s.normed.pointer + t * d)
            }
            project(s.normed.pointer, columns: d, tokens: n, state: s, kernel: kernel, [
                Projection(layer.query, s.query.pointer, stride: c.queryDim),
                Projection(layer.key, s.keyCache(layer: l, position: p0), stride: c.kvDim),
                Projection(layer.value, s.valueCache(layer: l, position: p0), stride: c.kvDim),
            ])
            perToken(n) { t in
                rotate(s.query.pointer + t * c.queryDim, heads: c.headCount, state: s, token: t)
                rotate(s.keyCache(layer: l, position: p0 + t), heads: c.headCountKV, state: s, token: t)
            }
            attend(layer: l, tokens: n, state: s, tiled: tiled)
            project(s.attention.pointer, columns: c.queryDim, tokens: n, state: s, kernel: kernel, [
                Projection(layer.attentionOutput, s.projection.pointer, stride: d),
            ])
            perToken(n) { t in VectorOps.add(s.x.pointer + t * d, s.projection.pointer + t * d, count: d) }

            // Feed-forward: normalise, SwiGLU, project down, add to the residual stream.
            perToken(n) { t in
                VectorOps.rmsNorm(s.x.pointer + t * d, weight: layer.feedForwardNorm.values, count: d,
                                  epsilon: c.rmsEpsilon, into: s.normed.pointer + t * d)
            }
            project(s.normed.pointer, columns: d, tokens: n, state: s, kernel: kernel, [
                Projection(layer.gate, s.gate.pointer, stride: c.feedForwardLength),
                Projection(layer.up, s.up.pointer, stride: c.feedForwardLength),
            ])
            perToken(n) { t in
                VectorOps.siluMultiply(s.gate.pointer + t * c.feedForwardLength, s.up.pointer + t * c.feedForwardLength,
                                       count: c.feedForwardLength)
            }
            project(s.gate.pointer, columns: c.feedForwardLength, tokens: n, state: s, kernel: kernel, [
                Projection(layer.down, s.projection.pointer, stride: d),
            ])
            perToken(n) { t in VectorOps.add(s.x.pointer + t * d, s.projection.pointer + t * d, count: d) }
        }
        s.length += n

        // Final norm and output projection, only for the rows whose logits are wanted.
        let rows = logitRows.count
        if rows == 0 { return }
        perToken(rows) { i in
            VectorOps.rmsNorm(s.x.pointer + (logitRows.lowerBound + i) * d, weight: weights.outputNorm.values, count: d,
                              epsilon: c.rmsEpsilon, into: s.normed.pointer + i * d)
        }
        // A few rows of logits are computed row by row in f32, whatever the mode,
        // so that a prompt's next-token logits never depend on how it was batched.
        let outputKernel: Kernel = rows >= tiledThreshold ? .tiled : (mode == .prompt ? .exact : .eightBit)
        project(s.normed.pointer, columns: d, tokens: rows, state: s, kernel: outputKernel, [
            Projection(weights.output, s.logits.pointer, stride: c.vocabularySize),
        ])
    }

    // MARK: Steps

    /// Cosines and sines of every RoPE angle for the batch's positions.
    private func prepareRope(state s: LlamaState, positions: Range<Int>) {
        let half = config.ropeDim / 2
        for (t, pos) in positions.enumerated() {
            let p = Double(pos) / Double(config.ropeScale)
            for i in 0..<half {
                let theta = p * pow(Double(config.ropeBase), -2.0 * Double(i) / Double(config.ropeDim))
                s.ropeCos[t * half + i] = Float(cos(theta))
                s.ropeSin[t * half + i] = Float(sin(theta))
            }
        }
    }

    private func rotate(_ v: UnsafeMutablePointer<Float>, heads: Int, state s: LlamaState, token t: Int) {
        let half = config.ropeDim / 2
        let cos = UnsafePointer(s.ropeCos.pointer + t * half), sin = UnsafePointer(s.ropeSin.pointer + t * half)
        switch config.ropeStyle {
        case .normal: VectorOps.ropeNormal(v, heads: heads, headDim: config.headDim, ropeDim: config.ropeDim, cos: cos, sin: sin)
        case .neox: VectorOps.ropeNeoX(v, heads: heads, headDim: config.headDim, ropeDim: config.ropeDim, cos: cos, sin: sin)
        }
    }

    /// Causal grouped-query attention for the batch: query head `h` reads KV
    /// head `h / (heads / kvHeads)`, token `t` sees positions up to its own.
    private func attend(layer l: Int, tokens n: Int, state s: LlamaState, tiled: Bool) {
        let c = config
        let group = c.headCount / c.headCountKV
        let p0 = s.length
        let scale = 1 / Float(c.headDim).squareRoot()
        let keys = s.keyCache(layer: l, position: 0), values = s.valueCache(layer: l, position: 0)
        if tiled && c.headDim == 64 {
            // Tiles of consecutive queries of one head, as small matrix products.
            let tiles = (n + Attention.queryTile - 1) / Attention.queryTile
            let units = tiles * c.headCount
            pool.run { thread, threads in
                // Interleaved, so that long (late) and short (early) tiles spread evenly.
                var u = thread
                while u < units {
                    let tile = u / c.headCount, h = u % c.headCount
                    let first = tile * Attention.queryTile
                    let kvOffset = (h / group) * c.headDim
                    Attention.attendTile(queries: s.query.pointer + first * c.queryDim + h * c.headDim, queryStride: c.queryDim,
                                         count: min(Attention.queryTile, n - first), firstPosition: p0 + first,
                                         keys: keys + kvOffset, values: values + kvOffset, stride: c.kvDim, headDim: c.headDim,
                                         scale: scale, scratch: s.scores[thread].pointer,
                                         into: s.attention.pointer + first * c.queryDim + h * c.headDim, outStride: c.queryDim)
                    u += threads
                }
            }
            return
        }
        let pairs = n * c.headCount
        let work = { (thread: Int, threads: Int) in
            var i = thread
            while i < pairs {
                let t = i / c.headCount, h = i % c.headCount
                let kvOffset = (h / group) * c.headDim
                Attention.attend(query: s.query.pointer + t * c.queryDim + h * c.headDim,
                                 keys: keys + kvOffset, values: values + kvOffset,
                                 stride: c.kvDim, length: p0 + t + 1, headDim: c.headDim, scale: scale,
                                 scores: s.scores[thread].pointer,
                                 into: s.attention.pointer + t * c.queryDim + h * c.headDim)
                i += threads
            }
        }
        if pairs * (p0 + n) < 4096 { work(0, 1) } else { pool.run(work) }
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

    /// Multiplies `tokens` activation rows (`columns` apart) by each weight
    /// matrix, all matrices in one parallel pass.
    /// How `project` multiplies.
    enum Kernel {
        /// Dequantised weight tiles against f32 activations, many tokens at once.
        case tiled
        /// Row by row against 8-bit quantised activations.
        case eightBit
        /// Row by row, dequantised rows against f32 activations.
        case exact
    }

    private func project(_ input: UnsafeMutablePointer<Float>, columns: Int, tokens n: Int, state s: LlamaState,
                         kernel: Kernel, _ projections: [Projection]) {
        if kernel != .tiled {
            let totalRows = projections.reduce(0) { $0 + $1.weight.rows }
            pool.run { thread, threads in
                let mine = ThreadPool.split(totalRows, part: thread, of: threads)
                let q = s.quantized[thread].vector
                for t in 0..<n {
                    let x = input + t * columns
                    if kernel == .eightBit { MatVec.quantize(x, count: columns, into: q) }
                    var first = 0
                    for p in projections {
                        let lo = max(mine.lowerBound - first, 0), hi = min(mine.upperBound - first, p.weight.rows)
                        if lo < hi {
                            if kernel == .eightBit {
                                MatVec.multiply(p.weight, x, quantized: q, into: p.output + t * p.stride, rows: lo..<hi)
                            } else {
                                MatVec.multiplyExact(p.weight, x, scratch: s.weightTiles[thread].pointer,
                                                     into: p.output + t * p.stride, rows: lo..<hi)
                            }
                        }
                        first += p.weight.rows
                    }
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
                let count = MatMul.tileCount(rows: p.weight.rows)
                let lo = max(mine.lowerBound - first, 0), hi = min(mine.upperBound - first, count)
                if lo < hi {
                    MatMul.multiply(p.weight, packed: s.packed.pointer, tokens: n, into: p.output, yStride: p.stride,
                                    tiles: lo..<hi, scratch: s.weightTiles[thread].pointer)
                }
                first += count
            }
        }
    }

    /// Runs `body` for every token of the batch, in parallel for larger batches.
    private func perToken(_ n: Int, _ body: (Int) -> Void) {
        if n < 4 {
            for t in 0..<n { body(t) }
        } else {
            pool.parallelFor(n) { range in for t in range { body(t) } }
        }
    }
}
