// The kernels' entry points: each calls the kernels chosen for this CPU
// (`KernelSelection.table`).
import Kernels

extension MatVec {
    /// `y[r] = w[r] . x` for `r` in `rows`.
    public static func multiply(_ w: WeightMatrix, _ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, rows: Range<Int>) {
        KernelSelection.table.matVec(w, x, w.columns, 1, y, 0, rows)
    }

    /// `y[c * yStride + r] = w[r] . x[c * stride ...]` for `r` in `rows` and
    /// `c` in `0 ..< columns`: each weight row is read once for every four
    /// activation columns. A column's result is the same whatever the number
    /// of columns beside it.
    public static func multiply(_ w: WeightMatrix, _ x: UnsafePointer<Float>, stride: Int, columns: Int,
                                into y: UnsafeMutablePointer<Float>, yStride: Int, rows: Range<Int>) {
        KernelSelection.table.matVec(w, x, stride, columns, y, yStride, rows)
    }
}

extension MatMul {
    /// Packs token tiles `tiles` of `x` (row `t` at `x + t * stride`), padding with zeros.
    public static func pack(_ x: UnsafePointer<Float>, stride: Int, tokens: Int, columns: Int,
                            into packed: UnsafeMutablePointer<Float>, tiles: Range<Int>) {
        KernelSelection.table.matMulPack(x, stride, tokens, columns, packed, tiles)
    }

    /// `y[t * yStride + r] = w[r] . x[t]` for every token and for the row tiles
    /// `tiles` (tile i covers rows `i * rowTile ..< (i + 1) * rowTile`).
    /// `scratch` holds `scratchCount(columns: w.columns)` floats.
    public static func multiply(_ w: WeightMatrix, packed: UnsafePointer<Float>, tokens: Int,
                                into y: UnsafeMutablePointer<Float>, yStride: Int,
                                tiles: Range<Int>, scratch: UnsafeMutablePointer<Float>) {
        KernelSelection.table.matMul(w, packed, tokens, y, yStride, tiles, scratch)
    }
}

extension Attention {
    /// `out = softmax(q . K[j] * scale for j < length) . V` for one query over
    /// f32 keys and values (`stride` apart); `scores` holds `length` floats.
    public static func attend(query q: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                              stride: Int, length: Int, headDim: Int, scale: Float,
                              scores: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        KernelSelection.table.attend(q, keys, values, stride, length, headDim, scale, scores, out)
    }

    /// Decoding: the `count` query heads (at most `groupLimit`, `headDim`
    /// apart from `queries`) that share one KV head, each over the same
    /// `length` cached keys and values (key and value `j` at `keys + j * stride`
    /// and `values + j * stride`): `out_i = softmax(q_i . K * scale) . V`, at
    /// `out + i * headDim`. Every key and value is read once for the group.
    /// `headDim` is a multiple of 16; `scores` holds `count * length` floats.
    /// A query's result depends only on its own inputs, not on the others in
    /// the group.
    public static func attendGroup(queries q: UnsafePointer<Float>, count: Int, keys: UnsafePointer<Float16>,
                                   values: UnsafePointer<Float16>, stride: Int, length: Int, headDim: Int, scale: Float,
                                   scores: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        KernelSelection.table.attendGroup(q, count, keys, values, stride, length, headDim, scale, scores, out)
    }

    /// Causal attention for up to 32 consecutive queries of one head at once,
    /// as two small matrix products: scores = Q . K^T, then
    /// out = softmax(scores) . V. Query `i` sits at position `firstPosition + i`
    /// and sees the keys from `max(0, position - window + 1)` (0 without a
    /// window) to its own position. `headDim` must be a multiple of 64;
    /// `scratch` holds `tileScratchCount` floats.
    public static func attendTile(queries q: UnsafePointer<Float>, queryStride: Int, count: Int, firstPosition: Int,
                                  keys: UnsafePointer<Float16>, values: UnsafePointer<Float16>, stride: Int,
                                  headDim: Int, scale: Float, window: Int? = nil, scratch: UnsafeMutablePointer<Float>,
                                  into out: UnsafeMutablePointer<Float>, outStride: Int) {
        KernelSelection.table.attendTile(q, queryStride, count, firstPosition, keys, values, stride, headDim, scale, window, scratch, out, outStride)
    }
}

extension VectorOps {
    /// `out = x / sqrt(mean(x^2) + eps) * weight`.
    public static func rmsNorm(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, count n: Int, epsilon: Float,
                               into out: UnsafeMutablePointer<Float>) {
        KernelSelection.table.rmsNorm(x, weight, n, epsilon, out)
    }
    /// `x += y`.
    public static func add(_ x: UnsafeMutablePointer<Float>, _ y: UnsafePointer<Float>, count n: Int) { KernelSelection.table.add(x, y, n) }
    /// `gate = silu(gate) * up`, SwiGLU's gating.
    public static func siluMultiply(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count n: Int) {
        KernelSelection.table.siluMultiply(gate, up, n)
    }
    /// `gate = gelu(gate) * up` with the tanh form of GELU (GeGLU, Gemma's gating).
    public static func geluTanhMultiply(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count n: Int) {
        KernelSelection.table.geluTanhMultiply(gate, up, n)
    }
    /// `x *= factor`.
    public static func scale(_ x: UnsafeMutablePointer<Float>, by factor: Float, count n: Int) { KernelSelection.table.scale(x, factor, n) }
    /// `x = cap * tanh(x / cap)`: logit soft-capping.
    public static func softCap(_ x: UnsafeMutablePointer<Float>, cap: Float, count n: Int) { KernelSelection.table.softCap(x, cap, n) }
    /// Softmax in place over `n` values.
    public static func softmax(_ x: UnsafeMutablePointer<Float>, count n: Int) { KernelSelection.table.softmax(x, n) }
    /// `x = (x - mean) / sqrt(variance + eps) * weight + bias` (BERT's LayerNorm).
    public static func layerNorm(_ x: UnsafeMutablePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                                 count n: Int, epsilon: Float) {
        KernelSelection.table.layerNorm(x, weight, bias, n, epsilon)
    }
    /// GELU with the exact error function, in place; `count` is a multiple of 16.
    public static func gelu(_ x: UnsafeMutablePointer<Float>, count n: Int) { KernelSelection.table.gelu(x, n) }
    /// Each value rounded to f16 and back, in place.
    public static func roundToHalves(_ x: UnsafeMutablePointer<Float>, count n: Int) { KernelSelection.table.roundToHalves(x, n) }
    /// llama.cpp's "normal" RoPE (pairs `(v[2i], v[2i+1])`), for `llama` models.
    public static func ropeNormal(_ v: UnsafeMutablePointer<Float>, heads: Int, headDim: Int, ropeDim: Int,
                                  cos: UnsafePointer<Float>, sin: UnsafePointer<Float>) {
        KernelSelection.table.ropeNormal(v, heads, headDim, ropeDim, cos, sin)
    }
    /// The "NeoX" RoPE (pairs `(v[i], v[i + ropeDim/2])`) of Qwen2 and others.
    public static func ropeNeoX(_ v: UnsafeMutablePointer<Float>, heads: Int, headDim: Int, ropeDim: Int,
                                cos: UnsafePointer<Float>, sin: UnsafePointer<Float>) {
        KernelSelection.table.ropeNeoX(v, heads, headDim, ropeDim, cos, sin)
    }
}

extension Dequantize {
    /// Fast dequantisation of one row of `count` values (a multiple of the block size).
    public static func row(_ type: GGMLType, _ src: UnsafeRawPointer, count: Int, into dst: UnsafeMutablePointer<Float>) {
        KernelSelection.table.dequantizeRow(type, src, count, dst)
    }
}

extension PackedMatrix {
    /// `y_c[r] = w[r] . x_c` for the rows of groups `groups` (16 rows each; the
    /// last group's padding rows are not written) and the columns `columns` of
    /// `batch`, where `y_c = output + c * stride` for the c-th of those columns.
    /// Each column's result is computed by the same operations in the same
    /// order whatever the other columns are: a token's result never depends on
    /// what it is batched with.
    public func multiply(_ batch: ActivationBatch, columns: Range<Int>, into output: UnsafeMutablePointer<Float>, stride: Int,
                         groups: Range<Int>) {
        KernelSelection.table.packedMultiply(self, batch, columns, output, stride, groups)
    }
}

extension ActivationBatch {
    /// Quantises `count` values (a multiple of 32) into column `c`: per block
    /// `dx = max |x| / 127` and `q = round(x / dx)`.
    public func quantize(_ x: UnsafePointer<Float>, count: Int, column c: Int) {
        KernelSelection.table.quantize(self, x, count, c)
    }
}
