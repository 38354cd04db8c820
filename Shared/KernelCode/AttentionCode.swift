import Swift
import Kernels
import SIMDSupport

/// Scaled dot-product attention. The decoders' KV caches hold f16 keys and
/// values (as llama.cpp keeps them): half the bytes of f32 to read per
/// query, which is what attention costs when many sequences decode together.
/// The sentence embedder attends over f32 ones.
enum AttentionCode {
    /// `out = softmax(q . K[j] * scale for j < length) . V` for one query over
    /// f32 keys and values (`stride` apart); `scores` holds `length` floats.
    static func attend(query q: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                              stride: Int, length: Int, headDim: Int, scale: Float,
                              scores: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        precondition(headDim % 16 == 0 && length >= 1)
        group(Tile1.self, q, keys, values, stride, length, headDim, scale, scores, out)
    }

    /// Decoding: the `count` query heads (at most `groupLimit`, `headDim`
    /// apart from `queries`) that share one KV head, each over the same
    /// `length` cached keys and values (key and value `j` at `keys + j * stride`
    /// and `values + j * stride`): `out_i = softmax(q_i . K * scale) . V`, at
    /// `out + i * headDim`. Every key and value is read once for the group.
    /// `headDim` is a multiple of 16; `scores` holds `count * length` floats.
    /// A query's result depends only on its own inputs, not on the others in
    /// the group.
    static func attendGroup(queries q: UnsafePointer<Float>, count: Int, keys: UnsafePointer<Float16>,
                                   values: UnsafePointer<Float16>, stride: Int, length: Int, headDim: Int, scale: Float,
                                   scores: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        precondition(count >= 1 && count <= Attention.groupLimit && headDim % 16 == 0 && length >= 1)
        switch count {
        case 1: group(Tile1.self, q, keys, values, stride, length, headDim, scale, scores, out)
        case 2: group(Tile2.self, q, keys, values, stride, length, headDim, scale, scores, out)
        case 3: group(Tile3.self, q, keys, values, stride, length, headDim, scale, scores, out)
        default: group(Tile4.self, q, keys, values, stride, length, headDim, scale, scores, out)
        }
    }

    @inline(__always)
    static func group<T: ColumnTile, E: CachedValue>(_ t: T.Type, _ q: UnsafePointer<Float>, _ keys: UnsafePointer<E>,
                                     _ values: UnsafePointer<E>, _ stride: Int, _ length: Int, _ headDim: Int,
                                     _ scale: Float, _ scores: UnsafeMutablePointer<Float>, _ out: UnsafeMutablePointer<Float>) {
        let n = T.count
        let q0 = q, q1 = q + min(1, n - 1) * headDim, q2 = q + min(2, n - 1) * headDim, q3 = q + min(3, n - 1) * headDim
        let s0 = scores, s1 = scores + min(1, n - 1) * length, s2 = scores + min(2, n - 1) * length, s3 = scores + min(3, n - 1) * length
        // Scores, four keys at a time, each summed over the head in one chain and
        // the four sums reduced together. (The loop over dimensions must stay a
        // loop: with the head unrolled, the compiler vectorises across keys.)
        var j = 0
        while j + 4 <= length {
            let k0 = keys + j * stride, k1 = k0 + stride, k2 = k1 + stride, k3 = k2 + stride
            var a00 = Vec(), a01 = Vec(), a02 = Vec(), a03 = Vec(), a10 = Vec(), a11 = Vec(), a12 = Vec(), a13 = Vec()
            var a20 = Vec(), a21 = Vec(), a22 = Vec(), a23 = Vec(), a30 = Vec(), a31 = Vec(), a32 = Vec(), a33 = Vec()
            var d = 0
            while d < headDim {
                let c0 = E.load16(k0 + d), c1 = E.load16(k1 + d), c2 = E.load16(k2 + d), c3 = E.load16(k3 + d)
                let x0 = loadVec(q0 + d)
                a00.addProduct(x0, c0); a01.addProduct(x0, c1); a02.addProduct(x0, c2); a03.addProduct(x0, c3)
                if n > 1 {
                    let x1 = loadVec(q1 + d)
                    a10.addProduct(x1, c0); a11.addProduct(x1, c1); a12.addProduct(x1, c2); a13.addProduct(x1, c3)
                }
                if n > 2 {
                    let x2 = loadVec(q2 + d)
                    a20.addProduct(x2, c0); a21.addProduct(x2, c1); a22.addProduct(x2, c2); a23.addProduct(x2, c3)
                }
                if n > 3 {
                    let x3 = loadVec(q3 + d)
                    a30.addProduct(x3, c0); a31.addProduct(x3, c1); a32.addProduct(x3, c2); a33.addProduct(x3, c3)
                }
                d += 16
            }
            @inline(__always) func store(_ s: UnsafeMutablePointer<Float>, _ v: SIMD4<Float>) {
                UnsafeMutableRawPointer(s + j).storeBytes(of: v * scale, as: SIMD4<Float>.self)
            }
            store(s0, horizontalSums(a00, a01, a02, a03))
            if n > 1 { store(s1, horizontalSums(a10, a11, a12, a13)) }
            if n > 2 { store(s2, horizontalSums(a20, a21, a22, a23)) }
            if n > 3 { store(s3, horizontalSums(a30, a31, a32, a33)) }
            j += 4
        }
        while j < length {
            let k = keys + j * stride
            var a0 = Vec(), a1 = Vec(), a2 = Vec(), a3 = Vec()
            var d = 0
            while d < headDim {
                let c = E.load16(k + d)
                a0.addProduct(loadVec(q0 + d), c)
                if n > 1 { a1.addProduct(loadVec(q1 + d), c) }
                if n > 2 { a2.addProduct(loadVec(q2 + d), c) }
                if n > 3 { a3.addProduct(loadVec(q3 + d), c) }
                d += 16
            }
            s0[j] = horizontalSum(a0) * scale
            if n > 1 { s1[j] = horizontalSum(a1) * scale }
            if n > 2 { s2[j] = horizontalSum(a2) * scale }
            if n > 3 { s3[j] = horizontalSum(a3) * scale }
            j += 1
        }
        for i in 0..<n {
            VectorCode.softmax(scores + i * length, count: length)
            // llama.cpp multiplies f16 values by the weights rounded to f16.
            if E.self == Float16.self { VectorCode.roundToHalves(scores + i * length, count: length) }
        }
        // Weighted values, 64 dimensions (then 16) of every query at a time.
        var d = 0
        while d < headDim {
            if d + 64 <= headDim {
                weightedValues(T.self, Chunk64.self, scores, rowStride: length, length: length, values: values + d, stride: stride,
                               into: out + d, outStride: headDim)
                d += 64
            } else {
                weightedValues(T.self, Chunk16.self, scores, rowStride: length, length: length, values: values + d, stride: stride,
                               into: out + d, outStride: headDim)
                d += 16
            }
        }
    }

    /// `out[r] = sum_j p[r][j] * v_j` for `T.count` rows of weights (`rowStride`
    /// apart) over `C.count` 16-value chunks of each value.
    @inline(__always)
    static func weightedValues<T: ColumnTile, C: ColumnTile, E: CachedValue>(_ t: T.Type, _ c: C.Type, _ p: UnsafePointer<Float>, rowStride: Int,
                                                             length: Int, values: UnsafePointer<E>, stride: Int,
                                                             into out: UnsafeMutablePointer<Float>, outStride: Int) {
        let n = T.count, w = C.count
        let p0 = p, p1 = p + min(1, n - 1) * rowStride, p2 = p + min(2, n - 1) * rowStride, p3 = p + min(3, n - 1) * rowStride
        var a00 = Vec(), a01 = Vec(), a02 = Vec(), a03 = Vec(), a10 = Vec(), a11 = Vec(), a12 = Vec(), a13 = Vec()
        var a20 = Vec(), a21 = Vec(), a22 = Vec(), a23 = Vec(), a30 = Vec(), a31 = Vec(), a32 = Vec(), a33 = Vec()
        for j in 0..<length {
            let v = values + j * stride
            let v0 = E.load16(v)
            let v1 = w > 1 ? E.load16(v + 16) : Vec(), v2 = w > 1 ? E.load16(v + 32) : Vec(), v3 = w > 1 ? E.load16(v + 48) : Vec()
            let b0 = Vec(repeating: p0[j])
            a00.addProduct(b0, v0)
            if w > 1 { a01.addProduct(b0, v1); a02.addProduct(b0, v2); a03.addProduct(b0, v3) }
            if n > 1 {
                let b1 = Vec(repeating: p1[j])
                a10.addProduct(b1, v0)
                if w > 1 { a11.addProduct(b1, v1); a12.addProduct(b1, v2); a13.addProduct(b1, v3) }
            }
            if n > 2 {
                let b2 = Vec(repeating: p2[j])
                a20.addProduct(b2, v0)
                if w > 1 { a21.addProduct(b2, v1); a22.addProduct(b2, v2); a23.addProduct(b2, v3) }
            }
            if n > 3 {
                let b3 = Vec(repeating: p3[j])
                a30.addProduct(b3, v0)
                if w > 1 { a31.addProduct(b3, v1); a32.addProduct(b3, v2); a33.addProduct(b3, v3) }
            }
        }
        @inline(__always)
        func store(_ r: Int, _ x0: Vec, _ x1: Vec, _ x2: Vec, _ x3: Vec) {
            let o = out + r * outStride
            storeVec(x0, o)
            if w > 1 { storeVec(x1, o + 16); storeVec(x2, o + 32); storeVec(x3, o + 48) }
        }
        store(0, a00, a01, a02, a03)
        if n > 1 { store(1, a10, a11, a12, a13) }
        if n > 2 { store(2, a20, a21, a22, a23) }
        if n > 3 { store(3, a30, a31, a32, a33) }
    }
}

extension AttentionCode {
    /// Causal attention for up to 32 consecutive queries of one head at once,
    /// as two small matrix products: scores = Q . K^T (the tiled kernel, six
    /// keys at a time widened to f32 as its rows), then out = softmax(scores) . V
    /// (four queries by 64 value dimensions at a time in registers). Query `i`
    /// sits at position `firstPosition + i` and sees the keys from
    /// `max(0, position - window + 1)` (0 without a window) to its own
    /// position. `headDim` must be a multiple of 64.
    static func attendTile(queries q: UnsafePointer<Float>, queryStride: Int, count: Int, firstPosition: Int,
                                  keys allKeys: UnsafePointer<Float16>, values allValues: UnsafePointer<Float16>, stride: Int,
                                  headDim: Int, scale: Float, window: Int? = nil, scratch: UnsafeMutablePointer<Float>,
                                  into out: UnsafeMutablePointer<Float>, outStride: Int) {
        precondition(headDim % 64 == 0 && count > 0 && count <= Attention.queryTile)
        func firstVisible(_ position: Int) -> Int { window.map { max(0, position - $0 + 1) } ?? 0 }
        // Keys before the first query's window are seen by none of the tile.
        let firstKey = firstVisible(firstPosition)
        let keys = allKeys + firstKey * stride, values = allValues + firstKey * stride
        let packed = scratch
        let tile = scratch + Attention.queryTile * headDim
        let scores = tile + MatMul.rowTile * headDim
        let keyCount = firstPosition + count - firstKey
        MatMulCode.pack(q, stride: queryStride, tokens: count, columns: headDim, into: packed, tiles: 0..<1)

        // scores[i * keyCount + j] = q_i . k_(firstKey + j)
        var j = 0
        while j < keyCount {
            let rows = min(MatMul.rowTile, keyCount - j)
            // Six keys as f32 rows (zero past the last key): the kernel reads six rows.
            for r in 0..<MatMul.rowTile {
                var e = 0
                while e < headDim {
                    storeVec(r < rows ? loadHalves(keys + (j + r) * stride + e) : Vec(), tile + r * headDim + e)
                    e += 16
                }
            }
            MatMulCode.kernel6x32(tile, rowStride: headDim, columns: headDim, packed, y: scores, yStride: keyCount,
                              firstRow: j, rowCount: rows, firstToken: 0, tokenCount: count)
            j += rows
        }
        // Softmax of each query's visible keys; the others get weight 0.
        let s = Vec(repeating: scale)
        for i in 0..<count {
            let row = scores + i * keyCount
            let position = firstPosition + i
            let lo = firstVisible(position) - firstKey, end = position + 1 - firstKey
            var k = lo
            while k + 16 <= end { storeVec(loadVec(row + k) * s, row + k); k += 16 }
            while k < end { row[k] *= scale; k += 1 }
            VectorCode.softmax(row + lo, count: end - lo)
            VectorCode.roundToHalves(row + lo, count: end - lo)
            for z in 0..<lo { row[z] = 0 }
            for z in end..<keyCount { row[z] = 0 }
        }
        // out_i = sum_j p_ij v_j, four queries and 64 value dimensions at a time.
        var i = 0
        while i < count {
            let n = min(4, count - i)
            let length = firstPosition + i + n - firstKey
            for chunk in Swift.stride(from: 0, to: headDim, by: 64) {
                let p = scores + i * keyCount, v = values + chunk, o = out + i * outStride + chunk
                switch n {
                case 1: weightedValues(Tile1.self, Chunk64.self, p, rowStride: keyCount, length: length, values: v, stride: stride, into: o, outStride: outStride)
                case 2: weightedValues(Tile2.self, Chunk64.self, p, rowStride: keyCount, length: length, values: v, stride: stride, into: o, outStride: outStride)
                case 3: weightedValues(Tile3.self, Chunk64.self, p, rowStride: keyCount, length: length, values: v, stride: stride, into: o, outStride: outStride)
                default: weightedValues(Tile4.self, Chunk64.self, p, rowStride: keyCount, length: length, values: v, stride: stride, into: o, outStride: outStride)
                }
            }
            i += n
        }
    }
}

/// Sixteen f16 values widened to f32.
@inline(__always)
func loadHalves(_ p: UnsafePointer<Float16>) -> Vec {
    toFloat(UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float16>.self))
}

/// What attention reads keys and values as.
protocol CachedValue {
    /// Sixteen values from `p`, as f32.
    static func load16(_ p: UnsafePointer<Self>) -> Vec
}

extension Float16: CachedValue {
    @inline(__always) static func load16(_ p: UnsafePointer<Float16>) -> Vec { loadHalves(p) }
}

extension Float: CachedValue {
    @inline(__always) static func load16(_ p: UnsafePointer<Float>) -> Vec { loadVec(p) }
}

/// 16-value chunks per step of `Attention.weightedValues`.
enum Chunk16: ColumnTile { static let count = 1 }
enum Chunk64: ColumnTile { static let count = 4 }
